"""Admission of remote actions: a client-derived key is accepted, a forged one and hostile
actions are refused before anything is queued (RX-002, SEC-001)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from cache_service.errors import InvalidRequestError
from cache_service.scheduling.admission import AdmissionLimits, admit
from hazremote.cache.manifest import RecordedKeyComponents
from hazremote.domain.digest import digest_bytes
from hazremote.domain.model import CommandAction, HashName, ShellAction
from hazremote.domain.refs import TaskId
from hazremote.keys import (
    EnvEntry,
    EnvSource,
    InputFile,
    KeyComponents,
    PredecessorStreams,
    frame_key,
    outputs_digest,
)
from hazremote.remote.action import ActionInput, PredecessorOutputs, RemoteAction

H = HashName.BLAKE3


def client_action() -> RemoteAction:
    """An action built the way the client builds one: components → key → manifest JSON."""
    src = digest_bytes(H, b"int a;\n")
    gen = digest_bytes(H, b"#define A 1\n")
    pred_files = (ActionInput(path="/lib/gen/a.h", digest=gen, size=12, mode=0o644),)
    components = KeyComponents(
        action=ShellAction(shell="sh", script="cc -c src/a.c -o out/a.o"),
        inputs=(InputFile(path="/lib/src/a.c", executable=False, digest=src, size=7),),
        predecessors=(
            PredecessorStreams(
                task=TaskId(project="gen", task="gen"),
                stdout=digest_bytes(H, b"generated\n"),
                stderr=digest_bytes(H, b""),
                outputs=outputs_digest([("/lib/gen/a.h", False, gen)], H),
            ),
        ),
        env=(
            EnvEntry(name="CC", source=EnvSource.UNSET, value=None),
            EnvEntry(name="MODE", source=EnvSource.OVERRIDE, value="release"),
            EnvEntry(name="PATH", source=EnvSource.SET, value="/usr/bin:/bin"),
        ),
        cwd="lib",
        outputs=("/lib/out/a.o",),
    )
    recorded = RecordedKeyComponents.from_components(components).to_json()
    return RemoteAction(
        task="lib:build",
        namespace="main",
        hash_name=H,
        key=frame_key(components, H),
        key_components_json=json.dumps(recorded).encode(),
        command=components.action,
        env=(("MODE", "release"), ("PATH", "/usr/bin:/bin"), ("HOME", "/root")),
        cwd="lib",
        inputs=(ActionInput(path="/lib/src/a.c", digest=src, size=7, mode=0o644),),
        predecessor_outputs=(PredecessorOutputs(task="gen:gen", files=pred_files),),
        output_patterns=("/lib/out/a.o",),
    )


def rejected(action: RemoteAction, **limits: int) -> str:
    with pytest.raises(InvalidRequestError) as info:
        admit(action, limits=AdmissionLimits(**limits) if limits else None)
    return str(info.value)


def test_a_key_the_client_derived_from_real_components_is_accepted() -> None:
    components = admit(client_action())
    assert components.cwd == "lib"
    assert components.env[1].value == "release"


def test_a_forged_key_is_refused_naming_the_task() -> None:
    forged = dataclasses.replace(client_action(), key=digest_bytes(H, b"someone else's"))
    message = rejected(forged)
    assert message.startswith("task lib:build: the key ")
    assert "does not match its components" in message


def test_a_changed_env_value_no_longer_hashes_to_the_key() -> None:
    action = client_action()
    tampered = dataclasses.replace(action, env=(("MODE", "debug"), ("PATH", "/usr/bin:/bin")))
    assert "does not match its components" in rejected(tampered)


def test_an_input_mode_that_changes_the_executable_bit_no_longer_hashes_to_the_key() -> None:
    action = client_action()
    executable = (dataclasses.replace(action.inputs[0], mode=0o755),)
    assert "does not match its components" in rejected(
        dataclasses.replace(action, inputs=executable)
    )


def test_extra_or_different_files_beside_the_key_are_refused() -> None:
    action = client_action()
    extra = ActionInput(path="/lib/src/evil.h", digest=action.inputs[0].digest, size=7, mode=0o644)
    assert rejected(dataclasses.replace(action, inputs=(*action.inputs, extra))) == (
        "task lib:build: the input files differ from the key components' inputs"
    )
    pred = action.predecessor_outputs[0]
    swapped = dataclasses.replace(
        pred, files=(dataclasses.replace(pred.files[0], digest=action.inputs[0].digest),)
    )
    assert rejected(dataclasses.replace(action, predecessor_outputs=(swapped,))) == (
        "task lib:build: the output files of gen:gen do not match their key component"
    )


def test_a_command_other_than_the_keyed_one_is_refused() -> None:
    other = dataclasses.replace(client_action(), command=CommandAction(argv=("rm", "-rf", "/")))
    assert rejected(other) == "task lib:build: the command differs from the key components' action"


def test_a_key_that_hashes_an_unset_variable_the_action_sets_is_refused() -> None:
    action = client_action()
    sets_cc = dataclasses.replace(action, env=(*action.env, ("CC", "evil-cc")))
    assert rejected(sets_cc) == "task lib:build: the key has CC unset but the action sets it"


def test_malformed_key_components_are_refused() -> None:
    broken = dataclasses.replace(client_action(), key_components_json=b'{"action": 1}')
    assert rejected(broken).startswith("task lib:build: malformed key components: manifest ")


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("lib/src/a.c", "is not workspace-absolute (must start with '/')"),
        ("/lib/../../etc/passwd", "has a '..' segment"),
        ("/lib//a.c", "has an empty segment"),
    ],
)
def test_escaping_or_relative_input_paths_are_refused(path: str, problem: str) -> None:
    action = client_action()
    bad = (dataclasses.replace(action.inputs[0], path=path),)
    assert rejected(dataclasses.replace(action, inputs=bad)) == (
        f"task lib:build: input path {path!r} {problem}"
    )


def test_escaping_predecessor_output_and_output_pattern_paths_are_refused() -> None:
    action = client_action()
    pred = action.predecessor_outputs[0]
    bad = dataclasses.replace(pred, files=(dataclasses.replace(pred.files[0], path="/../x"),))
    assert rejected(dataclasses.replace(action, predecessor_outputs=(bad,))) == (
        "task lib:build: output of gen:gen path '/../x' has a '..' segment"
    )
    assert rejected(dataclasses.replace(action, output_patterns=("/lib/../../out",))) == (
        "task lib:build: output pattern '/lib/../../out' has a '..' segment"
    )
    assert rejected(dataclasses.replace(action, directories=("/lib/../../etc",))) == (
        "task lib:build: directory '/lib/../../etc' has a '..' segment"
    )


@pytest.mark.parametrize(
    ("cwd", "problem"), [("/lib", "is absolute"), ("lib/../..", "has a '..' segment")]
)
def test_an_absolute_or_escaping_working_directory_is_refused(cwd: str, problem: str) -> None:
    assert rejected(dataclasses.replace(client_action(), cwd=cwd)) == (
        f"task lib:build: working directory {cwd!r} {problem}"
    )


@pytest.mark.parametrize("mode", [0o4755, 0o2755, 0o1777])
def test_setuid_setgid_and_sticky_modes_are_refused(mode: int) -> None:
    action = client_action()
    bad = (dataclasses.replace(action.inputs[0], mode=mode),)
    assert rejected(dataclasses.replace(action, inputs=bad)) == (
        f"task lib:build: input '/lib/src/a.c' has mode {mode:#o}: setuid, setgid and sticky "
        "bits are refused"
    )


def test_oversized_argv_and_env_are_refused() -> None:
    action = dataclasses.replace(client_action(), command=CommandAction(argv=("x",) * 5))
    assert rejected(action, max_argv_items=4) == "task lib:build: argv has 5 items, more than 4"
    assert rejected(action, max_argv_bytes=4) == "task lib:build: argv has 5 bytes, more than 4"
    big_env = client_action()
    assert rejected(big_env, max_env_items=2) == (
        "task lib:build: environment has 3 variables, more than 2"
    )
    assert rejected(big_env, max_env_bytes=10).startswith(
        "task lib:build: environment has 37 bytes, more than 10"
    )


def test_a_nul_in_argv_or_a_bad_env_name_is_refused() -> None:
    nul = dataclasses.replace(client_action(), command=CommandAction(argv=("a\x00b",)))
    assert rejected(nul) == "task lib:build: argv contains a NUL byte"
    bad_env = dataclasses.replace(client_action(), env=(("A=B", "x"),))
    assert rejected(bad_env) == "task lib:build: invalid environment variable 'A=B'"
