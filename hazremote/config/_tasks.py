"""Task definitions of ``haz.yml`` files and overlays, as :class:`TaskSpec` values.

Spec coverage:
* Task fields (§1) — ``command`` XOR ``shell``, inputs, outputs, deps, mutex, env and the rest.
* ID-001..003 — task names, mutex names.
* PATH-001..016 — every pattern is validated, so none can escape the workspace; ``!`` in inputs.
* REF-001..008 — ``deps``/``weakDeps`` are parsed into :class:`RefEntry` with their origin.
* MUTEX-001..007 — mutex scope and mode.
* CFG-040 — every problem is a diagnostic at the item's key path and line.
Out of scope: resolving references, overlay merge and the DAG-010/012 checks (``hazremote.graph``).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from hazremote.config._schema import NULL_TAG, Checker, describe
from hazremote.domain.model import (
    Action,
    CommandAction,
    EnvSpec,
    MutexMode,
    MutexSpec,
    Origin,
    RefEntry,
    RemotePolicy,
    ShellAction,
    TaskSpec,
    frozen_map,
)
from hazremote.domain.names import name_problem
from hazremote.domain.patterns import parse_pattern
from hazremote.domain.refs import TaskRef, parse_ref
from hazremote.domain.units import parse_duration
from hazremote.errors import PatternError, ReferenceError_

__all__ = ["ENV_NAME_RE", "env_name_problem", "parse_platform", "parse_tasks"]

ENV_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_TASK_KEYS: Final = frozenset(
    {
        "command",
        "shell",
        "inputs",
        "outputs",
        "deps",
        "weakDeps",
        "mutex",
        "env",
        "cache",
        "remote",
        "platform",
        "timeout",
    }
)
_ENV_KEYS: Final = frozenset({"from_host", "pass_through", "override"})
_MUTEX_KEYS: Final = frozenset({"name", "mode"})
_POLICIES: Final = tuple(policy.value for policy in RemotePolicy)
_MUTEX_MODES: Final = tuple(mode.value for mode in MutexMode)
_DEFAULT_SHELL: Final = "sh"


@lru_cache(maxsize=4096)
def env_name_problem(name: str) -> str | None:
    """Why ``name`` is not a portable environment variable name, or ``None``."""
    if ENV_NAME_RE.fullmatch(name) is None:
        return f"{name!r} is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)"
    return None


@lru_cache(maxsize=16384)
def _pattern_problem(text: str, allow_negation: bool) -> str | None:
    # Patterns repeat across projects (src/**, package.json): validate each spelling once.
    try:
        parse_pattern(text, project_dir="", allow_negation=allow_negation)
    except PatternError as exc:
        return str(exc)
    return None


@lru_cache(maxsize=16384)
def _parse_ref(text: str) -> TaskRef | str:
    try:
        return parse_ref(text)
    except ReferenceError_ as exc:
        return str(exc)


def parse_tasks(
    checker: Checker,
    node: Node,
    path: str,
    *,
    rejected: list[tuple[str, RefEntry]] | None = None,
) -> dict[str, TaskSpec]:
    """Parse a ``tasks:`` mapping; invalid tasks are reported and left out.

    The ``deps``/``weakDeps`` entries that parsed in a task left out for another error are
    appended to ``rejected`` with the task's name, so they can be checked all the same.
    """
    entries = checker.entries(node, path, "tasks")
    if entries is None:
        return {}
    tasks: dict[str, TaskSpec] = {}
    for name, key_node, body in entries:
        task_path = f"{path}.{name}"
        problem = name_problem(name)
        if problem is not None:
            checker.error(task_path, key_node, f"invalid task name: {problem}")
        spec = _parse_task(checker, name, key_node, body, task_path, rejected=rejected)
        if spec is not None and problem is None:
            tasks[name] = spec
    return dict(sorted(tasks.items()))


def _parse_task(
    checker: Checker,
    name: str,
    key_node: Node,
    body: Node,
    path: str,
    *,
    rejected: list[tuple[str, RefEntry]] | None = None,
) -> TaskSpec | None:
    before = len(checker.diagnostics)
    if body.tag == NULL_TAG:
        checker.error(path, key_node, "a task needs command: (an argv list) or shell: (a script)")
        return None
    fields = checker.fields(body, path, _TASK_KEYS, "a task")
    if fields is None:
        return None

    action = _parse_action(checker, fields, key_node, path)
    # PATH: an absent key (None) means the project's files; `inputs: []` means none
    inputs = (
        _patterns(checker, fields["inputs"], f"{path}.inputs", allow_negation=True)
        if "inputs" in fields
        else None
    )
    outputs = _patterns(checker, fields.get("outputs"), f"{path}.outputs", allow_negation=False)
    deps = _refs(checker, fields.get("deps"), f"{path}.deps")
    weak_deps = _refs(checker, fields.get("weakDeps"), f"{path}.weakDeps")

    mutex = None
    if "mutex" in fields:
        mutex = _parse_mutex(checker, fields["mutex"][1], f"{path}.mutex")
    env = EnvSpec()
    if "env" in fields:
        env = _parse_env(checker, fields["env"][1], f"{path}.env")
    cache = True
    if "cache" in fields:
        cache = checker.boolean(fields["cache"][1], f"{path}.cache") is not False
    remote = None
    if "remote" in fields:
        word = checker.choice(fields["remote"][1], f"{path}.remote", _POLICIES)
        remote = None if word is None else RemotePolicy(word)
    platform = frozen_map()
    if "platform" in fields:
        platform = frozen_map(parse_platform(checker, fields["platform"][1], f"{path}.platform"))
    timeout_s = None
    if "timeout" in fields:
        timeout_s = _positive_duration(checker, fields["timeout"][1], f"{path}.timeout")

    if action is None or len(checker.diagnostics) != before:
        if rejected is not None:
            rejected += [(name, entry) for entry in (*deps, *weak_deps)]
        return None
    return TaskSpec(
        name=name,
        action=action,
        inputs=inputs,
        outputs=outputs,
        deps=deps,
        weak_deps=weak_deps,
        mutex=mutex,
        env=env,
        cache=cache,
        remote=remote,
        platform=platform,
        timeout_s=timeout_s,
        origin=Origin(file=checker.file, key_path=path, line=key_node.start_mark.line + 1),
    )


def _parse_action(
    checker: Checker, fields: dict[str, tuple[Node, Node]], key_node: Node, path: str
) -> Action | None:
    command = fields.get("command")
    shell = fields.get("shell")
    if command is not None and shell is not None:
        checker.error(
            f"{path}.shell",
            shell[0],
            "command: and shell: are mutually exclusive; keep one "
            "(command: is an argv run without a shell, shell: a script for sh -c)",
        )
        return None
    if command is not None:
        return _parse_command(checker, command[1], f"{path}.command")
    if shell is not None:
        return _parse_shell(checker, shell[1], f"{path}.shell")
    checker.error(path, key_node, "a task needs command: (an argv list) or shell: (a script)")
    return None


def _parse_command(checker: Checker, node: Node, path: str) -> CommandAction | None:
    if isinstance(node, ScalarNode):
        checker.error(
            path,
            node,
            f"command must be a non-empty list of strings (argv), got {describe(node)}; "
            f"write it as a list such as [node, build.js], or use shell: for a script",
        )
        return None
    argv = checker.texts(node, path, "command")
    if not isinstance(node, SequenceNode) or len(argv) != len(node.value):
        return None  # the bad items are reported
    if not argv:
        checker.error(path, node, "command must not be empty")
        return None
    if not argv[0][0]:
        checker.error(f"{path}[0]", argv[0][1], "the program name must not be empty")
        return None
    return CommandAction(argv=tuple(text for text, _, _ in argv))


def _parse_shell(checker: Checker, node: Node, path: str) -> ShellAction | None:
    if isinstance(node, MappingNode):
        entries = checker.entries(node, path, "shell")
        if entries is None:
            return None
        if len(entries) != 1:
            checker.error(
                path,
                node,
                f"shell as a mapping must have exactly one key (the shell, e.g. "
                f"{{bash: 'script'}}), got {len(entries)}",
            )
            return None
        shell, shell_key, script_node = entries[0]
        if not shell or "\x00" in shell:
            checker.error(f"{path}.{shell}", shell_key, f"invalid shell name {shell!r}")
            return None
        script = _script(checker, script_node, f"{path}.{shell}")
        return None if script is None else ShellAction(shell=shell, script=script)
    if isinstance(node, ScalarNode):
        script = _script(checker, node, path)
        return None if script is None else ShellAction(shell=_DEFAULT_SHELL, script=script)
    checker.error(
        path, node, f"shell must be a script string or {{shell: script}}, got {describe(node)}"
    )
    return None


def _script(checker: Checker, node: Node, path: str) -> str | None:
    script = checker.text(node, path, "the shell script")
    if script is not None and not script.strip():
        checker.error(path, node, "the shell script must not be empty")
        return None
    return script


def _patterns(
    checker: Checker, entry: tuple[Node, Node] | None, path: str, *, allow_negation: bool
) -> tuple[str, ...]:
    if entry is None:
        return ()
    what = "inputs" if allow_negation else "outputs"
    out: list[str] = []
    for text, item, index in checker.texts(entry[1], path, what):
        problem = _pattern_problem(text, allow_negation)
        if problem is None:
            out.append(text)
        else:
            checker.error(f"{path}[{index}]", item, problem)
    return tuple(out)


def _refs(checker: Checker, entry: tuple[Node, Node] | None, path: str) -> tuple[RefEntry, ...]:
    if entry is None:
        return ()
    what = "deps" if path.endswith(".deps") else "weakDeps"
    out: list[RefEntry] = []
    file = checker.file
    for text, item, index in checker.texts(entry[1], path, what):
        item_path = f"{path}[{index}]"
        ref = _parse_ref(text)
        if isinstance(ref, str):
            checker.error(item_path, item, ref)
            continue
        origin = Origin(file=file, key_path=item_path, line=item.start_mark.line + 1)
        out.append(RefEntry(ref=ref, origin=origin))
    return tuple(out)


def _mutex_name(checker: Checker, node: Node, path: str, text: str) -> tuple[str, bool] | None:
    scoped = text.startswith("~:")
    name = text[2:] if scoped else text
    problem = name_problem(name)
    if problem is not None:
        checker.error(path, node, f"invalid mutex name: {problem} (write db or ~:db)")
        return None
    return name, scoped


def _parse_mutex(checker: Checker, node: Node, path: str) -> MutexSpec | None:
    if isinstance(node, MappingNode):
        fields = checker.fields(node, path, _MUTEX_KEYS, "mutex")
        if fields is None:
            return None
        if "name" not in fields:
            checker.error(path, node, "mutex needs a name: (db or ~:db)")
            return None
        name_node = fields["name"][1]
        text = checker.text(name_node, f"{path}.name", "the mutex name")
        parsed = None if text is None else _mutex_name(checker, name_node, f"{path}.name", text)
        mode = MutexMode.EXCLUSIVE
        if "mode" in fields:
            word = checker.choice(fields["mode"][1], f"{path}.mode", _MUTEX_MODES)
            if word is None:
                return None
            mode = MutexMode(word)
        if parsed is None:
            return None
        return MutexSpec(name=parsed[0], project_scoped=parsed[1], mode=mode)
    text = checker.text(node, path, "mutex")
    if text is None:
        return None
    parsed = _mutex_name(checker, node, path, text)
    if parsed is None:
        return None
    return MutexSpec(name=parsed[0], project_scoped=parsed[1])


def _env_names(checker: Checker, entry: tuple[Node, Node] | None, path: str) -> tuple[str, ...]:
    if entry is None:
        return ()
    out: list[str] = []
    for text, item, index in checker.texts(entry[1], path, "environment variable names"):
        problem = env_name_problem(text)
        if problem is not None:
            checker.error(f"{path}[{index}]", item, problem)
        elif text not in out:
            out.append(text)
    return tuple(out)


def _parse_env(checker: Checker, node: Node, path: str) -> EnvSpec:
    fields = checker.fields(node, path, _ENV_KEYS, "env")
    if fields is None:
        return EnvSpec()
    from_host = _env_names(checker, fields.get("from_host"), f"{path}.from_host")
    pass_through = _env_names(checker, fields.get("pass_through"), f"{path}.pass_through")
    both = set(from_host).intersection(pass_through)
    if both:
        checker.error(
            f"{path}.pass_through",
            fields["pass_through"][1],
            f"{', '.join(sorted(both))} listed in both from_host and pass_through; list each "
            f"variable once (from_host values are hashed into the key, pass_through values not)",
        )
    override: dict[str, str] = {}
    if "override" in fields:
        entries = checker.entries(fields["override"][1], f"{path}.override", "env.override")
        for name, key_node, value_node in entries or ():
            item_path = f"{path}.override.{name}"
            problem = env_name_problem(name)
            if problem is not None:
                checker.error(item_path, key_node, problem)
                continue
            if not isinstance(value_node, ScalarNode) or value_node.tag == NULL_TAG:
                checker.error(
                    item_path,
                    value_node,
                    f"an override value must be a string, got {describe(value_node)}"
                    + ("; write '' for an empty value" if value_node.tag == NULL_TAG else ""),
                )
                continue
            override[name] = value_node.value
    return EnvSpec(from_host=from_host, pass_through=pass_through, override=frozen_map(override))


def parse_platform(checker: Checker, node: Node, path: str) -> dict[str, str]:
    """Platform properties (RX-003): a mapping of non-empty names to strings."""
    entries = checker.entries(node, path, "platform")
    out: dict[str, str] = {}
    for name, key_node, value_node in entries or ():
        item_path = f"{path}.{name}"
        if not name.strip():
            checker.error(item_path, key_node, "platform property names must not be empty")
            continue
        value = checker.text(value_node, item_path, "a platform property value")
        if value is not None:
            out[name] = value
    return out


@lru_cache(maxsize=1024)
def _duration_or_problem(text: str) -> float | str:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        return str(exc)
    if seconds <= 0:
        return f"must be greater than zero, got {text!r}"
    return seconds


def _positive_duration(checker: Checker, node: Node, path: str) -> float | None:
    text = checker.scalar_for_unit(node, path, "a duration such as 30s or 10m")
    if text is None:
        return None
    seconds = _duration_or_problem(text)
    if isinstance(seconds, str):
        checker.error(path, node, seconds)
        return None
    return seconds
