"""Cycle detection over the union of hard, soft and producer edges.

Strongly connected components by an iterative Tarjan's algorithm, so a long chain cannot
exhaust the interpreter stack.

Spec coverage:
* DAG-014 — each component of two or more tasks is one cycle, in canonical order; self edges aren't.
Out of scope: turning components into diagnostics (the builder does).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from hazremote.domain.refs import TaskId

__all__ = ["cyclic_components"]


def cyclic_components(
    nodes: Iterable[TaskId], edges: Mapping[TaskId, Iterable[TaskId]]
) -> list[tuple[TaskId, ...]]:
    """Strongly connected components of two or more nodes, each sorted, in canonical order.

    Args:
        nodes: Every node, in canonical order (the traversal order, for deterministic output).
        edges: Node → successors; successors missing from ``nodes`` are ignored.
    """
    order = list(nodes)
    known = set(order)
    index: dict[TaskId, int] = {}
    low: dict[TaskId, int] = {}
    on_stack: set[TaskId] = set()
    stack: list[TaskId] = []
    found: list[tuple[TaskId, ...]] = []
    counter = 0
    for root in order:
        if root in index:
            continue
        # Each frame: the node and an iterator over its remaining successors.
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        frames = [(root, iter(edges.get(root, ())))]
        while frames:
            node, successors = frames[-1]
            advanced = False
            for succ in successors:
                if succ not in known or succ == node:
                    continue
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    frames.append((succ, iter(edges.get(succ, ()))))
                    advanced = True
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            if advanced:
                continue
            frames.pop()
            if frames:
                parent = frames[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[TaskId] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(tuple(sorted(component)))
    found.sort()
    return found
