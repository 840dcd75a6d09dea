"""``haz why TASK`` — a task's key, its components, its lookup status, and what changed.

Spec coverage:
* ``haz why`` (§5) — the key, each component (env names only), and what changed on a miss.
* CACHE-014..016 — the lookup status.
* CACHE-007 — predecessors with their stream and outputs hashes.
* EXEC-030 — a key depending on a predecessor that would run is unknown.
* EXEC-021 — an unknown or ambiguous task exits 2.
"""

from __future__ import annotations

import argparse
import os
import time

from hazremote.cache.index import TaskIndex
from hazremote.cache.local import LocalCache
from hazremote.cache.why import describe_action, diff_components
from hazremote.cli.context import open_workspace, resolve_targets
from hazremote.cli.session import open_cache, open_index
from hazremote.domain.model import Action, ShellAction
from hazremote.domain.refs import TaskId
from hazremote.errors import UsageError
from hazremote.execute.predict import PredictedState, predict
from hazremote.keys.components import EnvSource, KeyComponents
from hazremote.keys.deriver import KeyDeriver


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def _action(action: Action) -> list[str]:
    if isinstance(action, ShellAction) and "\n" in action.script.strip():
        script = action.script.splitlines()
        return [f"  action: {action.shell} script ({len(script)} lines):"] + [
            f"    | {line}" for line in script
        ]
    return [f"  action: {describe_action(action)}"]


def _components(components: KeyComponents, *, predecessors: bool) -> list[str]:
    lines = _action(components.action)
    lines.append(f"  cwd: {components.cwd or '<workspace root>'}")
    lines.append(f"  outputs: {', '.join(components.outputs) or '<none>'}")
    lines.append(f"  inputs ({len(components.inputs)}):")
    lines += [
        f"    {f.path}  {f.digest.hex[:16]}{'  (executable)' if f.executable else ''}"
        for f in components.inputs
    ]
    if predecessors:
        lines.append(f"  predecessors ({len(components.predecessors)}):")
        lines += [
            f"    {p.task}  stdout {p.stdout.hex[:16]}  stderr {p.stderr.hex[:16]}"
            f"  outputs {p.outputs.hex[:16]}"
            for p in components.predecessors
        ]
    lines.append(f"  env ({len(components.env)}):")
    lines += [f"    {e.name}  {e.source.value}" for e in components.env]
    return lines


def run(args: argparse.Namespace) -> int:
    context = open_workspace(args, snapshot=True)
    matches = resolve_targets(context, [args.task])
    if len(matches) != 1:
        names = ", ".join(str(m) for m in matches)
        raise UsageError(f"{args.task!r} names {len(matches)} tasks ({names}); name exactly one")
    task_id = matches[0]
    task = context.graph.tasks[task_id]
    settings = context.workspace.settings
    cache = open_cache(context.workspace)
    index = open_index(context.workspace)
    with KeyDeriver.open(
        workspace_root=context.root, hash_name=settings.cache.hash, host_env=os.environ
    ) as deriver:
        prediction = predict(
            graph=context.graph,
            run_set=context.graph.run_set([task_id]),
            deriver=deriver,
            lookup=cache.lookup,
        )[task_id]
        components: KeyComponents | None = None
        if prediction.derived is not None:
            components = prediction.derived.components
        elif prediction.state is PredictedState.KEY_UNKNOWN:
            components = deriver.components(task)
    out = [str(task_id)]
    known_key = prediction.key is not None
    if prediction.state is PredictedState.ERROR:
        out.append(f"  key: cannot be derived: {prediction.error}")
        print("\n".join(out))
        return 0
    if known_key:
        assert prediction.key is not None
        out.append(f"  key: {prediction.key.hex} ({settings.cache.hash.value})")
    else:
        out.append(
            f"  key: unknown until {prediction.waits_on} has run "
            "(its stdout, stderr and outputs digests are part of this key)"
        )
    if not task.spec.cache:
        out.append("  lookup: none (cache: false — the task always runs)")
    elif prediction.lookup is not None:
        detail = f" — {prediction.lookup.detail}" if prediction.lookup.detail else ""
        out.append(f"  lookup: {prediction.lookup.status.value}{detail}")
    assert components is not None
    out += _components(components, predecessors=known_key)
    if prediction.state is not PredictedState.LOCAL_HIT:
        out += _what_changed(task_id, components, index, cache, compare_predecessors=known_key)
    print("\n".join(out))
    return 0


def _what_changed(
    task_id: TaskId,
    components: KeyComponents,
    index: TaskIndex,
    cache: LocalCache,
    *,
    compare_predecessors: bool,
) -> list[str]:
    env_values = {
        e.name: (None if e.source is EnvSource.UNSET else e.value) for e in components.env
    }
    for record in index.recent_keys(task_id):
        stored = cache.lookup(record.key)
        if stored.manifest is None:
            continue
        changes = diff_components(
            components,
            stored.manifest.key_components,
            changed_env=index.changed_env(record, env_values),
            compare_predecessors=compare_predecessors,
        )
        header = (
            f"  what changed since the last stored run ({record.key.hex[:12]}, "
            f"{_age(time.time() - record.recorded_at_unix)}):"
        )
        if not changes:
            return [header, "    nothing in the compared components"]
        lines = [header]
        for change in changes:
            lines.append(f"    {change.render()}")
            lines += [f"      {line}" for line in change.lines]
        return lines
    return ["  what changed: no earlier stored run of this task to compare with"]
