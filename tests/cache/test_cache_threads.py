"""One LocalCache used from many threads at once, as the executor's I/O pool does.

Regression: a zstd compression context shared by threads corrupted frames ("Src size is
incorrect") and crashed the interpreter. Every entry stored concurrently must be a valid,
restorable hit (CACHE-014..019).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hazremote.cache import LocalCache, OutputFile
from tests.cache.cachekit import components, make_key, patterns

THREADS = 8
ENTRIES = 48


def test_concurrent_stores_and_restores_from_many_threads(
    tmp_path: Path, make_cache: Callable[..., LocalCache]
) -> None:
    cache = make_cache()
    sources = tmp_path / "src"
    sources.mkdir()
    workspace = tmp_path / "ws"
    workspace.mkdir()

    def store(index: int) -> bytes:
        # Compressible and above the 4 KiB threshold, so every store compresses.
        body = (f"export const v{index} = {index};\n" * 2000).encode() + os.urandom(64)
        out = sources / f"out{index}"
        out.write_bytes(body)
        stdout = sources / f"stdout{index}"
        stdout.write_bytes(b"log line\n" * 1000)
        stderr = sources / f"stderr{index}"
        stderr.write_bytes(b"")
        result = cache.store(
            key=make_key(f"entry-{index}"),
            components=components(),
            stdout=stdout,
            stderr=stderr,
            outputs=[OutputFile(path=f"/dist/{index}.js", source=out)],
            duration_ms=1,
            producer="test",
        )
        assert result.ok, result.warning
        return body

    with ThreadPoolExecutor(THREADS) as pool:
        bodies = list(pool.map(store, range(ENTRIES)))

    def restore(index: int) -> bool:
        found = cache.lookup(make_key(f"entry-{index}"))
        assert found.manifest is not None, found.detail
        restored = cache.restore(
            found.manifest,
            workspace_root=workspace,
            output_patterns=patterns("/dist/**"),
            stdout_sink=lambda _: None,
            stderr_sink=lambda _: None,
        )
        assert restored.ok, (restored.status, restored.message)
        return True

    with ThreadPoolExecutor(THREADS) as pool:
        assert all(pool.map(restore, range(ENTRIES)))
    for index, body in enumerate(bodies):
        assert (workspace / "dist" / f"{index}.js").read_bytes() == body
