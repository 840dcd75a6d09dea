"""``haz check [--all|--workspace]`` — validate configuration and graph (SPEC §5).

Loading the workspace validates every file and the whole graph (CFG-040, DAG-011); the flags
only choose which tasks are counted: the bearing project's (default, also ``--all``), or
every task (``--workspace``, and the default when no project bears the working directory).

Spec coverage:
* DAG-016 — warnings (overlapping output patterns of two tasks …) concerning the counted tasks
  go to stderr, one line each; warnings alone still exit 0.
"""

from __future__ import annotations

import argparse

from hazremote.cli.context import open_workspace, print_warnings


def run(args: argparse.Namespace) -> int:
    context = open_workspace(args)
    counted = tuple(context.graph.tasks) if args.workspace else context.bearing_tasks()
    print_warnings(context.graph.warnings_for(counted))
    print(f"{len(counted)} task(s) validated.")
    return 0
