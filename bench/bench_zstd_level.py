"""zstd level for cache blobs at rest (CACHE-010..013): levels 1, 3 and 6 on build output.

The cache compresses each blob on its own (content-addressed), so the measurement is per file
on a generated tree that looks like build output: bundled/minified JS, pretty JS, TypeScript
declarations, source maps (JSON), object-file-like binaries, and already-compressed assets.
For each level it prints the ratio, compression and decompression throughput (medians), and
the same through the cache's own codec (hash + compress in one pass, tiny and incompressible
blobs stored raw), which is what a store actually pays.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zstandard

from bench._util import work_dir

LEVELS = (1, 3, 6)
WORDS = [
    "const",
    "let",
    "var",
    "function",
    "return",
    "import",
    "export",
    "default",
    "from",
    "async",
    "await",
    "class",
    "extends",
    "this",
    "new",
    "if",
    "else",
    "for",
    "while",
    "switch",
    "case",
    "break",
    "continue",
    "try",
    "catch",
    "finally",
    "throw",
    "typeof",
    "undefined",
    "null",
    "true",
    "false",
    "Promise",
    "resolve",
    "reject",
    "module",
    "require",
    "props",
    "state",
    "render",
    "useState",
    "useEffect",
    "component",
    "element",
    "document",
    "window",
    "console",
    "log",
    "error",
    "value",
    "index",
    "length",
    "push",
    "map",
    "filter",
    "reduce",
    "Object",
    "keys",
    "assign",
    "JSON",
    "stringify",
    "parse",
    "Array",
    "isArray",
]


def _vocabulary(rng: random.Random) -> list[str]:
    """A file's own identifiers: real code repeats a few dozen names over and over."""
    suffixes = ("", "", "Item", "List", "Id", "Value", "Handler", "State", "Config", "2")
    return [rng.choice(WORDS) + rng.choice(suffixes) for _ in range(40)]


def js_source(rng: random.Random, size: int) -> bytes:
    """Pretty, human-written-looking JavaScript."""
    names = _vocabulary(rng)
    templates = (
        "{i}const {a} = {b}.{c}({d});",
        "{i}if ({a} === {b}) {{",
        "{i}}}",
        "{i}return {a}.{b}((x) => x.{c});",
        '{i}import {{ {a}, {b} }} from "./{c}.js";',
        "{i}export function {a}({b}, {c}) {{",
        "{i}{a}.{b} = {n};",
        "{i}// {a} {b} {c} {d}",
    )
    lines: list[str] = []
    total = 0
    while total < size:
        line = rng.choice(templates).format(
            i="  " * rng.randrange(4),
            a=rng.choice(names),
            b=rng.choice(names),
            c=rng.choice(names),
            d=rng.choice(names),
            n=rng.randrange(10_000),
        )
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines).encode()[:size]


def js_minified(rng: random.Random, size: int) -> bytes:
    """A minified bundle: short names, no whitespace, long lines."""
    names = _vocabulary(rng)
    short = [a + b for a in "abcdefghijklmnopqrstuvwxyz" for b in ("", "e", "t", "n")]
    parts: list[str] = []
    total = 0
    while total < size:
        name = rng.choice(short)
        part = rng.choice(
            (
                f"function {name}(e,t){{return e.{rng.choice(names)}(t)}}",
                f"var {name}={rng.randrange(1 << 16)};",
                f'{name}.exports={{"{rng.choice(names)}":{name}}};',
                f'if(!{name})throw new Error("{rng.choice(names)} {rng.randrange(999)}");',
            )
        )
        parts.append(part)
        total += len(part)
    return "".join(parts).encode()[:size]


def source_map(rng: random.Random, size: int) -> bytes:
    """A v3 source map: VLQ segments repeat a lot (most deltas are small)."""
    alphabet = "ACEGIKMOQSUWYgikmoqsuwy"  # small VLQ digits dominate real mappings
    pool = ["".join(rng.choice(alphabet) for _ in range(4)) for _ in range(300)]
    weights = [1 / (rank + 1) for rank in range(len(pool))]  # Zipf-like
    count = size // 5
    segments = ",".join(rng.choices(pool, weights=weights, k=count))
    mappings = ";".join(segments[i : i + 120] for i in range(0, len(segments), 120))
    body = '{"version":3,"sources":["src/index.ts"],"names":[],"mappings":"' + mappings + '"}'
    return body.encode()[:size]


def object_file(rng: random.Random, size: int) -> bytes:
    """ELF-ish: headers and tables of small integers, zero padding, some code-like noise."""
    out = bytearray(b"\x7fELF\x02\x01\x01" + bytes(9))
    while len(out) < size:
        kind = rng.random()
        if kind < 0.35:
            out += bytes(rng.randrange(16, 256))  # alignment padding
        elif kind < 0.7:
            for _ in range(rng.randrange(8, 64)):  # relocation/symbol tables
                out += rng.randrange(1 << 12).to_bytes(4, "little") + bytes(4)
        else:
            out += rng.randbytes(rng.randrange(32, 512))  # machine code
    return bytes(out[:size])


def compressed_asset(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)  # PNG/woff2/gzip: incompressible


GENERATORS = (
    (js_source, 0.30, (500, 40_000)),
    (js_minified, 0.15, (2_000, 200_000)),
    (source_map, 0.15, (1_000, 150_000)),
    (js_source, 0.15, (100, 3_000)),  # .d.ts and small modules
    (object_file, 0.15, (1_000, 100_000)),
    (compressed_asset, 0.10, (1_000, 60_000)),
)


KINDS = {
    "js": js_source,
    "js.min": js_minified,
    "map": source_map,
    "o": object_file,
    "png": compressed_asset,
}


def build_output_files(rng: random.Random, count: int) -> list[bytes]:
    """``count`` file contents with a build-output-like mix of kinds and sizes."""
    weights = [w for _, w, _ in GENERATORS]
    files = []
    for _ in range(count):
        generate, _, (low, high) = rng.choices(GENERATORS, weights=weights)[0]
        size = int(low * (high / low) ** rng.random())  # log-uniform: many small, few large
        files.append(generate(rng, size))
    return files


def _median(samples: list[float]) -> float:
    return statistics.median(samples)


def measure_level(files: list[bytes], level: int, runs: int) -> dict[str, float]:
    cctx = zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=False)
    dctx = zstandard.ZstdDecompressor()
    raw = sum(len(f) for f in files)
    packed: list[bytes] = []
    c_times, d_times = [], []
    for _ in range(runs):
        start = time.perf_counter()
        packed = [cctx.compress(f) for f in files]
        c_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        for blob in packed:
            dctx.decompress(blob)
        d_times.append(time.perf_counter() - start)
    return {
        "ratio": raw / sum(len(p) for p in packed),
        "compress_mb_s": raw / _median(c_times) / 1e6,
        "decompress_mb_s": raw / _median(d_times) / 1e6,
    }


def measure_codec(files: list[bytes], level: int, root: Path, runs: int) -> dict[str, float]:
    """Through the cache's codec: hash + (maybe) compress, file to file, as a store does."""
    from hazremote.cache.codec import BlobCodec
    from hazremote.domain.model import HashName

    codec = BlobCodec(hash_name=HashName.BLAKE3, level=level)
    sources = root / "src"
    sources.mkdir(exist_ok=True)
    paths = []
    for i, data in enumerate(files):
        path = sources / f"f{i}"
        path.write_bytes(data)
        paths.append(path)
    raw = sum(len(f) for f in files)
    times, stored = [], 0
    for run in range(runs):
        dest = root / f"blobs-{level}-{run}"
        dest.mkdir()
        os.sync()  # untimed: writeback of earlier runs must not stall this one
        start = time.perf_counter()
        for i, path in enumerate(paths):
            codec.encode_file(path, dest / str(i), fsync=False)
        times.append(time.perf_counter() - start)
        stored = sum(p.stat().st_size for p in dest.iterdir())
    return {"ratio": raw / stored, "store_mb_s": raw / _median(times) / 1e6}


def main() -> None:
    rng = random.Random(20240611)
    files = build_output_files(rng, 2_000)
    raw = sum(len(f) for f in files)
    print(f"corpus: {len(files)} build-output-like files, {raw / 1e6:.1f} MB raw")
    root = work_dir("zstd_level")
    print(
        f"{'level':>5} {'ratio':>7} {'compress MB/s':>14} {'decompress MB/s':>16}"
        f" {'codec ratio':>12} {'codec store MB/s':>17}"
    )
    for level in LEVELS:
        zstd = measure_level(files, level, runs=5)
        codec = measure_codec(files, level, root, runs=5)
        print(
            f"{level:>5} {zstd['ratio']:>7.2f} {zstd['compress_mb_s']:>14.0f}"
            f" {zstd['decompress_mb_s']:>16.0f} {codec['ratio']:>12.2f}"
            f" {codec['store_mb_s']:>17.0f}"
        )
    print("ratio by kind (30 files of 30 kB each):")
    kind_rng = random.Random(1)
    for name, generate in KINDS.items():
        sample = [generate(kind_rng, 30_000) for _ in range(30)]
        ratios = [measure_level(sample, level, runs=1)["ratio"] for level in LEVELS]
        cells = "  ".join(f"L{lv}={r:.2f}" for lv, r in zip(LEVELS, ratios, strict=True))
        print(f"  {name:>7}: {cells}")

    shutil.rmtree(root, ignore_errors=True)  # tens of thousands of files: do not keep them


if __name__ == "__main__":
    main()
