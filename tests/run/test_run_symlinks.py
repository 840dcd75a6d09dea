"""``haz run`` end to end: symbolic links among outputs replay as links (issue 12).

Spec coverage: CACHE-017/019/023 (the chain ``libx.so -> libx.so.1 -> libx.so.1.7`` is stored
as one file and two links and comes back as links with the same bytes; a replay over the
run's own links leaves them alone), SEC-001 (a link leaving the workspace is stored as the
copy it resolved to, so a hit never recreates a link to the outside). A dangling link is no
output (as before issue 12): a hit does not recreate it.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.run.conftest import HazRunner, WorkspaceMaker, py

LINK = """
import os, pathlib, sys
build = pathlib.Path('build'); build.mkdir(exist_ok=True)
(build / 'libx.so.1.7').write_bytes(pathlib.Path('src/x.c').read_bytes() * 500)
links = [('libx.so.1', 'libx.so.1.7'), ('libx.so', 'libx.so.1')] + [
    tuple(arg.split('=', 1)) for arg in sys.argv[1:]]
for name, text in links:
    path = build / name
    if os.path.lexists(path):
        path.unlink()
    os.symlink(text, path)
print('linked', len(links))
"""


def chain_workspace(
    make_workspace: WorkspaceMaker, *extra_links: str, name: str = "ws", outputs: str = "[build/**]"
) -> Path:
    """Project ``lib`` whose ``build`` task writes the chain (plus ``name=text`` links)."""
    command = py(LINK)[:-1] + "".join(f', "{link}"' for link in extra_links) + "]"
    return make_workspace(
        {
            ".haz/workspace.yml": "projects: [lib]\n",
            "lib/haz.yml": (
                "tasks:\n"
                "  build:\n"
                f"    command: {command}\n"
                "    inputs: [src/**]\n"
                f"    outputs: {outputs}\n"
            ),
            "lib/src/x.c": "int x(void) { return 17; }\n",
        },
        name=name,
    )


def assert_chain(build: Path) -> None:
    assert os.readlink(build / "libx.so") == "libx.so.1"
    assert os.readlink(build / "libx.so.1") == "libx.so.1.7"
    assert not (build / "libx.so.1.7").is_symlink()
    assert (build / "libx.so").read_bytes() == b"int x(void) { return 17; }\n" * 500


def wipe(build: Path) -> None:
    for path in build.iterdir():
        path.unlink()
    build.rmdir()


def test_library_symlinks_come_back_as_links_from_the_local_cache(
    haz: HazRunner, make_workspace: WorkspaceMaker
) -> None:
    """CACHE-019/023: a hit recreates the chain as links, not three copies."""
    root = chain_workspace(make_workspace)
    build = root / "lib" / "build"
    first = haz("run", "lib:build", "--output", "buffered", cwd=root)
    assert first.code == 0, first.stderr
    assert first.sources() == {"lib:build": "fresh"}
    assert_chain(build)
    blobs = list((root / ".haz" / "cache").glob("*/*/outputs/*"))
    assert len(blobs) == 1  # one file's bytes, however many links name it

    wipe(build)
    second = haz("run", "lib:build", "--output", "buffered", cwd=root)
    assert second.code == 0, second.stderr
    assert second.sources() == {"lib:build": "local-cache"}
    assert second.stdout == first.stdout
    assert_chain(build)

    links = {name: os.lstat(build / name).st_ino for name in ("libx.so", "libx.so.1")}
    third = haz("run", "lib:build", cwd=root)
    assert third.code == 0, third.stderr
    assert third.sources() == {"lib:build": "local-cache"}
    assert {name: os.lstat(build / name).st_ino for name in links} == links  # left alone


def test_links_leaving_the_workspace_come_back_as_copies_and_dangling_ones_not_at_all(
    haz: HazRunner, make_workspace: WorkspaceMaker, tmp_path: Path
) -> None:
    """SEC-001/CACHE-017: an absolute link and a '..' link to a file outside the workspace are
    stored as that file's bytes; a dangling link is not an output."""
    outside = tmp_path / "system-lib.so"
    outside.write_bytes(b"outside the workspace\n")
    root = chain_workspace(
        make_workspace,
        f"abs.so={outside}",
        f"up.so={os.path.relpath(outside, tmp_path / 'ws' / 'lib' / 'build')}",
        "dangling.so=no-such-file",
    )
    build = root / "lib" / "build"
    first = haz("run", "lib:build", cwd=root)
    assert first.code == 0, first.stderr
    assert (build / "up.so").read_bytes() == b"outside the workspace\n"  # the test's premise
    wipe(build)

    second = haz("run", "lib:build", cwd=root)
    assert second.code == 0, second.stderr
    assert second.sources() == {"lib:build": "local-cache"}
    assert_chain(build)
    for name in ("abs.so", "up.so"):
        assert not (build / name).is_symlink()
        assert (build / name).read_bytes() == b"outside the workspace\n"
    assert not os.path.lexists(build / "dangling.so")
    assert outside.read_bytes() == b"outside the workspace\n"
