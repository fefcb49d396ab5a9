"""Small formatting helpers shared by the views: numbers people can read at a glance."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

DASH = "-"
CLOCK_STEP_S = 5  # a live clock under a minute moves in these steps, then by the minute
LONGEST_S = 100 * 24 * 3600  # beyond this a duration reads "> 100d", not a 20-digit hour


def clock(seconds: float | None) -> str:
    """A live elapsed time, coarse so that it changes at most every CLOCK_STEP_S seconds
    (then once a minute): a page watching idle runs then has next to nothing to redraw.
    0s, 5s ... 55s, 1m, 2m ... 59m, 1h00m."""
    if seconds is None:
        return DASH
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole - whole % CLOCK_STEP_S}s"
    if whole < 3600:
        return f"{whole // 60}m"
    return duration(whole)


def duration(seconds: float | None) -> str:
    """0.4s, 12s, 4m05s, 2h03m: short, so a ticking value hardly changes width; under a
    second with a decimal, as the CLI shows it, so a quick run does not read "0s"."""
    if seconds is None or seconds != seconds:  # None or NaN
        return DASH
    if seconds > LONGEST_S:
        return f"> {LONGEST_S // 86400}d"
    if seconds < 1:
        return f"{max(0.0, seconds):.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def size(n_bytes: float | None) -> str:
    if n_bytes is None:
        return DASH
    value = float(n_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(value) < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def percent(value: float | None) -> str:
    return DASH if value is None else f"{value:.0f}%"


def params(values: Mapping[str, Any], limit: int = 80) -> str:
    text = " ".join(f"{k}={v}" for k, v in values.items())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def escape(value: object) -> str:
    """Text from runs and users is untrusted: it is always shown as text, never as markup."""
    return html.escape(str(value), quote=True)
