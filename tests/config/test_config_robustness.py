"""Whatever a haz.yml holds, loading either succeeds or raises ConfigError (CFG-040)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hazremote.config import load_workspace
from hazremote.errors import ConfigError

# Keys the schema knows, plus a few it does not, so generated documents reach deep validators.
_KEYS = st.sampled_from(
    [
        "name",
        "tags",
        "tasks",
        "build",
        "command",
        "shell",
        "inputs",
        "outputs",
        "deps",
        "weakDeps",
        "mutex",
        "mode",
        "env",
        "from_host",
        "pass_through",
        "override",
        "cache",
        "remote",
        "platform",
        "timeout",
        "bash",
        "$schema",
        "PATH",
        "bogus",
    ]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["~:build", "lib:test", "src/**", "!x", "../up", "10m", "off", "", "db"]),
    st.text(max_size=12),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=5)),
    max_leaves=25,
)


def _load(haz_yml: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        (root / ".haz").mkdir()
        (root / ".haz" / "workspace.yml").write_text("projects: [app]\n")
        (root / "app").mkdir()
        (root / "app" / "haz.yml").write_bytes(haz_yml)
        try:
            workspace = load_workspace(root)
        except ConfigError as error:
            diagnostics = error.diagnostics
        else:
            assert len(workspace.projects) == 1
            return
    assert diagnostics
    assert all(d.file in ("app/haz.yml", ".haz/workspace.yml") for d in diagnostics)


@settings(max_examples=150)
@given(document=st.dictionaries(_KEYS, _VALUES, max_size=4))
def test_arbitrary_documents_load_or_raise_config_error(document: dict[str, object]) -> None:
    """CFG-040: no document shape makes the loader crash with anything but ConfigError."""
    _load(yaml.safe_dump({"tasks": {"build": document}, **document}).encode())


@settings(max_examples=100)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_load_or_raise_config_error(data: bytes) -> None:
    """CFG-040: malformed YAML and invalid encodings become diagnostics, never crashes."""
    _load(data)
