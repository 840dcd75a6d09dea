"""The zstd policy every part follows: which blobs are compressed, and at which level.

Spec coverage:
* CACHE-010..013 — a blob is zstd-compressed unless tiny or its first bytes do not shrink.
* RC-006 — blobs travel as zstd frames where both sides accept them.
Out of scope: encoding and verifying frames (the local cache's codec, the service's verifier).
"""

from __future__ import annotations

__all__ = [
    "MAX_COMPRESSED_SHARE",
    "MIN_COMPRESS_SIZE",
    "PROBE_SIZE",
    "WIRE_ZSTD_LEVEL",
    "ZSTD_LEVEL",
    "compression_pays",
]

#: Blobs at rest, local and in the service: zstd's default level, ~160 MB/s per core here
#: with a 4.1 ratio on build output.
ZSTD_LEVEL = 3
#: A blob the client keeps uncompressed, compressed on its way to the service (cheap: it was
#: found not worth compressing at rest).
WIRE_ZSTD_LEVEL = 1
#: Below this many bytes a blob stays uncompressed (one 4 KiB block saves no disk).
MIN_COMPRESS_SIZE = 4096
#: A larger blob is compressed only when its first this many bytes shrink ...
PROBE_SIZE = 64 * 1024
#: ... to at most this share of their size.
MAX_COMPRESSED_SHARE = 0.9


def compression_pays(sample_size: int, compressed_size: int) -> bool:
    """Whether a sample of ``sample_size`` bytes that compressed to ``compressed_size`` shrank
    enough for its blob to be stored compressed."""
    return compressed_size <= MAX_COMPRESSED_SHARE * sample_size
