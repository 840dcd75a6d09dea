"""``haz run`` against Turborepo on the same synthetic monorepo (issue 4).

For N = 200 and N = 1,000 packages (10 source files each, a random DAG, one ``build`` task per
package that writes one output and prints a few lines — see ``bench/synthetic.py``) this
measures, as medians of ``--runs`` runs each:

* cold run (empty cache, no outputs),
* fully cached replay (nothing changed),
* replay after deleting every output (moved aside, deleted after the scenario: see
  ``bench._util.Trash``),
* one-file incremental change (one mid-graph package's source edited),

for ``haz`` and for Turborepo (``npm install turbo`` into ``bench/.work``), and prints the ratio
haz / turbo. Target: the fully cached replay of N = 1,000 no slower than Turborepo (ratio <= 1).

Turborepo runs each task through ``npm run``, so its cold runs take minutes at N = 1,000;
``--turbo-cold-runs`` (default 1) bounds them. ``--sizes 200`` runs one size only.
Also prints haz's per-task overhead of a cache hit: the marginal cost of a replay between the
two sizes, (replay(N2) - replay(N1)) / (N2 - N1), which cancels start-up costs.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import WORK, Trash, work_dir
from bench.synthetic import write_synthetic

HAZ = str(Path(sys.executable).parent / "haz")
TURBO_HOME = WORK / "turbo-install"
# An installed haz has byte-compiled modules; a session with PYTHONDONTWRITEBYTECODE set would
# otherwise recompile every module on every run (~60 ms) and measure that instead.
ENV = {
    **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    "TURBO_TELEMETRY_DISABLED": "1",
    "DO_NOT_TRACK": "1",
    "NO_COLOR": "1",
}


def ensure_turbo() -> Path | None:
    binary = TURBO_HOME / "node_modules" / ".bin" / "turbo"
    if binary.exists():
        return binary
    if shutil.which("npm") is None:
        return None
    TURBO_HOME.mkdir(parents=True, exist_ok=True)
    subprocess.run(["npm", "init", "-y"], cwd=TURBO_HOME, capture_output=True, check=True)
    subprocess.run(["npm", "install", "turbo@2"], cwd=TURBO_HOME, capture_output=True, check=True)
    return binary if binary.exists() else None


def timed(argv: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, env=ENV, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{argv} failed:\n{result.stderr.decode()[-2000:]}")
    return elapsed


def median_of(runs: int, setup: Callable[[], None], argv: list[str], cwd: Path) -> float:
    samples = []
    for _ in range(runs):
        setup()
        # Flush what earlier runs left dirty (a cold run writes thousands of files): its
        # writeback would otherwise slow the metadata work of whichever run comes next.
        os.sync()
        samples.append(timed(argv, cwd))
    return statistics.median(samples)


def remove_outputs(root: Path) -> None:
    for dist in (root / "packages").glob("*/dist"):
        shutil.rmtree(dist)


def set_outputs_aside(trash: Trash, root: Path) -> None:
    """Outputs "deleted" for a replay are moved aside (see :class:`bench._util.Trash`)."""
    trash.take_outputs(root)


class Tool:
    def __init__(self, name: str, argv: list[str], cache_dirs: list[str]) -> None:
        self.name = name
        self.argv = argv
        self.cache_dirs = cache_dirs

    def clear(self, root: Path) -> None:
        for rel in self.cache_dirs:
            shutil.rmtree(root / rel, ignore_errors=True)
        remove_outputs(root)


def measure(tool: Tool, root: Path, *, runs: int, cold_runs: int, edit: Path) -> dict[str, float]:
    figures: dict[str, float] = {}
    figures["cold"] = median_of(cold_runs, lambda: tool.clear(root), tool.argv, root)
    figures["replay"] = median_of(runs, lambda: None, tool.argv, root)
    trash = Trash(root.parent / f"{root.name}-trash")
    figures["replay, outputs deleted"] = median_of(
        runs, lambda: set_outputs_aside(trash, root), tool.argv, root
    )
    trash.empty()
    original = edit.read_text()
    counter = iter(range(10**6))

    def touch() -> None:
        edit.write_text(original + f"// edit {next(counter)}\n")

    figures["one-file change"] = median_of(runs, touch, tool.argv, root)
    edit.write_text(original)
    timed(tool.argv, root)  # leave the caches warm and consistent
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--turbo-cold-runs", type=int, default=1)
    parser.add_argument("--no-turbo", action="store_true")
    parser.add_argument(
        "--no-inputs-key",
        action="store_true",
        help="tasks without `inputs` (PATH default inputs: the project's git files)",
    )
    args = parser.parse_args()
    turbo = None if args.no_turbo else ensure_turbo()
    for package in ("hazremote", "cache_service", "worker"):
        compileall.compile_dir(Path(__file__).resolve().parent.parent / package, quiet=1)
    replays: dict[int, float] = {}
    for size in args.sizes:
        root = work_dir(f"run-{size}{'-noinputs' if args.no_inputs_key else ''}")
        write_synthetic(root, packages=size, inputs_key=not args.no_inputs_key)
        # Turborepo hashes through git's index: commit the sources, as in a real checkout
        # (with everything untracked it hashes files itself and replays ~2.5x slower).
        git = ["git", "-c", "user.email=bench@haz", "-c", "user.name=bench"]
        subprocess.run([*git, "init", "-q"], cwd=root, check=True)
        subprocess.run([*git, "add", "-A"], cwd=root, check=True)
        subprocess.run([*git, "commit", "-qm", "synthetic"], cwd=root, check=True)
        edit = root / "packages" / f"pkg{size // 2:04d}" / "src" / "m0.ts"
        haz = Tool("haz", [HAZ, "run", "--workspace"], [".haz/cache", ".haz/state"])
        results = {"haz": measure(haz, root, runs=args.runs, cold_runs=args.runs, edit=edit)}
        if turbo is not None:
            (root / "node_modules").symlink_to(TURBO_HOME / "node_modules")
            tool = Tool("turbo", [str(turbo), "run", "build"], [".turbo"])
            results["turbo"] = measure(
                tool, root, runs=args.runs, cold_runs=args.turbo_cold_runs, edit=edit
            )
        print(f"\nN = {size} packages ({size} build tasks), median of {args.runs} runs")
        print(f"{'scenario':<26}{'haz':>10}{'turbo':>10}{'haz/turbo':>11}")
        for scenario, seconds in results["haz"].items():
            line = f"{scenario:<26}{seconds:>9.3f}s"
            if "turbo" in results:
                other = results["turbo"][scenario]
                line += f"{other:>9.3f}s{seconds / other:>10.2f}x"
            print(line)
        replays[size] = results["haz"]["replay"]
    if len(replays) >= 2:
        (n1, t1), (n2, t2) = sorted(replays.items())[0], sorted(replays.items())[-1]
        per_task_ms = (t2 - t1) / (n2 - n1) * 1000
        print(f"\nhaz cache-hit overhead per task (marginal, N={n1}..{n2}): {per_task_ms:.2f} ms")


if __name__ == "__main__":
    main()
