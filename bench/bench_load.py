"""Load + validate a generated workspace of 1,000 projects x 5 tasks (issue 2).

Target: median under 1.0 s on the 2-core machine, for discovery + YAML + validation + graph.
Also prints ``haz --help`` start-up time (target < 150 ms) against a bare ``python -c pass``.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import median_seconds, work_dir
from tests.support.workspaces import write_generated_workspace


def main() -> None:
    root = work_dir("load")
    write_generated_workspace(root, projects=1000, tasks_per_project=5, rng=random.Random(7))

    from hazremote.config import load_workspace
    from hazremote.graph import build_graph

    loaded = {}

    def load() -> None:
        loaded["ws"] = load_workspace(root)

    def load_and_graph() -> None:
        build_graph(load_workspace(root))

    t_load = median_seconds(load, runs=7)
    ws = loaded["ws"]
    t_graph = median_seconds(lambda: build_graph(ws), runs=7)
    t_total = median_seconds(load_and_graph, runs=7)
    tasks = sum(len(p.tasks) for p in ws.projects)
    print(f"workspace: {len(ws.projects)} projects, {tasks} tasks")
    print(f"load (discovery + YAML + validation): median {t_load * 1000:.0f} ms")
    print(f"graph build:                          median {t_graph * 1000:.0f} ms")
    print(
        f"load + graph:                         median {t_total * 1000:.0f} ms  (target < 1000 ms)"
    )

    haz = Path(sys.executable).parent / "haz"
    t_help = median_seconds(
        lambda: subprocess.run([str(haz), "--help"], capture_output=True, check=True), runs=9
    )
    t_python = median_seconds(
        lambda: subprocess.run([sys.executable, "-c", "pass"], capture_output=True, check=True),
        runs=9,
    )
    print(
        f"haz --help: median {t_help * 1000:.0f} ms (bare python: {t_python * 1000:.0f} ms; "
        "target < 150 ms)"
    )


if __name__ == "__main__":
    main()
