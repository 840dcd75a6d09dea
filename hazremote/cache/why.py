"""What changed between a task's current key components and a stored entry's (``haz why``).

Pure: no I/O. The CLI gathers the inputs and prints the result.

Spec coverage:
* ``haz why`` (§5) — which components differ from the latest stored entry of the task.
* CACHE-011 — env variables are compared through the local task index (no values in manifests).
* CACHE-007 — predecessors added, removed, or whose streams or outputs changed.
"""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Iterable
from dataclasses import dataclass

from hazremote.cache.manifest import RecordedKeyComponents
from hazremote.domain.model import Action, CommandAction, ShellAction
from hazremote.keys.components import KeyComponents

__all__ = ["Change", "action_change", "describe_action", "diff_components"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One difference; ``kind`` is stable for scripts (``input-changed``, ``env-changed`` …)."""

    kind: str
    subject: str
    detail: str = ""
    #: Lines shown below the change (a unified diff of a script; the old and new argv).
    lines: tuple[str, ...] = ()

    def render(self) -> str:
        if self.kind == "predecessor-changed":  # "predecessor lib:build: outputs changed"
            return f"predecessor {self.subject}: {self.detail} changed"
        text = f"{self.kind.replace('-', ' ')}: {self.subject}"
        return f"{text} ({self.detail})" if self.detail else text


def describe_action(action: Action) -> str:
    """One line: ``command cc -o 'my prog' main.c``, or ``sh -c 'make all'``."""
    if isinstance(action, CommandAction):
        return "command " + shlex.join(action.argv)
    return f"{action.shell} -c {shlex.quote(action.script)}"


def _action_lines(action: Action) -> list[str]:
    if isinstance(action, CommandAction):
        return [shlex.join(action.argv)]
    return action.script.splitlines()


def action_change(current: Action, previous: Action) -> Change | None:
    """The action component's difference, readably: a script as a unified line diff, an argv
    as the old and the new command line; ``None`` when they are equal."""
    if current == previous:
        return None
    if isinstance(current, ShellAction) and isinstance(previous, ShellAction):
        if current.script == previous.script:
            return Change(
                kind="action-changed",
                subject=f"shell {previous.shell} → {current.shell}",
                detail="script unchanged",
            )
        diff = tuple(
            difflib.unified_diff(
                previous.script.splitlines(),
                current.script.splitlines(),
                "stored",
                "current",
                lineterm="",
            )
        )
        body = diff[2:]  # after the ---/+++ header
        added = sum(1 for line in body if line.startswith("+"))
        removed = sum(1 for line in body if line.startswith("-"))
        shell = (
            current.shell
            if current.shell == previous.shell
            else (f"{previous.shell} → {current.shell}")
        )
        return Change(
            kind="action-changed",
            subject=f"{shell} script",
            detail=f"{_count(added, 'line')} added, {removed} removed",
            lines=diff,
        )
    if isinstance(current, CommandAction) and isinstance(previous, CommandAction):
        now, before = current.argv, previous.argv
        if len(now) == len(before):
            changed = [
                str(i + 1) for i, (a, b) in enumerate(zip(now, before, strict=True)) if a != b
            ]
            which = "argument" if len(changed) == 1 else "arguments"
            detail = f"{which} {', '.join(changed)} of {len(now)} changed"
        else:
            detail = f"{len(before)} → {len(now)} arguments"
        subject = "command"
    elif isinstance(current, ShellAction):
        subject, detail = f"command: → shell: ({current.shell})", ""
    else:
        assert isinstance(previous, ShellAction)
        subject, detail = f"shell: ({previous.shell}) → command:", ""
    lines = [f"- {line}" for line in _action_lines(previous)]
    lines += [f"+ {line}" for line in _action_lines(current)]
    return Change(kind="action-changed", subject=subject, detail=detail, lines=tuple(lines))


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def diff_components(
    current: KeyComponents,
    previous: RecordedKeyComponents,
    *,
    changed_env: Iterable[str] = (),
    compare_predecessors: bool = True,
) -> list[Change]:
    """Every component of ``current`` that differs from ``previous``, in key order."""
    changes: list[Change] = []
    action = action_change(current.action, previous.action)
    if action is not None:
        changes.append(action)
    now = {f.path: f.digest for f in current.inputs}
    before = {i.path: i.hash for i in previous.inputs}
    for path in sorted(now.keys() | before.keys()):
        if path not in before:
            changes.append(Change(kind="input-added", subject=path))
        elif path not in now:
            changes.append(Change(kind="input-removed", subject=path))
        elif now[path] != before[path]:
            changes.append(
                Change(
                    kind="input-changed",
                    subject=path,
                    detail=f"{before[path].hex[:12]} → {now[path].hex[:12]}",
                )
            )
    if compare_predecessors:
        # outputs first: what a dependant consumes, and the usual reason it re-runs
        preds_now = {str(p.task): (p.outputs, p.stdout, p.stderr) for p in current.predecessors}
        preds_before = {p.task: (p.outputs, p.stdout, p.stderr) for p in previous.predecessors}
        for task in sorted(preds_now.keys() | preds_before.keys()):
            if task not in preds_before:
                changes.append(Change(kind="predecessor-added", subject=task))
            elif task not in preds_now:
                changes.append(Change(kind="predecessor-removed", subject=task))
            elif preds_now[task] != preds_before[task]:
                which = [
                    name
                    for name, a, b in zip(
                        ("outputs", "stdout", "stderr"),
                        preds_now[task],
                        preds_before[task],
                        strict=True,
                    )
                    if a != b
                ]
                detail = ", ".join(which[:-1]) + " and " + which[-1] if len(which) > 1 else which[0]
                changes.append(Change(kind="predecessor-changed", subject=task, detail=detail))
    env_now = {e.name: e.source for e in current.env}
    env_before = {e.name: e.source for e in previous.env}
    reported: set[str] = set()
    for name in sorted(env_now.keys() | env_before.keys()):
        if name not in env_before:
            changes.append(Change(kind="env-added", subject=name))
        elif name not in env_now:
            changes.append(Change(kind="env-removed", subject=name))
        elif env_now[name] != env_before[name]:
            changes.append(
                Change(
                    kind="env-changed",
                    subject=name,
                    detail=f"{env_before[name].value} → {env_now[name].value}",
                )
            )
        else:
            continue
        reported.add(name)
    for name in sorted(set(changed_env) - reported):
        if name in env_now and name in env_before:
            changes.append(Change(kind="env-changed", subject=name, detail="value differs"))
    if current.cwd != previous.cwd:
        changes.append(
            Change(
                kind="cwd-changed", subject=current.cwd or "<root>", detail=f"was {previous.cwd!r}"
            )
        )
    if tuple(current.outputs) != tuple(previous.outputs):
        changes.append(
            Change(
                kind="outputs-changed",
                subject=", ".join(current.outputs) or "<none>",
                detail="was " + (", ".join(previous.outputs) or "<none>"),
            )
        )
    return changes
