"""Durations and sizes of the configuration (SPEC §1)."""

from __future__ import annotations

import pytest

from hazremote.domain.units import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("10m", 600.0),
        ("2h", 7200.0),
        ("7d", 604800.0),
        ("1d2h3m4s5ms", 93784.005),
        ("1.5h", 5400.0),
        ("90", 90.0),
        (" 30s ", 30.0),
        (0, 0.0),
        (12, 12.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    """SPEC §1: ms/s/m/h/d units and sums; a bare number is seconds."""
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "invalid duration ''"),
        ("1x", "invalid duration '1x'"),
        ("h", "invalid duration 'h'"),
        ("1 h", "invalid duration '1 h'"),
        ("-1s", "invalid duration '-1s'"),
        ("1h1h", "invalid duration '1h1h'"),
        ("1h30", "invalid duration '1h30'"),
        ("1H", "invalid duration '1H'"),
        (-5, "a duration must not be negative, got -5"),
        (True, "expected a duration such as 30s or 1h30m, got True"),
        (None, "expected a duration such as 30s or 1h30m, got None"),
        ([], "expected a duration such as 30s or 1h30m, got []"),
    ],
)
def test_parse_duration_rejects_bad_forms(value: object, message: str) -> None:
    """SPEC §1: a bad duration is a ValueError quoting the text (the loader adds the key)."""
    with pytest.raises(ValueError, match="^" + message.replace("[", r"\[").replace("]", r"\]")):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("10GB", 10 * 1000**3),
        ("512MiB", 512 * 1024**2),
        ("500MB", 500 * 1000**2),
        ("10GiB", 10 * 1024**3),
        ("1TB", 1000**4),
        ("2TiB", 2 * 1024**4),
        ("1KB", 1000),
        ("1kB", 1000),
        ("1KiB", 1024),
        ("100B", 100),
        ("4096", 4096),
        ("10 GB", 10 * 1000**3),
        ("1.5KiB", 1536),
        ("2.01KB", 2010),  # exact decimal arithmetic, not 2009 from binary floating point
        ("1.1MiB", 1153433),  # fractional bytes are dropped
        ("0.001KB", 1),
        (0, 0),
        (4096, 4096),
    ],
)
def test_parse_size(value: object, size: int) -> None:
    """SPEC §1: powers of 1000 (KB, MB, GB, TB) and 1024 (KiB …); a bare number is bytes."""
    assert parse_size(value) == size


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "invalid size ''"),
        ("GB", "invalid size 'GB'"),
        ("10XB", "invalid size '10XB'"),
        ("10gb", "invalid size '10gb'"),
        ("10 G B", "invalid size '10 G B'"),
        ("-1", "invalid size '-1'"),
        ("1e3", "invalid size '1e3'"),
        (-1, "a size must not be negative, got -1"),
        (True, "expected a size such as 500MB or 10GiB, got True"),
        (1.5, "expected a size such as 500MB or 10GiB, got 1.5"),
    ],
)
def test_parse_size_rejects_bad_forms(value: object, message: str) -> None:
    """SPEC §1: a bad size is a ValueError quoting the text."""
    with pytest.raises(ValueError, match="^" + message):
        parse_size(value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.038, "38ms"),
        (0.42, "0.4s"),
        (12.34, "12.3s"),
        (59.9, "59.9s"),
        (125, "2m05s"),
        (3725, "1h02m"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    """EXEC epilogue: short human durations."""
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (4 * 1024**2, "4.0 MiB"),
        (4 * 1024**3, "4.0 GiB"),
        (1024**3 - 1, "1.0 GiB"),
        (3 * 1024**4, "3.0 TiB"),
    ],
)
def test_format_size_is_human_readable(size: int, text: str) -> None:
    """Sizes are shown in binary units with one decimal, never as raw byte counts."""
    assert format_size(size) == text
