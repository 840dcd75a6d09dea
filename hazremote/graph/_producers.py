"""An index of output patterns by literal prefix, for producer edges.

Spec coverage:
* DAG-013 — an output pattern of P and an input pattern of C overlap when both are literal and
  equal, or when one pattern's literal prefix is a segment prefix of the other's
  (:func:`hazremote.domain.patterns.patterns_overlap`). The index answers "which tasks have an
  output overlapping this input" in O(depth + matches) instead of comparing every pair.
Out of scope: negated inputs (the caller skips them) and run-time glob overlaps (EXEC-020).
"""

from __future__ import annotations

from collections.abc import Iterator

from hazremote.domain.patterns import PathPattern
from hazremote.domain.refs import TaskId

__all__ = ["OutputIndex"]


class _Node:
    """One segment of a literal prefix; ``owners`` declared a pattern whose prefix ends here."""

    __slots__ = ("children", "owners")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.owners: list[TaskId] = []

    def descend(self, segments: list[str]) -> Iterator[_Node]:
        """Yield this node and each node along ``segments`` that exists, root first."""
        node = self
        yield node
        for segment in segments:
            child = node.children.get(segment)
            if child is None:
                return
            node = child
            yield node

    def below(self) -> Iterator[_Node]:
        """Every strict descendant of this node."""
        stack = list(self.children.values())
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children.values())


def _segments(prefix: str) -> list[str]:
    return prefix[1:].split("/") if prefix != "/" else []


class OutputIndex:
    """Output patterns of every task, keyed by their literal prefixes.

    Two tries share the segment structure: one for glob outputs (which overlap any input whose
    prefix is an ancestor or a descendant of theirs) and one for literal outputs (which
    overlap a glob input the same way, but a literal input only when the paths are equal).
    """

    __slots__ = ("_globs", "_literal_paths", "_literals")

    def __init__(self) -> None:
        self._globs = _Node()
        self._literals = _Node()
        self._literal_paths: dict[str, list[TaskId]] = {}

    def add(self, pattern: PathPattern, owner: TaskId) -> None:
        """Record that ``owner`` declares the output ``pattern``."""
        trie = self._globs if pattern.glob else self._literals
        node = trie
        for segment in _segments(pattern.literal_prefix):
            child = node.children.get(segment)
            if child is None:
                child = node.children[segment] = _Node()
            node = child
        node.owners.append(owner)
        if not pattern.glob:
            self._literal_paths.setdefault(pattern.absolute, []).append(owner)

    def overlapping(self, pattern: PathPattern) -> set[TaskId]:
        """Owners of every output that overlaps the (non-negated) input ``pattern``."""
        segments = _segments(pattern.literal_prefix)
        found: set[TaskId] = set()
        tries = (self._globs, self._literals) if pattern.glob else (self._globs,)
        for trie in tries:
            path = list(trie.descend(segments))
            for node in path:  # outputs whose prefix is a prefix of the input's
                found.update(node.owners)
            if len(path) == len(segments) + 1:  # outputs whose prefix extends the input's
                for node in path[-1].below():
                    found.update(node.owners)
        if not pattern.glob:
            found.update(self._literal_paths.get(pattern.absolute, ()))
        return found
