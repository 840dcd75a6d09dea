"""The ``WorkTree`` port: which files git tracks or would track, and its git adapter.

One ``git ls-files`` call per run, from the workspace root, lists every project's files
(:meth:`WorkTree.list_files`); :meth:`WorkTree.untracked_under` lists again below new outputs.

Spec coverage:
* PATH-001..016 — default inputs in git: ``--cached`` plus ``--others --exclude-standard``.
Out of scope: partitioning by project and excluding ``.haz/``, nested projects and own
outputs (``hazremote.keys.resolve``).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from typing import Protocol

__all__ = ["GitWorkTree", "WorkTree"]

#: ``git ls-files -s`` prefixes a tracked entry with ``<mode> <object> <stage>\t``.
_STAGED = re.compile(r"([0-7]{6}) [0-9a-f]{40,64} [0-3]\t")
_GITLINK = "160000"  # a submodule's entry in the index
_MAX_NESTING = 8  # submodules within submodules: a bound against pathological setups


class WorkTree(Protocol):
    """What git tracks or would track below the workspace root (paths relative to it)."""

    def list_files(self) -> tuple[str, ...] | None:
        """Every file git tracks or would track below the workspace root, root-relative
        (``a/b.c``), in no particular order; None when the root is not in a git work tree."""
        ...

    def untracked_under(self, prefixes: Sequence[str]) -> tuple[str, ...]:
        """Untracked, not ignored files below the root-relative ``prefixes`` (directories
        or files), root-relative."""
        ...


def _run_git(cwd: str, args: Sequence[str]) -> bytes | None:
    try:
        result = subprocess.run(
            ["git", "-c", "core.quotepath=off", *args],
            cwd=cwd,
            capture_output=True,
            check=False,
        )
    except OSError:  # no git on PATH, or cwd gone
        return None
    if result.returncode != 0:
        return None
    return result.stdout


class GitWorkTree:
    """:class:`WorkTree` through ``git ls-files`` run in the workspace root.

    Args:
        root: Host path of the workspace root.
    """

    def __init__(self, *, root: str) -> None:
        self._root = root.rstrip("/") or "/"

    def list_files(self) -> tuple[str, ...] | None:
        return self._list(self._root, "", (), depth=0)

    def untracked_under(self, prefixes: Sequence[str]) -> tuple[str, ...]:
        if not prefixes:
            return ()
        listed = self._list(self._root, "", prefixes, depth=0, others_only=True)
        return listed or ()

    def _list(
        self,
        cwd: str,
        base: str,
        pathspecs: Sequence[str],
        *,
        depth: int,
        others_only: bool = False,
    ) -> tuple[str, ...] | None:
        args = ["ls-files", "-z", "--others", "--exclude-standard"]
        if not others_only:
            args += ["--cached", "--stage"]
        if pathspecs:
            args += ["--", *(f":(literal){p}" for p in pathspecs)]
        out = _run_git(cwd, args)
        if out is None:
            return None
        files: list[str] = []
        nested: list[str] = []
        for raw in out.split(b"\0"):
            if not raw:
                continue
            entry = os.fsdecode(raw)
            staged = _STAGED.match(entry)
            if staged is not None:
                path = entry[staged.end() :]
                if staged.group(1) == _GITLINK:
                    nested.append(path)
                    continue
            else:
                path = entry
                if path.endswith("/"):  # an untracked nested repository
                    nested.append(path.rstrip("/"))
                    continue
            files.append(base + path)
        if depth < _MAX_NESTING:
            for sub in dict.fromkeys(nested):
                # a submodule not checked out, or a nested repository git cannot read,
                # contributes nothing (as an empty directory would)
                found = self._list(os.path.join(cwd, sub), f"{base}{sub}/", (), depth=depth + 1)
                files.extend(found or ())
        return tuple(dict.fromkeys(files))  # merge conflicts list a path once per stage
