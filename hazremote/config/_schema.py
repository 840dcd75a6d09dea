"""A small schema-validation layer over PyYAML node trees.

Every configuration file is *composed* (not constructed) so that each key and value keeps its
line; the helpers check shapes and types, record a :class:`~hazremote.errors.Diagnostic` for
each problem and keep going.

Spec coverage:
* CFG-040 — file, key path and line; unknown keys list the allowed ones and suggest the closest.
* Configuration files (§1) — YAML safe loading only; ``$schema`` is allowed and ignored.
Out of scope: what the keys mean (``_tasks``, ``_settings``, ``_loader``).

Type conventions (decided here, once, for every file):
* ``null`` for an optional key means the key is absent.
* Where a *string* is expected, any non-null scalar is taken exactly as written:
  ``PORT: 8080`` is ``"8080"``, ``mode: off`` is ``"off"``.
* Booleans and integers are strict: ``cache: "yes"`` and ``default: "4"`` are errors.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from hazremote.errors import Diagnostic

__all__ = [
    "NULL_TAG",
    "Checker",
    "compose",
    "describe",
]

try:  # libyaml's parser and composer are ~10x faster than the pure-Python ones
    _BASE_LOADER: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _BASE_LOADER = yaml.SafeLoader

_STR_TAG = "tag:yaml.org,2002:str"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"
# Tag of each plain scalar spelling seen so far. The implicit resolvers depend only on the
# text, and configs repeat the same words (node, src/**, ~:build) thousands of times, so this
# turns the resolver's regex scan, the dominant Python cost of composing, into a dict lookup.
_PLAIN_TAGS: dict[str, str] = {}
_PLAIN_TAGS_MAX = 65536


class _Loader(_BASE_LOADER):  # type: ignore[valid-type,misc]
    """The safe loader with a memoised resolver (no path resolvers are ever registered)."""

    def resolve(self, kind: type[Node], value: str, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode:
            if not implicit[0]:
                return _STR_TAG
            tag = _PLAIN_TAGS.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)
                if len(_PLAIN_TAGS) < _PLAIN_TAGS_MAX:
                    _PLAIN_TAGS[value] = tag
            return tag
        return _SEQ_TAG if kind is SequenceNode else _MAP_TAG


NULL_TAG = "tag:yaml.org,2002:null"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_SCHEMA_KEY = "$schema"

# Used only for its scalar conversions (YAML 1.1 booleans, ints such as 0x10 or 1_000).
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


def compose(data: bytes) -> Node | yaml.YAMLError | None:
    """Compose one YAML document; return the error instead of raising it."""
    try:
        return yaml.compose(data, Loader=_Loader)
    except yaml.YAMLError as exc:
        return exc


def describe(node: Node) -> str:
    """A short phrase naming what a node holds, for 'expected X, got Y' messages."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    tag = node.tag
    if tag == NULL_TAG:
        return "null"
    if tag == _BOOL_TAG:
        return f"the boolean {node.value}"
    if tag in (_INT_TAG, _FLOAT_TAG):
        return f"the number {node.value}"
    return f"the string {node.value!r}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _line(node: Node | None) -> int | None:
    return None if node is None else node.start_mark.line + 1


class Checker:
    """Validation helpers for one file; diagnostics accumulate in :attr:`diagnostics`.

    Every helper returns ``None`` after recording a diagnostic when the node is unusable, so
    callers simply skip the value and carry on.
    """

    __slots__ = ("diagnostics", "file")

    def __init__(self, file: str, diagnostics: list[Diagnostic]) -> None:
        self.file = file
        self.diagnostics = diagnostics

    def error(self, path: str, node: Node | None, message: str) -> None:
        self.diagnostics.append(
            Diagnostic(file=self.file, key_path=path, line=_line(node), message=message)
        )

    def error_at_line(self, path: str, line: int | None, message: str) -> None:
        self.diagnostics.append(
            Diagnostic(file=self.file, key_path=path, line=line, message=message)
        )

    # -- containers ---------------------------------------------------------------------------

    def _pairs(
        self, node: MappingNode, path: str, active: frozenset[int] = frozenset()
    ) -> list[tuple[str, Node, Node]]:
        """Key/value pairs of a mapping: string keys, no duplicates, merge keys applied.

        YAML merge keys (``<<: *base``) are honoured as the safe loader does: the mapping's own
        keys win over merged ones, and earlier merge sources win over later ones.
        """
        out: list[tuple[str, Node, Node]] = []
        seen: dict[str, Node] = {}
        merges: list[tuple[Node, Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append((key_node, value_node))
                continue
            if not isinstance(key_node, ScalarNode) or key_node.tag == NULL_TAG:
                self.error(path, key_node, f"keys must be strings, got {describe(key_node)}")
                continue
            key = key_node.value
            first = seen.get(key)
            if first is not None:
                self.error(
                    _join(path, key),
                    key_node,
                    f"duplicate key {key!r} (first written on line {_line(first)})",
                )
                continue
            seen[key] = key_node
            out.append((key, key_node, value_node))
        if merges:
            active = active | {id(node)}
            for key_node, source in merges:
                sources = source.value if isinstance(source, SequenceNode) else [source]
                for src in sources:
                    if not isinstance(src, MappingNode) or id(src) in active:
                        self.error(
                            path,
                            key_node,
                            "a merge key ('<<') takes a mapping or a list of mappings",
                        )
                        continue
                    for key, merged_key, merged_value in self._pairs(src, path, active):
                        if key not in seen:
                            seen[key] = merged_key
                            out.append((key, merged_key, merged_value))
        return out

    def fields(
        self, node: Node, path: str, allowed: frozenset[str], what: str
    ) -> dict[str, tuple[Node, Node]] | None:
        """A fixed-key mapping: ``{key: (key node, value node)}`` with null values dropped.

        Unknown keys are reported with the allowed keys and the closest match; ``$schema`` is
        ignored.
        """
        if not isinstance(node, MappingNode):
            self.error(path, node, f"{what} must be a mapping, got {describe(node)}")
            return None
        out: dict[str, tuple[Node, Node]] = {}
        for key, key_node, value_node in self._pairs(node, path):
            if key in allowed:
                if value_node.tag != NULL_TAG:
                    out[key] = (key_node, value_node)
            elif key != _SCHEMA_KEY:
                self.error(_join(path, key), key_node, _unknown_key_message(key, allowed))
        return out

    def entries(self, node: Node, path: str, what: str) -> list[tuple[str, Node, Node]] | None:
        """A free-key mapping (task names, env overrides, platform properties)."""
        if not isinstance(node, MappingNode):
            self.error(path, node, f"{what} must be a mapping, got {describe(node)}")
            return None
        return self._pairs(node, path)

    # -- scalars ------------------------------------------------------------------------------

    def text(self, node: Node, path: str, what: str) -> str | None:
        """Any non-null scalar, as written (see the module docstring)."""
        if isinstance(node, ScalarNode) and node.tag != NULL_TAG:
            value: str = node.value
            return value
        self.error(path, node, f"{what} must be a string, got {describe(node)}")
        return None

    def texts(self, node: Node, path: str, what: str) -> list[tuple[str, Node, int]]:
        """A list of strings as ``(text, node, index)``; bad items are reported and dropped.

        The item's key path is ``f"{path}[{index}]"``; callers build it only when they need it
        (this is the hottest helper of a load).
        """
        if not isinstance(node, SequenceNode):
            self.error(path, node, f"{what} must be a list, got {describe(node)}")
            return []
        out: list[tuple[str, Node, int]] = []
        for index, item in enumerate(node.value):
            if item.tag != NULL_TAG and isinstance(item, ScalarNode):
                out.append((item.value, item, index))
            else:
                self.error(
                    f"{path}[{index}]", item, f"{what} items must be strings, got {describe(item)}"
                )
        return out

    def boolean(self, node: Node, path: str) -> bool | None:
        if isinstance(node, ScalarNode) and node.tag == _BOOL_TAG:
            return _CONSTRUCTOR.construct_yaml_bool(node)
        self.error(path, node, f"expected true or false, got {describe(node)}")
        return None

    def integer(self, node: Node, path: str, *, minimum: int) -> int | None:
        if isinstance(node, ScalarNode) and node.tag == _INT_TAG:
            value = _CONSTRUCTOR.construct_yaml_int(node)
            if value >= minimum:
                return value
            self.error(path, node, f"must be an integer >= {minimum}, got {value}")
            return None
        self.error(path, node, f"expected an integer >= {minimum}, got {describe(node)}")
        return None

    def choice(self, node: Node, path: str, choices: Iterable[str]) -> str | None:
        """One of a fixed set of words (taken as written, so ``off`` stays ``off``)."""
        options = tuple(choices)
        if isinstance(node, ScalarNode) and node.tag != NULL_TAG and node.value in options:
            word: str = node.value
            return word
        message = f"expected one of {', '.join(options)}; got {describe(node)}"
        if isinstance(node, ScalarNode):
            close = difflib.get_close_matches(node.value, options, n=1, cutoff=0.6)
            if close:
                message += f"; did you mean {close[0]!r}?"
        self.error(path, node, message)
        return None

    def scalar_for_unit(self, node: Node, path: str, what: str) -> str | None:
        """The text of a duration or size (numbers allowed, booleans not)."""
        if isinstance(node, ScalarNode) and node.tag not in (NULL_TAG, _BOOL_TAG):
            text: str = node.value
            return text
        self.error(path, node, f"expected {what}, got {describe(node)}")
        return None


def _unknown_key_message(key: str, allowed: frozenset[str]) -> str:
    message = f"unknown key {key!r}"
    by_lower = {name.lower(): name for name in allowed}
    close = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.6)
    if close:
        message += f"; did you mean {by_lower[close[0]]!r}?"
    return f"{message} (allowed keys: {', '.join(sorted(allowed))})"
