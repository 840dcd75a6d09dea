"""``haz check [--all|--workspace]`` — validate configuration and graph (SPEC §5).

Loading the workspace validates every file and the whole graph (CFG-040, DAG-011); the flags
only choose which tasks are counted: the bearing project's (default, also ``--all``), or
every task (``--workspace``, and the default when no project bears the working directory).
"""

from __future__ import annotations

import argparse

from hazremote.cli.context import open_workspace


def run(args: argparse.Namespace) -> int:
    context = open_workspace(args)
    count = len(context.graph.tasks) if args.workspace else len(context.bearing_tasks())
    print(f"{count} task(s) validated.")
    return 0
