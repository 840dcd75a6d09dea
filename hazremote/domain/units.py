"""Duration and size grammars of the configuration (SPEC §1).

Durations: ``500ms``, ``30s``, ``10m``, ``2h``, ``7d`` and sums such as ``1h30m``; a bare number
is seconds. Sizes: ``500MB``/``10GB`` (powers of 1000), ``512MiB``/``10GiB`` (powers of 1024),
``B`` and ``K``-prefixed units too; a bare number is bytes. Sizes are shown in binary units
(:func:`format_size`).
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = ["format_duration", "format_size", "parse_duration", "parse_size"]

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_SIZE_UNITS = {
    "B": 1,
    "KB": 1000,
    "kB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z]+)?")


def parse_duration(value: object) -> float:
    """Parse a duration into seconds.

    Raises:
        ValueError: with a message quoting the offending text.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 30s or 1h30m, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration must not be negative, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as 30s or 1h30m, got {value!r}")
    text = value.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    total = 0.0
    pos = 0
    seen: set[str] = set()
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos or match.group(2) in seen:
            break
        seen.add(match.group(2))
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(
            f"invalid duration {value!r}; use forms such as 500ms, 30s, 10m, 2h, 7d or 1h30m"
        )
    return total


def format_duration(seconds: float) -> str:
    """Render seconds the way the epilogue shows them (``38ms``, ``0.4s``, ``12.3s``, ``2m05s``).

    Under a tenth of a second milliseconds are shown: a fully cached run says ``Time: 38ms``,
    not a puzzling ``0.0s``.
    """
    if seconds < 0.1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def parse_size(value: object) -> int:
    """Parse a size into bytes.

    Raises:
        ValueError: with a message quoting the offending text.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 500MB or 10GiB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size must not be negative, got {value!r}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a size such as 500MB or 10GiB, got {value!r}")
    match = _SIZE_RE.fullmatch(value.strip())
    if match is None or (match.group(2) is not None and match.group(2) not in _SIZE_UNITS):
        raise ValueError(
            f"invalid size {value!r}; use forms such as 4096, 500MB, 10GB, 512MiB or 10GiB"
        )
    factor = _SIZE_UNITS[match.group(2)] if match.group(2) else 1
    # Fraction, not float: "2.01KB" is 2010 bytes, where binary floating point gives 2009.
    return int(Fraction(match.group(1)) * factor)


def format_size(size: int) -> str:
    """Render a byte count for people: ``512 B``, ``1.5 KiB``, ``4.0 GiB`` (powers of 1024)."""
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if round(value, 1) < 1024:  # 1023.96 KiB shows as 1.0 MiB, not 1024.0 KiB
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
