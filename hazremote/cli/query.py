"""``haz query`` — list tasks whose project, task name and tags match filter expressions.

Spec coverage:
* ``haz query`` (§5) — ``!``, ``&``, ``|`` and parentheses; ``--format plain|json``.
"""

from __future__ import annotations

import argparse
import json
import sys

from hazremote.cli.context import open_workspace
from hazremote.graph.filters import parse_filter


def run(args: argparse.Namespace) -> int:
    filters = [
        (field, parse_filter(expr))
        for field, expr in (("project", args.projects), ("task", args.tasks), ("tags", args.tags))
        if expr is not None
    ]
    context = open_workspace(args, snapshot=True)
    graph = context.graph
    rows = []
    for task_id, task in graph.tasks.items():
        tags = graph.tags.get(task_id.project, ())
        subjects = {"project": (task_id.project,), "task": (task_id.task,), "tags": tags}
        if all(f.matches(subjects[field]) for field, f in filters):
            rows.append((task_id, task, tags))
    if args.format == "json":
        payload = [
            {
                "project": task_id.project,
                "task": task_id.task,
                "id": str(task_id),
                "tags": list(tags),
                "deps": [str(d) for d in graph.hard.get(task_id, ())],
                "weakDeps": [str(d) for d in graph.soft.get(task_id, ())],
                "inputs": [p.text for p in task.inputs],
                "outputs": [p.text for p in task.outputs],
            }
            for task_id, task, tags in rows
        ]
        json.dump(payload, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for task_id, _, _ in rows:
            print(task_id)
    return 0
