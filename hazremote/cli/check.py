"""``haz check [--all|--workspace]`` — validate configuration and graph.

Loading validates every file and the whole graph; the flags only choose which tasks are
counted: the bearing project's (default, ``--all``) or every task (``--workspace``).

Spec coverage:
* CFG-040, DAG-011 — every configuration and graph error, reported together.
* DAG-016 — warnings about the counted tasks go to stderr, one line each; they still exit 0.
* PATH-001..016 — an input pattern matching no file is a warning naming task and pattern.
"""

from __future__ import annotations

import argparse
import sys
import time

from hazremote.cli.context import WorkspaceContext, open_workspace, print_warnings
from hazremote.domain.refs import TaskId


def run(args: argparse.Namespace) -> int:
    context = open_workspace(args)
    task_ids = tuple(context.graph.tasks) if args.workspace else context.bearing_tasks()
    print_warnings(context.graph.warnings_for(task_ids))
    _print_input_warnings(context, task_ids)
    print(f"{len(task_ids)} task(s) validated.")
    return 0


def _print_input_warnings(context: WorkspaceContext, task_ids: tuple[TaskId, ...]) -> None:
    """PATH: warn about input patterns that contribute no file (nothing is written)."""
    from hazremote.keys.fs import OsFilesystem
    from hazremote.keys.hashing import FileHasher
    from hazremote.keys.resolve import InputResolver, unmatched_warnings
    from hazremote.keys.statcache import StatCache

    graph = context.graph
    tasks = [graph.tasks[t] for t in task_ids if graph.tasks[t].inputs]
    if not tasks:
        return
    hash_name = context.workspace.settings.cache.hash
    fs = OsFilesystem()
    hasher = FileHasher(fs=fs, hash_name=hash_name, workers=1)
    try:
        # an empty stat cache: matching needs no digests, and `haz check` writes nothing
        resolver = InputResolver(
            root=str(context.root),
            fs=fs,
            stat_cache=StatCache(hash_name=hash_name, clock=time.time_ns),
            hasher=hasher,
        )
        found = resolver.check_unmatched(tasks)
    finally:
        hasher.close()
    for warning in unmatched_warnings(found, tasks=graph.tasks, producers=graph.producers):
        print(f"haz: warning: {warning}", file=sys.stderr)
