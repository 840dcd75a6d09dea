"""The task graph and the ``haz query`` filter expressions.

Spec coverage:
* DAG-001..014, DAG-016 — :func:`build_graph` merges, resolves, derives edges, reports all.
* REF-001..008 — ``deps``/``weakDeps`` are resolved against the workspace's tasks.
* CFG-040, DAG-011 — :func:`partial_diagnostics`: graph errors of what a failed load parsed.
* EXEC-001 — :meth:`TaskGraph.run_set`.
* ``haz query`` (§5) — :mod:`hazremote.graph.filters`.
Out of scope: YAML loading (``hazremote.config``) and scheduling (``hazremote.execute``).
"""

from hazremote.graph._graph import TaskGraph, build_graph
from hazremote.graph._partial import partial_diagnostics
from hazremote.graph.filters import Filter, parse_filter

__all__ = ["Filter", "TaskGraph", "build_graph", "parse_filter", "partial_diagnostics"]
