"""``.haz/workspace.yml``: the ``projects`` list and the workspace settings.

Spec coverage:
* ``workspace.yml`` (§1) — ``projects``, ``lock``, ``cache``, ``concurrency``, ``remote``, …
* CACHE-002 — the hash function name.
* EXEC-004, EXEC-005 — concurrency limits.
* CFG-040 — every problem is a diagnostic with key path and line.
Out of scope: which project directories the ``projects`` entries select (``_discovery``), and
resolving remote settings against flags and the environment (the CLI).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Final
from urllib.parse import urlsplit

from yaml.nodes import Node, ScalarNode

from hazremote.config._schema import Checker
from hazremote.config._tasks import env_name_problem, parse_platform
from hazremote.domain.model import (
    DEFAULT_GRACE_PERIOD_S,
    CacheSettings,
    ConcurrencySettings,
    ExecutionSettings,
    HashName,
    OutputMode,
    RemoteMode,
    RemotePolicy,
    RemoteSettings,
    TlsSettings,
    WorkspaceSettings,
    frozen_map,
)
from hazremote.domain.names import name_problem
from hazremote.domain.units import parse_duration, parse_size

__all__ = ["ProjectEntry", "parse_workspace_file"]

_WORKSPACE_KEYS: Final = frozenset(
    {"projects", "lock", "cache", "concurrency", "output", "execution", "remote"}
)
_CACHE_KEYS: Final = frozenset({"hash", "clean"})
_CLEAN_KEYS: Final = frozenset({"max_age", "max_size"})
_CONCURRENCY_KEYS: Final = frozenset({"default", "tags"})
_OUTPUT_KEYS: Final = frozenset({"mode"})
_EXECUTION_KEYS: Final = frozenset({"grace_period"})
_REMOTE_KEYS: Final = frozenset(
    {"url", "namespace", "mode", "token_env", "tls", "execute", "platform"}
)
_TLS_KEYS: Final = frozenset({"ca", "cert", "key"})
_REMOTE_SCHEMES: Final = ("grpc", "grpcs")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectEntry:
    """One item of ``projects:`` with where it was written."""

    text: str
    key_path: str
    line: int


def parse_workspace_file(
    checker: Checker, root: Node | None
) -> tuple[WorkspaceSettings, list[ProjectEntry]]:
    """Settings and project entries of a composed ``workspace.yml`` (``None``: empty file)."""
    if root is None:
        return WorkspaceSettings(), []
    fields = checker.fields(root, "", _WORKSPACE_KEYS, "workspace.yml")
    if fields is None:
        return WorkspaceSettings(), []

    entries: list[ProjectEntry] = []
    if "projects" in fields:
        for text, item, index in checker.texts(fields["projects"][1], "projects", "projects"):
            entries.append(
                ProjectEntry(
                    text=text, key_path=f"projects[{index}]", line=item.start_mark.line + 1
                )
            )

    lock = False
    if "lock" in fields:
        lock = checker.boolean(fields["lock"][1], "lock") is True

    settings = WorkspaceSettings(
        lock=lock,
        cache=_cache(checker, fields.get("cache")),
        concurrency=_concurrency(checker, fields.get("concurrency")),
        output=_output(checker, fields.get("output")),
        execution=_execution(checker, fields.get("execution")),
        remote=_remote(checker, fields.get("remote")),
    )
    return settings, entries


def _cache(checker: Checker, entry: tuple[Node, Node] | None) -> CacheSettings:
    if entry is None:
        return CacheSettings()
    fields = checker.fields(entry[1], "cache", _CACHE_KEYS, "cache")
    if fields is None:
        return CacheSettings()
    hash_name = HashName.BLAKE3
    if "hash" in fields:
        word = checker.choice(fields["hash"][1], "cache.hash", [h.value for h in HashName])
        if word is not None:
            hash_name = HashName(word)
    max_age: float | None = None
    max_size: int | None = None
    if "clean" in fields:
        clean = checker.fields(fields["clean"][1], "cache.clean", _CLEAN_KEYS, "cache.clean")
        if clean is not None:
            if "max_age" in clean:
                max_age = _duration(checker, clean["max_age"][1], "cache.clean.max_age")
            if "max_size" in clean:
                max_size = _size(checker, clean["max_size"][1], "cache.clean.max_size")
    return CacheSettings(hash=hash_name, clean_max_age_s=max_age, clean_max_size=max_size)


def _concurrency(checker: Checker, entry: tuple[Node, Node] | None) -> ConcurrencySettings:
    if entry is None:
        return ConcurrencySettings()
    fields = checker.fields(entry[1], "concurrency", _CONCURRENCY_KEYS, "concurrency")
    if fields is None:
        return ConcurrencySettings()
    default: int | None = None
    if "default" in fields:
        node = fields["default"][1]
        if isinstance(node, ScalarNode) and node.value == "auto":
            default = None
        else:
            default = checker.integer(node, "concurrency.default", minimum=1)
    tags: dict[str, int] = {}
    if "tags" in fields:
        for tag, key_node, value in (
            checker.entries(fields["tags"][1], "concurrency.tags", "concurrency.tags") or ()
        ):
            path = f"concurrency.tags.{tag}"
            problem = name_problem(tag)
            if problem is not None:
                checker.error(path, key_node, f"invalid tag: {problem}")
                continue
            limit = checker.integer(value, path, minimum=1)
            if limit is not None:
                tags[tag] = limit
    return ConcurrencySettings(default=default, tags=MappingProxyType(dict(sorted(tags.items()))))


def _output(checker: Checker, entry: tuple[Node, Node] | None) -> OutputMode:
    if entry is None:
        return OutputMode.LIVE
    fields = checker.fields(entry[1], "output", _OUTPUT_KEYS, "output")
    if fields is None or "mode" not in fields:
        return OutputMode.LIVE
    word = checker.choice(fields["mode"][1], "output.mode", [m.value for m in OutputMode])
    return OutputMode.LIVE if word is None else OutputMode(word)


def _execution(checker: Checker, entry: tuple[Node, Node] | None) -> ExecutionSettings:
    if entry is None:
        return ExecutionSettings()
    fields = checker.fields(entry[1], "execution", _EXECUTION_KEYS, "execution")
    if fields is None or "grace_period" not in fields:
        return ExecutionSettings()
    grace = _duration(checker, fields["grace_period"][1], "execution.grace_period")
    return ExecutionSettings(grace_period_s=DEFAULT_GRACE_PERIOD_S if grace is None else grace)


def _remote(checker: Checker, entry: tuple[Node, Node] | None) -> RemoteSettings:
    if entry is None:
        return RemoteSettings()
    fields = checker.fields(entry[1], "remote", _REMOTE_KEYS, "remote")
    if fields is None:
        return RemoteSettings()
    url = None
    if "url" in fields:
        url = _url(checker, fields["url"][1], "remote.url")
    namespace = None
    if "namespace" in fields:
        node = fields["namespace"][1]
        namespace = checker.text(node, "remote.namespace", "the namespace")
        problem = None if namespace is None else name_problem(namespace)
        if problem is not None:
            checker.error("remote.namespace", node, f"invalid namespace: {problem}")
            namespace = None
    mode = None
    if "mode" in fields:
        word = checker.choice(fields["mode"][1], "remote.mode", [m.value for m in RemoteMode])
        mode = None if word is None else RemoteMode(word)
    token_env = None
    if "token_env" in fields:
        node = fields["token_env"][1]
        token_env = checker.text(node, "remote.token_env", "token_env")
        problem = None if token_env is None else env_name_problem(token_env)
        if problem is not None:
            checker.error("remote.token_env", node, problem)
            token_env = None
    execute = None
    if "execute" in fields:
        word = checker.choice(
            fields["execute"][1], "remote.execute", [p.value for p in RemotePolicy]
        )
        execute = None if word is None else RemotePolicy(word)
    platform = frozen_map()
    if "platform" in fields:
        platform = frozen_map(parse_platform(checker, fields["platform"][1], "remote.platform"))
    return RemoteSettings(
        url=url,
        namespace=namespace,
        mode=mode,
        token_env=token_env,
        tls=_tls(checker, fields.get("tls")),
        execute=execute,
        platform=platform,
    )


def _tls(checker: Checker, entry: tuple[Node, Node] | None) -> TlsSettings:
    if entry is None:
        return TlsSettings()
    fields = checker.fields(entry[1], "remote.tls", _TLS_KEYS, "remote.tls")
    if fields is None:
        return TlsSettings()
    paths: dict[str, str] = {}
    for key, (_, node) in fields.items():
        text = checker.text(node, f"remote.tls.{key}", f"tls.{key}")
        if text is not None and not text:
            checker.error(f"remote.tls.{key}", node, "must be a file path, got ''")
        elif text is not None:
            paths[key] = text
    if ("cert" in fields) != ("key" in fields):
        present, missing = ("cert", "key") if "cert" in fields else ("key", "cert")
        checker.error(
            f"remote.tls.{present}",
            fields[present][0],
            f"a client {present} needs its {missing} too (mutual TLS uses both)",
        )
    return TlsSettings(ca=paths.get("ca"), cert=paths.get("cert"), key=paths.get("key"))


def _url(checker: Checker, node: Node, path: str) -> str | None:
    text = checker.text(node, path, "remote.url")
    if text is None:
        return None
    problem = _url_problem(text)
    if problem is not None:
        checker.error(path, node, problem)
        return None
    return text


def _url_problem(text: str) -> str | None:
    split = urlsplit(text)
    if split.scheme not in _REMOTE_SCHEMES:
        return f"the remote url must start with grpc:// or grpcs:// (TLS), got {text!r}"
    if split.username is not None or split.password is not None:
        return "the remote url must not carry credentials; name the token's variable in token_env"
    if not split.hostname:
        return f"the remote url {text!r} has no host; write grpc://host:port"
    try:
        split.port  # noqa: B018 - accessing it validates the port
    except ValueError:
        return f"the remote url {text!r} has an invalid port"
    if split.path not in ("", "/") or split.query or split.fragment:
        return f"the remote url {text!r} must be just scheme://host[:port]"
    return None


def _duration(checker: Checker, node: Node, path: str) -> float | None:
    text = checker.scalar_for_unit(node, path, "a duration such as 30s or 7d")
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        checker.error(path, node, str(exc))
        return None


def _size(checker: Checker, node: Node, path: str) -> int | None:
    text = checker.scalar_for_unit(node, path, "a size such as 500MB or 10GiB")
    if text is None:
        return None
    try:
        return parse_size(text)
    except ValueError as exc:
        checker.error(path, node, str(exc))
        return None
