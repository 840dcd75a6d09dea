"""``haz graph [TARGET...] --format dot|mermaid|json`` — render the task graph (SPEC §5).

Edges point from a predecessor to the task that needs it. Hard edges (DAG-008) are solid,
soft edges (DAG-009) dashed; producer edges (DAG-013) appear in JSON only, since they do not
order anything. With targets, the graph is restricted to their run set (EXEC-001).
"""

from __future__ import annotations

import argparse
import json
import sys

from hazremote.cli.context import open_workspace, resolve_targets
from hazremote.domain.refs import TaskId
from hazremote.graph import TaskGraph

Edge = tuple[TaskId, TaskId, str]


def _edges(graph: TaskGraph, nodes: set[TaskId]) -> list[Edge]:
    edges: list[Edge] = []
    for task in sorted(nodes):
        edges.extend((p, task, "hard") for p in graph.hard.get(task, ()) if p in nodes)
        edges.extend((p, task, "soft") for p in graph.soft.get(task, ()) if p in nodes)
    return edges


def render_dot(nodes: list[TaskId], edges: list[Edge]) -> str:
    lines = ["digraph haz {", "  rankdir=LR;", '  node [shape=box, fontname="monospace"];']
    lines += [f'  "{n}";' for n in nodes]
    for src, dst, kind in edges:
        style = "" if kind == "hard" else " [style=dashed]"
        lines.append(f'  "{src}" -> "{dst}"{style};')
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_mermaid(nodes: list[TaskId], edges: list[Edge]) -> str:
    ids = {n: f"n{i}" for i, n in enumerate(nodes)}
    lines = ["graph LR"]
    lines += [f'  {ids[n]}["{n}"]' for n in nodes]
    for src, dst, kind in edges:
        arrow = "-->" if kind == "hard" else "-.->"
        lines.append(f"  {ids[src]} {arrow} {ids[dst]}")
    return "\n".join(lines) + "\n"


def render_json(graph: TaskGraph, nodes: list[TaskId], edges: list[Edge]) -> str:
    keep = set(nodes)
    producer_edges = [
        {"from": str(p), "to": str(c), "kind": "producer"}
        for c in nodes
        for p in graph.producers.get(c, ())
        if p in keep and p != c
    ]
    payload = {
        "nodes": [{"id": str(n), "project": n.project, "task": n.task} for n in nodes],
        "edges": [{"from": str(s), "to": str(d), "kind": k} for s, d, k in edges] + producer_edges,
    }
    return json.dumps(payload, indent=2) + "\n"


def run(args: argparse.Namespace) -> int:
    context = open_workspace(args, snapshot=True)
    graph = context.graph
    if args.targets:
        nodes = list(graph.run_set(resolve_targets(context, args.targets)))
    else:
        nodes = list(graph.tasks)
    edges = _edges(graph, set(nodes))
    if args.format == "dot":
        sys.stdout.write(render_dot(nodes, edges))
    elif args.format == "mermaid":
        sys.stdout.write(render_mermaid(nodes, edges))
    else:
        sys.stdout.write(render_json(graph, nodes, edges))
    return 0
