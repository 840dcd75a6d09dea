"""An index of output patterns by literal prefix, for producer edges.

Spec coverage:
* DAG-013 — which tasks have an output overlapping an input, without comparing every pair.
* DAG-016 — :meth:`OutputIndex.overlapping_outputs`: the same relation between two outputs.
Out of scope: negated inputs (the caller skips them) and run-time overlaps (EXEC-020).
"""

from __future__ import annotations

from collections.abc import Iterator

from hazremote.domain.patterns import PathPattern
from hazremote.domain.refs import TaskId

__all__ = ["OutputIndex"]


_Owned = tuple[TaskId, PathPattern]


class _Node:
    """One segment of a literal prefix; ``owners`` declared a pattern whose prefix ends here."""

    __slots__ = ("children", "owners")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.owners: list[_Owned] = []

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
        self._literal_paths: dict[str, list[_Owned]] = {}

    def add(self, pattern: PathPattern, owner: TaskId) -> None:
        """Record that ``owner`` declares the output ``pattern``."""
        trie = self._globs if pattern.glob else self._literals
        node = trie
        for segment in _segments(pattern.literal_prefix):
            child = node.children.get(segment)
            if child is None:
                child = node.children[segment] = _Node()
            node = child
        node.owners.append((owner, pattern))
        if not pattern.glob:
            self._literal_paths.setdefault(pattern.absolute, []).append((owner, pattern))

    def overlapping(self, pattern: PathPattern) -> set[TaskId]:
        """Owners of every output that overlaps the (non-negated) input ``pattern``."""
        return {owner for owner, _ in self.overlapping_outputs(pattern)}

    def overlapping_outputs(self, pattern: PathPattern) -> Iterator[_Owned]:
        """Every (owner, output pattern) overlapping ``pattern`` (an input or an output), each
        once per time it was added."""
        segments = _segments(pattern.literal_prefix)
        tries = (self._globs, self._literals) if pattern.glob else (self._globs,)
        for trie in tries:
            path = list(trie.descend(segments))
            for node in path:  # outputs whose prefix is a prefix of the pattern's
                yield from node.owners
            if len(path) == len(segments) + 1:  # outputs whose prefix extends the pattern's
                for node in path[-1].below():
                    yield from node.owners
        if not pattern.glob:
            yield from self._literal_paths.get(pattern.absolute, ())
