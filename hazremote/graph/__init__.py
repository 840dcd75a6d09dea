"""The task graph (SPEC §2) and the ``haz query`` filter expressions (SPEC §5).

Spec coverage:
* DAG-001..016 — :func:`build_graph` merges overlays, resolves ``deps``/``weakDeps``
  (REF-001..008), derives producer edges and reports every graph error together.
* CFG-040 / DAG-011 — :func:`partial_diagnostics`: the graph errors of what a failed load
  still parsed, to report with the configuration errors.
* EXEC-001 — :meth:`TaskGraph.run_set`.
* QRY — :mod:`hazremote.graph.filters`.
Out of scope: YAML loading (``hazremote.config``) and scheduling (``hazremote.execute``).
"""

from hazremote.graph._graph import TaskGraph, build_graph
from hazremote.graph._partial import partial_diagnostics
from hazremote.graph.filters import Filter, parse_filter

__all__ = ["Filter", "TaskGraph", "build_graph", "parse_filter", "partial_diagnostics"]
