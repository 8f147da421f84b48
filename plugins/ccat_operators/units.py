"""Parsing and printing of sizes and durations as written in topology files."""

from __future__ import annotations

import re
from fractions import Fraction

_SIZE = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[KMGTP]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "PB": 10**15,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
    "PIB": 2**50,
}
_DURATION = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[smhdw])\s*$")
_DURATION_FACTORS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(value: int | str) -> int:
    """Return a byte count from an int or a string such as ``50GB`` or ``512MiB``."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative")
        return value
    match = _SIZE.match(str(value))
    if match is None:
        raise ValueError(f"{value!r} is not a size (examples: 50GB, 512MiB, 1000000)")
    factor = _SIZE_FACTORS[(match["unit"] or "B").upper()]
    # Exact arithmetic: ``1.15GB`` is 1150000000 bytes, and a huge number is a huge int
    # (the caller bounds it) rather than a float overflow.
    return int(Fraction(match["number"]) * factor)


def parse_duration(value: int | str) -> int:
    """Return seconds from an int or a string such as ``6h``, ``30d`` or ``90m``."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative")
        return value
    match = _DURATION.match(str(value))
    if match is None:
        raise ValueError(f"{value!r} is not a duration (examples: 45s, 90m, 6h, 30d, 2w)")
    return int(Fraction(match["number"]) * _DURATION_FACTORS[match["unit"]])


def format_duration(seconds: int) -> str:
    """Return the shortest exact form of ``seconds`` (``86400`` -> ``1d``)."""
    for unit in ("w", "d", "h", "m"):
        factor = _DURATION_FACTORS[unit]
        if seconds and seconds % factor == 0:
            return f"{seconds // factor}{unit}"
    return f"{seconds}s"


def format_size(size: int) -> str:
    """Return a human-readable decimal size (``50000000000`` -> ``50.0 GB``)."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
