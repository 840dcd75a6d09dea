"""How ``haz doctor`` words a clock skew and the server's limits.

Spec coverage:
* SPEC §5 ``haz doctor`` — clock skew: no ``-0.0 s``; a skew within what the round trip can
  measure is "in step", a larger one says which clock is ahead and by how much, with a
  precision that suits its size; sizes (the largest blob) are human-readable.
"""

from __future__ import annotations

import pytest

from hazremote.cli.doctor import describe_limits, describe_skew


@pytest.mark.parametrize(
    ("skew_s", "uncertainty_s", "text"),
    [
        (-0.0001, 0.0005, "in step with this machine (within ±1 ms)"),
        (0.0, 0.0, "in step with this machine (within ±1 ms)"),
        (0.003, 0.004, "in step with this machine (within ±4 ms)"),
        (-0.042, 0.001, "server clock is 42 ms behind this machine (±1 ms)"),
        (1.26, 0.002, "server clock is 1.3 s ahead of this machine (±2 ms)"),
        (-12.6, 0.002, "server clock is 13 s behind this machine (±2 ms)"),
        (3725.0, 0.2, "server clock is 1h02m ahead of this machine (±200 ms)"),
    ],
)
def test_describe_skew(skew_s: float, uncertainty_s: float, text: str) -> None:
    assert describe_skew(skew_s, uncertainty_s=uncertainty_s) == text


def test_describe_skew_never_prints_a_negative_zero() -> None:
    for skew in (-0.0, -1e-9, -0.0004, -0.049):
        assert "-0" not in describe_skew(skew, uncertainty_s=0.05)


def test_describe_limits_is_human_readable() -> None:
    assert describe_limits(
        max_blob_bytes=4 * 1024**3, max_batch_items=1000, max_batch_bytes=4 * 1024**2
    ) == ("max blob 4.0 GiB; batches of at most 1000 items and 4.0 MiB")
    assert describe_limits(max_blob_bytes=1536, max_batch_items=10, max_batch_bytes=0) == (
        "max blob 1.5 KiB; batches of at most 10 items"
    )
    assert describe_limits(max_blob_bytes=0, max_batch_items=0, max_batch_bytes=0) == (
        "none announced"
    )
