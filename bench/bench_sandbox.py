"""Materialising a sandbox's inputs: copies (the sandbox's way) against hard links.

Two input sets, written once under ``bench/.work/sandbox`` as an input cache would hold them
(read-only files named by digest, in the page cache afterwards):
* 1,000 files of 4 KiB, in 20 directories;
* one 256 MiB file.

Each is materialised into a fresh sandbox directory with
:func:`hazremote.execute.sandbox.materialise_inputs`, copying (``FICLONE`` where the file system
shares extents, else ``copy_file_range``) and hard-linking. Prints the median of 9 rounds for
each and the ratio copy / link. Sandboxes are removed only at the end (ext4 pays for inodes
deleted moments ago, which would measure the deletion).
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import median_seconds, work_dir
from hazremote.domain.digest import Digest, digest_bytes
from hazremote.domain.model import HashName
from hazremote.execute.sandbox import SandboxInput, materialise_inputs

KIB = 1 << 10
MIB = 1 << 20
H = HashName.SHA256


class Store:
    """An input source over read-only files named by digest (an input cache's layout)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True)

    def put(self, data: bytes) -> Digest:
        digest = digest_bytes(H, data)
        path = self.root / digest.hex
        if not path.exists():
            path.write_bytes(data)
            os.chmod(path, 0o444)
        return digest

    def locate(self, file: SandboxInput) -> Path | None:
        return self.root / file.digest.hex


def measure(name: str, work: Path, files: list[SandboxInput], store: Store) -> None:
    counter = itertools.count()
    medians: dict[str, float] = {}
    for mode in ("copy", "link"):
        target: list[Path] = []

        def setup(mode: str = mode, target: list[Path] = target) -> None:
            path = work / f"sb-{name}-{mode}-{next(counter)}"
            path.mkdir()
            target[:] = [path]

        def run(mode: str = mode, target: list[Path] = target) -> None:
            materialise_inputs(target[0], files, store, link=mode == "link")

        medians[mode] = median_seconds(run, runs=9, setup=setup)
    print(
        f"{name:>16}: copy {medians['copy'] * 1e3:8.1f} ms   link {medians['link'] * 1e3:8.1f} ms"
        f"   copy/link {medians['copy'] / medians['link']:6.1f}x"
    )


def main() -> None:
    work = work_dir("sandbox")
    store = Store(work / "cache")
    small = []
    for i in range(1000):
        data = i.to_bytes(4, "big") * KIB  # 4 KiB, distinct
        small.append(
            SandboxInput(path=f"src/d{i % 20}/f{i}.c", digest=store.put(data), size=len(data))
        )
    big_data = os.urandom(256 * MIB)
    big = [SandboxInput(path="data/big.bin", digest=store.put(big_data), size=len(big_data))]
    del big_data
    measure("1,000 x 4 KiB", work, small, store)
    measure("1 x 256 MiB", work, big, store)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
