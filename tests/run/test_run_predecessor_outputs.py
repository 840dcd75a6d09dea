"""``haz run`` end to end: a dependant's key follows what its predecessor produced (issue 12).

The user's complaint: ``app:link`` depends on ``lib:build`` and links ``../lib/build/libx.a``
without declaring it as an input; after ``libx.a`` changed, ``app:link`` stayed a cache hit
and restored a stale binary. Chapter revision 1 folds each hard predecessor's outputs digest
into the key.

Spec coverage: CACHE-007 (rev 1: the outputs digest of a hard predecessor, fresh or restored;
byte-identical outputs still let dependants hit; a task that is not cached contributes the
files matching its output patterns after it ran), CACHE-018 (``cache: false``), SPEC §5
``haz why`` (a predecessor whose outputs changed is named).
"""

from __future__ import annotations

from pathlib import Path

from tests.run.conftest import HazRunner, Result, WorkspaceMaker, py

# "Compiles" every lib/src/*.c into build/libx.a, dropping comment lines: a comment-only change
# rebuilds lib but yields byte-identical output. stdout and stderr never change, so only the
# outputs digest can tell the dependant that libx.a changed.
LIB_BUILD = py(
    "import pathlib;"
    "srcs = sorted(pathlib.Path('src').glob('*.c'));"
    "code = [l for s in srcs for l in s.read_text().splitlines() if not l.startswith('//')];"
    "out = pathlib.Path('build'); out.mkdir(exist_ok=True);"
    "(out / 'libx.a').write_text('\\n'.join(code) + '\\n');"
    "print('built lib')"
)
# Links against ../lib/build/libx.a, which it does NOT list as an input.
APP_LINK = py(
    "import pathlib;"
    "lib = pathlib.Path('../lib/build/libx.a').read_text();"
    "main = pathlib.Path('src/main.c').read_text();"
    "out = pathlib.Path('out'); out.mkdir(exist_ok=True);"
    "(out / 'app').write_text(main + lib);"
    "print('linked app')"
)


def _workspace(make_workspace: WorkspaceMaker, *, lib_cache: bool = True) -> Path:
    return make_workspace(
        {
            ".haz/workspace.yml": "projects: [lib, app]\n",
            "lib/haz.yml": (
                "tasks:\n"
                "  build:\n"
                f"    command: {LIB_BUILD}\n"
                "    inputs: [src/**]\n"
                "    outputs: [build/**]\n" + ("" if lib_cache else "    cache: false\n")
            ),
            "lib/src/x.c": "int x = 1;\n",
            "app/haz.yml": (
                "tasks:\n"
                "  link:\n"
                f"    command: {APP_LINK}\n"
                "    inputs: [src/**]\n"
                "    outputs: [out/**]\n"
                "    deps: [lib:build]\n"
            ),
            "app/src/main.c": "int main;\n",
        }
    )


def _run(haz: HazRunner, root: Path, *extra: str) -> Result:
    result = haz("run", "app:link", "--output", "buffered", *extra, cwd=root)
    assert result.code == 0, result.stderr
    return result


def test_dependant_reruns_when_its_predecessor_s_outputs_changed(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    """CACHE-007 rev 1: libx.a changed (same stdout/stderr) → app:link re-runs and links it."""
    root = _workspace(make_workspace)
    first = _run(haz, root)
    assert first.sources() == {"app:link": "fresh", "lib:build": "fresh"}
    assert (root / "app/out/app").read_text() == "int main;\nint x = 1;\n"

    (root / "lib/src/x.c").write_text("int x = 2;\n")
    second = _run(haz, root)
    assert second.sources() == {"app:link": "fresh", "lib:build": "fresh"}
    assert second.task("app:link")["key"] != first.task("app:link")["key"]
    assert (root / "app/out/app").read_text() == "int main;\nint x = 2;\n"

    # back to the first source: both entries exist, and the restored app matches libx.a again
    (root / "lib/src/x.c").write_text("int x = 1;\n")
    third = _run(haz, root)
    assert third.sources() == {"app:link": "local-cache", "lib:build": "local-cache"}
    assert third.task("app:link")["key"] == first.task("app:link")["key"]
    assert (root / "app/out/app").read_text() == "int main;\nint x = 1;\n"


def test_byte_identical_predecessor_outputs_still_let_the_dependant_hit(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    """CACHE-007: lib re-runs (its input changed) but rebuilds the same libx.a: app:link hits."""
    root = _workspace(make_workspace)
    first = _run(haz, root)
    (root / "lib/src/x.c").write_text("// a comment the build drops\nint x = 1;\n")
    second = _run(haz, root)
    assert second.sources() == {"app:link": "local-cache", "lib:build": "fresh"}
    assert second.task("lib:build")["key"] != first.task("lib:build")["key"]
    assert second.task("app:link")["key"] == first.task("app:link")["key"]


def test_predecessor_that_is_not_cached_contributes_the_files_it_left(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    """CACHE-007/018: a ``cache: false`` predecessor always runs; its outputs digest is hashed
    from the files its output patterns match, so identical outputs hit and changed ones run."""
    root = _workspace(make_workspace, lib_cache=False)
    first = _run(haz, root)
    assert first.sources() == {"app:link": "fresh", "lib:build": "fresh"}
    second = _run(haz, root)
    assert second.sources() == {"app:link": "local-cache", "lib:build": "fresh"}
    (root / "lib/src/x.c").write_text("int x = 3;\n")
    third = _run(haz, root)
    assert third.sources() == {"app:link": "fresh", "lib:build": "fresh"}
    assert (root / "app/out/app").read_text() == "int main;\nint x = 3;\n"


def test_stored_and_unstored_predecessor_runs_give_the_same_outputs_digest(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    """CACHE-007: the digest taken from a stored manifest equals the one hashed from the
    workspace when the run is not stored (``--no-cache`` here), byte for byte: the dependant's
    key is the same either way."""
    root = _workspace(make_workspace)
    stored = _run(haz, root)
    unstored = _run(haz, root, "--no-cache")
    assert unstored.sources() == {"app:link": "fresh", "lib:build": "fresh"}
    assert unstored.task("app:link")["key"] == stored.task("app:link")["key"]


def test_why_names_the_predecessor_whose_outputs_changed(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    """SPEC §5 ``haz why``: a miss caused by a predecessor's changed outputs says so."""
    root = _workspace(make_workspace)
    _run(haz, root)
    (root / "lib/src/x.c").write_text("int x = 2;\n")
    result = haz("run", "lib:build", "--output", "buffered", cwd=root)
    assert result.code == 0, result.stderr
    why = haz("why", "app:link", cwd=root)
    assert why.code == 0, why.stderr
    assert "lookup: miss-no-entry" in why.out
    assert "predecessor lib:build: outputs changed" in why.out
    assert "stdout" not in why.out.split("what changed", 1)[1]
