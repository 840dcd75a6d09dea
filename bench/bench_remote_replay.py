"""Remote-hit replay against local-hit replay, haz and Turborepo alike (issue 5).

For N = 200 and N = 1,000 packages of the synthetic monorepo (``bench/synthetic.py``) this
measures, as medians of ``--runs`` runs each:

* haz: a real ``haz-cache-service`` subprocess (file storage in a temporary directory) is filled
  by one ``haz run --workspace --remote grpc://...`` in a first clone; a SECOND clone at another
  path then times
  (a) the remote replay — ``.haz/cache`` and every ``packages/*/dist`` deleted, every task must
      be a ``remote-cache`` hit (checked through ``--summary-json``; anything else aborts), and
  (b) the local replay — the same command again, every task a ``local-cache`` hit;
* Turborepo: a ``turborepo-remote-cache`` server (npm, local storage) is filled by one
  ``turbo run build`` in clone 1; clone 2 then times the remote replay (``.turbo`` and every
  ``dist`` deleted; the output must say every task was cached) and the local replay.

The two tools' rounds alternate (haz remote + local, then Turborepo remote + local), with a
``sync`` before each, so drift of the machine hits both alike. Between rounds a clone's cache
and outputs are moved aside, not deleted (see :class:`Trash`: on ext4, creating files right
after thousands were deleted costs kernel CPU in the inode allocator, ``recently_deleted`` in
``perf``, which grew round after round and measured the deletion rather than the replay).
``--work-root /dev/shm`` puts the clones on tmpfs, leaving the disk out altogether.

Prints one table: N, the four medians and haz/turbo for the remote replay (target <= 1.0).
Turborepo runs each task through ``npm run``, so its one cold populating run at N = 1,000 takes
minutes; its remote cache's storage is therefore kept in ``bench/.work`` and reused by later
invocations (content-keyed; repopulated when ``synthetic.py`` or the Turborepo install
change). ``--no-turbo`` measures haz alone; ``--sizes 200`` one size. Every started server
is stopped by its PID.

By default any bad haz attempt aborts. ``--retries K`` discards up to K attempts that crashed
or were not all hits, and ``--accept-misses`` keeps remote replays in which some tasks ran
``fresh`` instead; both are reported on stderr and under the table, never silently.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import WORK, Trash
from bench.synthetic import write_synthetic

BIN = Path(sys.executable).parent
HAZ = str(BIN / "haz")
HAZ_SERVICE = str(BIN / "haz-cache-service")
TURBO = WORK / "turbo-install" / "node_modules" / ".bin" / "turbo"
TRC_HOME = WORK / "trc-install"
TRC_CLI = TRC_HOME / "node_modules" / "turborepo-remote-cache" / "dist" / "cli.js"
TURBO_TOKEN = "bench-token"
TURBO_TEAM = "bench"
# An installed haz has byte-compiled modules; with PYTHONDONTWRITEBYTECODE set every run would
# recompile them (~60 ms) and the figure would measure that instead.
ENV = {
    **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    "TURBO_TELEMETRY_DISABLED": "1",
    "DO_NOT_TRACK": "1",
    "NO_COLOR": "1",
}
LISTENING = re.compile(r"listening on (\S+):(\d+)")


class BadRun(Exception):
    """A measured run failed or was not the replay it claims to be."""


def run(argv: list[str], cwd: Path) -> tuple[float, str]:
    """Run ``argv`` in ``cwd``; wall seconds and stdout. A non-zero exit raises BadRun."""
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, env=ENV, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise BadRun(
            f"{argv} failed ({result.returncode}):\n{result.stdout.decode()[-2000:]}"
            f"\n{result.stderr.decode()[-2000:]}"
        )
    return elapsed, result.stdout.decode()


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop one started server by its PID: SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def haz_service(storage: Path, log: Path) -> Iterator[str]:
    """A ``haz-cache-service`` on a free port; yields ``grpc://HOST:PORT``.

    Its stderr goes to ``log`` (a file, so a chatty service never blocks on a full pipe), which
    is polled for the ``listening on HOST:PORT`` line.
    """
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [HAZ_SERVICE, "--listen", "127.0.0.1:0", "--storage", str(storage)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        deadline = time.monotonic() + 30
        while (match := LISTENING.search(log.read_text(errors="replace"))) is None:
            if proc.poll() is not None:
                raise SystemExit(
                    f"haz-cache-service exited ({proc.returncode}):\n{log.read_text()}"
                )
            if time.monotonic() > deadline:
                raise SystemExit("haz-cache-service did not report its address within 30 s")
            time.sleep(0.05)
        yield f"grpc://{match.group(1)}:{match.group(2)}"
    finally:
        stop(proc)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def turbo_cache_server(storage: Path) -> Iterator[str]:
    """A ``turborepo-remote-cache`` server with local storage; yields its base URL."""
    port = free_port()
    env = {
        **ENV,
        "STORAGE_PROVIDER": "local",
        "STORAGE_PATH": str(storage),
        "STORAGE_PATH_USE_TMP_FOLDER": "false",
        "TURBO_TOKEN": TURBO_TOKEN,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "LOG_LEVEL": "warn",
        "ENABLE_STATUS_LOG": "false",
    }
    proc = subprocess.Popen(
        ["node", str(TRC_CLI)],
        cwd=TRC_HOME,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"turborepo-remote-cache exited ({proc.returncode})")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("turborepo-remote-cache did not listen within 30 s") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def ensure_trc() -> None:
    if TRC_CLI.exists():
        return
    TRC_HOME.mkdir(parents=True, exist_ok=True)
    subprocess.run(["npm", "init", "-y"], cwd=TRC_HOME, capture_output=True, check=True)
    subprocess.run(
        ["npm", "install", "turborepo-remote-cache"], cwd=TRC_HOME, capture_output=True, check=True
    )


def clone(root: Path, size: int, *, turbo: bool) -> None:
    """One clone of the synthetic monorepo (same seed, so same contents at another path)."""
    write_synthetic(root, packages=size)
    # Turborepo hashes through git's index: commit the sources, as in a real checkout.
    git = ["git", "-c", "user.email=bench@haz", "-c", "user.name=bench"]
    subprocess.run([*git, "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "synthetic"], cwd=root, check=True)
    if turbo:
        (root / "node_modules").symlink_to(TURBO.parent.parent)


def check_haz_sources(summary: Path, expected: str, size: int, *, tolerate: bool = False) -> int:
    """Every task of the run came from ``expected`` (RC-008 / EXEC-041), else BadRun.

    With ``tolerate``, tasks that ran ``fresh`` instead are allowed and counted (returned).
    """
    tasks = json.loads(summary.read_text())["tasks"]
    sources: dict[str | None, int] = {}
    for task in tasks:
        sources[task["source"]] = sources.get(task["source"], 0) + 1
    fresh = sources.get("fresh", 0) if tolerate else 0
    if len(tasks) != size or sources.get(expected, 0) + fresh != size:
        raise BadRun(f"haz replay expected {size} x {expected!r}, got {sources}")
    if fresh:
        print(f"  tolerated: {sources}", file=sys.stderr, flush=True)
    return fresh


def check_turbo_cached(stdout: str, size: int) -> None:
    """Turbo's run summary line says every task was a cache hit, else BadRun."""
    match = re.search(r"Cached:\s+(\d+) cached, (\d+) total", stdout)
    if match is None or match.groups() != (str(size), str(size)):
        raise BadRun(f"turbo replay not fully cached: {match.group(0) if match else stdout}")


def fresh(root: Path, name: str) -> Path:
    """An empty directory ``root/name`` (removed first if present)."""
    path = root / name
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


@contextmanager
def haz_side(
    size: int, scratch: Path, root: Path, *, trash: Trash, retries: int, accept_misses: bool
) -> Iterator[Callable[[], tuple[float, float, int]]]:
    """A filled ``haz-cache-service`` and a second clone; yields one measuring round.

    A round times the remote replay (``.haz/cache`` and every ``dist`` deleted, every task
    must be a ``remote-cache`` hit) and then the local replay; it returns both and how many
    tasks ran fresh (only with ``accept_misses``). Bad attempts are retried up to
    ``retries`` times in all, each reported on stderr.
    """
    first, second = fresh(root, f"remote-{size}-haz-a"), fresh(root, f"remote-{size}-haz-b")
    clone(first, size, turbo=False)
    clone(second, size, turbo=False)
    summary = scratch / "summary.json"
    bad = 0

    def failed(what: str, error: BadRun) -> None:
        nonlocal bad
        bad += 1
        print(f"N = {size}: BAD haz {what} {bad}: {error}", file=sys.stderr, flush=True)
        if bad > retries:
            raise SystemExit(f"haz: {bad} bad attempts (--retries {retries})") from error

    with haz_service(scratch / "haz-store", scratch / "haz-service.log") as url:
        argv = [HAZ, "run", "--workspace", "--remote", url, "--summary-json", str(summary)]
        while True:  # populate the service; a crashed attempt is rerun (the rest then runs)
            try:
                run(argv, first)
                break
            except BadRun as error:
                failed("populate", error)

        def round_() -> tuple[float, float, int]:
            while True:
                trash.take(second / ".haz" / "cache")
                trash.take_outputs(second)
                summary.unlink(missing_ok=True)
                subprocess.run(["sync"], check=True)
                try:
                    remote_s = run(argv, second)[0]
                    missed = check_haz_sources(
                        summary, "remote-cache", size, tolerate=accept_misses
                    )
                    local_s = run(argv, second)[0]
                    check_haz_sources(summary, "local-cache", size)
                except BadRun as error:
                    failed("attempt", error)
                    continue
                print(
                    f"  haz N = {size}: remote {remote_s:.3f}s, local {local_s:.3f}s",
                    file=sys.stderr,
                    flush=True,
                )
                return remote_s, local_s, missed

        yield round_
    if bad:
        print(f"N = {size}: {bad} bad haz attempt(s) discarded (see stderr)")


@contextmanager
def turbo_side(
    size: int, root: Path, *, trash: Trash
) -> Iterator[Callable[[], tuple[float, float]]]:
    """A filled ``turborepo-remote-cache`` and a clone; yields one measuring round.

    The remote cache's storage is kept in ``bench/.work`` between invocations: populating it
    takes minutes (every task through ``npm run``) and its entries are keyed by content, so
    it is reused while ``bench/synthetic.py`` and the Turborepo install are unchanged.
    """
    second = fresh(root, f"remote-{size}-turbo-b")
    clone(second, size, turbo=True)
    store = WORK / f"remote-{size}-trc-store"
    marker = store / ".populated-by"
    stamp = hashlib.sha256(
        Path(__file__).with_name("synthetic.py").read_bytes()
        + (TURBO.resolve().parent.parent / "package.json").read_bytes()
    ).hexdigest()
    populated = marker.exists() and marker.read_text() == stamp
    if not populated:
        shutil.rmtree(store, ignore_errors=True)
        store.mkdir(parents=True)
    with turbo_cache_server(store) as api:
        argv = [
            str(TURBO),
            "run",
            "build",
            f"--api={api}",
            f"--token={TURBO_TOKEN}",
            f"--team={TURBO_TEAM}",
        ]
        if not populated:
            first = fresh(root, f"remote-{size}-turbo-a")
            clone(first, size, turbo=True)
            run(argv, first)
            marker.write_text(stamp)

        def round_() -> tuple[float, float]:
            trash.take(second / ".turbo")
            trash.take_outputs(second)
            subprocess.run(["sync"], check=True)
            remote_s, stdout = run(argv, second)
            check_turbo_cached(stdout, size)
            local_s, stdout = run(argv, second)
            check_turbo_cached(stdout, size)
            print(
                f"  turbo N = {size}: remote {remote_s:.3f}s, local {local_s:.3f}s",
                file=sys.stderr,
                flush=True,
            )
            return remote_s, local_s

        yield round_


def measure(
    size: int, runs: int, root: Path, *, turbo: bool, retries: int, accept_misses: bool
) -> tuple[tuple[float, float, int], tuple[float, float] | None]:
    """Medians of haz (remote, local, tasks run fresh) and Turborepo (remote, local).

    The two tools' rounds alternate, so drift of the machine (or of the file system, which
    gets slower at creating files right after thousands were deleted) hits both alike.
    """
    haz: list[tuple[float, float, int]] = []
    other: list[tuple[float, float]] = []
    trash = Trash(root / f"remote-{size}-trash")
    trash.empty()
    with (
        tempfile.TemporaryDirectory(prefix="haz-remote-bench-") as tmp,
        haz_side(
            size, Path(tmp), root, trash=trash, retries=retries, accept_misses=accept_misses
        ) as hz,
        turbo_side(size, root, trash=trash) if turbo else nullcontext(None) as tb,
    ):
        for _ in range(runs):
            haz.append(hz())
            if tb is not None:
                other.append(tb())
    trash.empty()
    haz_median = (
        statistics.median(h[0] for h in haz),
        statistics.median(h[1] for h in haz),
        sum(h[2] for h in haz),
    )
    if not other:
        return haz_median, None
    return haz_median, (
        statistics.median(t[0] for t in other),
        statistics.median(t[1] for t in other),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-turbo", action="store_true")
    parser.add_argument(
        "--work-root",
        type=Path,
        help="where the clones go (default bench/.work); e.g. /dev/shm to leave the disk out",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=0,
        help="discard up to this many failed or not-all-hit haz attempts (each is reported)",
    )
    parser.add_argument(
        "--accept-misses",
        action="store_true",
        help="keep haz remote replays in which some tasks ran fresh (counted and reported)",
    )
    args = parser.parse_args()
    turbo = not args.no_turbo and TURBO.exists() and shutil.which("node") is not None
    if turbo:
        ensure_trc()
    for package in ("hazremote", "cache_service"):
        compileall.compile_dir(Path(__file__).resolve().parent.parent / package, quiet=1)
    root = args.work_root.resolve() if args.work_root else WORK
    print(f"workspaces under {root}", file=sys.stderr, flush=True)
    rows = []
    for size in args.sizes:
        try:
            haz, other = measure(
                size,
                args.runs,
                root,
                turbo=turbo,
                retries=args.retries,
                accept_misses=args.accept_misses,
            )
        except BadRun as error:
            raise SystemExit(str(error)) from error
        rows.append((size, haz, other))
    print(f"\nremote-hit vs local-hit replay, median of {args.runs} runs (seconds), in {root}")
    header = ["N", "haz remote", "haz local", "turbo remote", "turbo local", "haz/turbo remote"]
    print("".join(f"{h:>17}" for h in header))
    for size, (haz_remote, haz_local, _), other in rows:
        line = f"{size:>17}{haz_remote:>16.3f}s{haz_local:>16.3f}s"
        if other is not None:
            line += f"{other[0]:>16.3f}s{other[1]:>16.3f}s{haz_remote / other[0]:>16.2f}x"
        print(line)
    for size, (_, _, misses), _ in rows:
        if misses:
            print(f"N = {size}: {misses} task(s) ran fresh instead of a remote hit (kept)")


if __name__ == "__main__":
    main()
