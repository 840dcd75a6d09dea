"""Environment rules: what is hashed (CACHE-008) and what the process gets (EXEC-008)."""

from __future__ import annotations

from hazremote.domain.model import EnvSpec, frozen_map
from hazremote.keys.components import EnvEntry, EnvSource
from hazremote.keys.resolve import effective_process_env, resolve_env

HOST = {"PATH": "/usr/bin", "HOME": "/home/u", "NODE_VERSION": "20", "SECRET": "x", "EMPTY": ""}


def test_from_host_set_and_unset_names_are_hashed_sorted_by_name() -> None:
    """CACHE-008: set names carry their value, unset names the unset marker; sorted by name."""
    spec = EnvSpec(from_host=("NODE_VERSION", "MISSING", "EMPTY"))
    assert resolve_env(spec, HOST) == (
        EnvEntry(name="EMPTY", source=EnvSource.SET, value=""),
        EnvEntry(name="MISSING", source=EnvSource.UNSET, value=None),
        EnvEntry(name="NODE_VERSION", source=EnvSource.SET, value="20"),
    )


def test_override_shadows_from_host_of_the_same_name() -> None:
    """CACHE-008: an override shadows a ``from_host`` entry of the same name."""
    spec = EnvSpec(from_host=("NODE_VERSION",), override=frozen_map({"NODE_VERSION": "22"}))
    assert resolve_env(spec, HOST) == (
        EnvEntry(name="NODE_VERSION", source=EnvSource.OVERRIDE, value="22"),
    )


def test_pass_through_names_are_not_hashed() -> None:
    """CACHE-008: ``pass_through`` names are NOT in the key."""
    spec = EnvSpec(pass_through=("PATH", "HOME"), override=frozen_map({"A": "1"}))
    assert resolve_env(spec, HOST) == (EnvEntry(name="A", source=EnvSource.OVERRIDE, value="1"),)


def test_a_name_in_both_from_host_and_pass_through_is_hashed() -> None:
    """CACHE-008 (decision): ``from_host`` wins for hashing when a name is listed in both."""
    spec = EnvSpec(from_host=("PATH",), pass_through=("PATH",))
    assert resolve_env(spec, HOST) == (
        EnvEntry(name="PATH", source=EnvSource.SET, value="/usr/bin"),
    )


def test_host_values_outside_the_spec_never_matter() -> None:
    """CACHE-008: changing an unlisted host variable leaves the hashed env unchanged."""
    spec = EnvSpec(from_host=("NODE_VERSION",))
    assert resolve_env(spec, HOST) == resolve_env(spec, {**HOST, "SECRET": "other", "X": "1"})


def test_process_env_is_pass_through_and_present_from_host_plus_overrides_only() -> None:
    """EXEC-008: exactly pass_through + present from_host + overrides (override wins)."""
    spec = EnvSpec(
        from_host=("NODE_VERSION", "MISSING"),
        pass_through=("PATH", "ALSO_MISSING"),
        override=frozen_map({"NODE_VERSION": "22", "MODE": "release"}),
    )
    assert effective_process_env(spec, HOST) == {
        "PATH": "/usr/bin",
        "NODE_VERSION": "22",
        "MODE": "release",
    }


def test_process_env_of_an_empty_spec_is_empty() -> None:
    """EXEC-008: nothing else from the host leaks into the process."""
    assert effective_process_env(EnvSpec(), HOST) == {}
