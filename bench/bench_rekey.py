"""Re-keying a workspace: 1,000 tasks over 50,000 input files, warm and cold stat cache.

The tree: 1,000 projects, each with 49 source files under ``src/`` (three levels of
directories) and a ``package.json``; each project's ``build`` task has inputs
``[src/**, "!src/**/*.snap", package.json, /tsconfig.base.json]`` and outputs ``[dist/**]``
(so 50,000 distinct files plus one shared by every task).

* warm: a new ``KeyDeriver`` (as in a new ``haz run``) loads the persisted stat cache, resolves
  and hashes the inputs of all 1,000 tasks (``prefetch``) and derives their keys. Nothing is
  read. Target: median < 0.5 s.
* cold: the same with the stat cache file deleted (every file is read and hashed; the files
  are in the page cache).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import median_seconds, work_dir
from hazremote.domain.model import HashName, Task
from hazremote.keys.deriver import KeyDeriver
from hazremote.keys.fs import OsFilesystem
from hazremote.keys.statcache import DEFAULT_RACY_MARGIN_NS, StatCache, statcache_path
from tests.keys.keykit import make_task

PROJECTS = 1000
FILES_PER_PROJECT = 49  # + package.json = 50


def generate(root: Path) -> list[Task]:
    (root / ".haz").mkdir()
    (root / ".haz" / "workspace.yml").write_text("projects: [packages/*]\n")
    (root / "tsconfig.base.json").write_text('{"compilerOptions": {}}\n')
    tasks = []
    for p in range(PROJECTS):
        pdir = f"packages/p{p:04d}"
        base = root / pdir
        for i in range(FILES_PER_PROJECT):
            rel = f"src/m{i % 3}/s{i % 2}/f{i:02d}.ts"
            path = base / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"export const v{p}_{i} = {p * i};\n" * (1 + i % 20))
        (base / "package.json").write_text(f'{{"name": "p{p:04d}"}}\n')
        tasks.append(
            make_task(
                project=f"p{p:04d}",
                project_dir=pdir,
                inputs=("src/**", "!src/**/*.snap", "package.json", "/tsconfig.base.json"),
                outputs=("dist/**",),
            )
        )
    return tasks


def rekey(root: Path, tasks: list[Task]) -> int:
    """What a new run does for keys: load the stat cache, resolve, hash, frame, save."""
    with KeyDeriver.open(workspace_root=root, hash_name=HashName.BLAKE3, host_env={}) as deriver:
        errors = deriver.prefetch(tasks)
        assert not errors, errors
        keys = {deriver.derive(task).key for task in tasks}
    return len(keys)


def main() -> None:
    root = work_dir("rekey")
    start = time.perf_counter()
    tasks = generate(root)
    generated_at = time.time_ns()
    os.sync()  # let writeback finish now rather than compete with the measurements
    files = sum(1 for _ in root.rglob("*.ts")) + PROJECTS + 1
    print(f"generated {files} files, {len(tasks)} tasks in {time.perf_counter() - start:.1f} s")
    cache_file = Path(statcache_path(str(root), HashName.BLAKE3))

    def drop_cache() -> None:
        cache_file.unlink(missing_ok=True)

    # files younger than the racy margin are (correctly) never trusted: let the tree age first
    wait_s = (generated_at + DEFAULT_RACY_MARGIN_NS - time.time_ns()) / 1e9 + 0.05
    if wait_s > 0:
        time.sleep(wait_s)

    t_cold = median_seconds(lambda: rekey(root, tasks), runs=3, setup=drop_cache)
    assert rekey(root, tasks) == PROJECTS  # leaves a complete stat cache behind
    size = cache_file.stat().st_size
    load_s = median_seconds(
        lambda: StatCache.load(
            OsFilesystem(), str(cache_file), hash_name=HashName.BLAKE3, clock=time.time_ns
        ),
        runs=9,
    )
    # The floor of any stat-based approach, measured in the same rounds (other work may share
    # the machine): list every directory once and stat every file once, nothing else.
    directories = [d for d, _, _ in os.walk(root / "packages")]

    def floor() -> None:
        for d in directories:
            with os.scandir(d) as it:
                for entry in it:
                    if entry.is_file(follow_symlinks=False):
                        os.stat(entry.path)

    samples: dict[str, list[float]] = {"warm": [], "floor": []}
    for _ in range(9):
        for name, fn in (("warm", lambda: rekey(root, tasks)), ("floor", floor)):
            begin = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - begin)
    t_warm = statistics.median(samples["warm"])
    t_floor = statistics.median(samples["floor"])
    print(f"cpus: {os.cpu_count()}; load average {os.getloadavg()[0]:.2f}")
    print(f"stat cache: {size / 1e6:.1f} MB, load median {load_s * 1000:.1f} ms")
    print(f"cold re-key (no stat cache, reads every file): median {t_cold * 1000:.0f} ms")
    print(f"warm re-key (stat cache, nothing read):        median {t_warm * 1000:.0f} ms"
          "  (target < 500 ms)")  # fmt: skip
    print(f"  floor: scandir every dir + stat every file:  median {t_floor * 1000:.0f} ms")


if __name__ == "__main__":
    main()
