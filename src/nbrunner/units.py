"""Sizes and ages as people write them ("4GB", "512MB", "30d") and as they read them."""

from __future__ import annotations

import math
import re

from .errors import BadInput, ResourceRequestError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
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


def parse_age(text: object, name: str = "--older-than") -> float:
    """Seconds from an age like 30d, 12h, 90m, 45s or 2w; BadInput naming the forms."""
    found = _AGE.match(str(text)) if isinstance(text, str) else None
    if found is None:
        raise BadInput(
            f"{name} must be an age like 30d, 12h, 90m, 45s or 2w (days, hours, minutes, "
            f"seconds, weeks), got {text!r}"
        )
    return float(found.group(1)) * _UNITS[found.group(2).lower()]
