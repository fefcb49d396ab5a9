"""Sizes as people write them ("4GB", "512MB") and as they read them."""

from __future__ import annotations

import math
import re

from .errors import ResourceRequestError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)


def parse_size(value: object, what: str = "memory") -> int:
    """Bytes from 4GB / 512MB / 1.5GiB / a plain number of bytes."""
    if isinstance(value, bool):
        raise ResourceRequestError(f"{what} must be a size like '4GB' or '512MB', got {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ResourceRequestError(f"{what} must be a size ≥ 0 like '4GB', got {value!r}")
        return int(value)
    match = _SIZE.match(str(value))
    if not match:
        raise ResourceRequestError(f"{what} must be a size like '4GB' or '512MB', got {value!r}")
    number, unit = float(match.group(1)), (match.group(2) or "").lower()
    base = 1024 if "i" in unit else 1000
    scale = base ** "bkmgt".index(unit[0]) if unit else 1
    return int(number * scale)


def format_size(n_bytes: float | None) -> str:
    if n_bytes is None:
        return "-"
    size = float(n_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"
