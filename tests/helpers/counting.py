"""Counters as witnesses: a run printing one number every 0.05 s shows time passing."""

from __future__ import annotations

import re
from collections.abc import Callable

from helpers.procs import wait_until

COUNT_FIRST = re.compile(r"^\D*(\d+)", re.MULTILINE)


def last_count(log: str) -> int:
    """The last number a counter printed (`7`, or the demo's `count 7/100`); -1 before any."""
    numbers = COUNT_FIRST.findall(log)
    return int(numbers[-1]) if numbers else -1


def counts_on(read_log: Callable[[], str], lines: int) -> None:
    """Wait until a witness, a counter nobody stops, has counted `lines` more: at least
    `lines` * 0.05 s, in which any other counter that was not stopped would have counted
    too, however busy the machine."""
    start = last_count(read_log())
    wait_until(lambda: last_count(read_log()) >= start + lines, what="the witness to count on")
