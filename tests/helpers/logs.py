"""What a capped log must hold, written out so tests assert it byte for byte."""

from __future__ import annotations

import re

DROPPED_HERE = re.compile(rb"\n\[nbrunner: output dropped here; [^\]\n]*\]\n")
DROPPED_TOTAL = re.compile(
    rb"\n\[nbrunner: ([^\]\n]*) of output were dropped from this log [^\]\n]*\]\n\Z"
)


def capped(output: bytes, cap: int) -> tuple[bytes, bytes]:
    """The head and the tail a log capped at `cap` keeps of `output`: `cap` bytes in all,
    its first half and its newest half (the README's promise)."""
    if cap == 0 or len(output) <= cap:
        return output, b""
    return output[: cap // 2], output[len(output) - (cap - cap // 2) :]


def split_capped(data: bytes) -> tuple[bytes, bytes, bytes]:
    """A capped log's head, newest tail and the amount its closing note says was dropped;
    AssertionError if either note is missing or the output is not exactly around them."""
    here = DROPPED_HERE.search(data)
    total = DROPPED_TOTAL.search(data)
    assert here and total, f"a capped log ends with its two notes, got ...{data[-300:]!r}"
    assert len(DROPPED_HERE.findall(data)) == 1, "the drop note is written once"
    return data[: here.start()], data[here.end() : total.start()], total.group(1)
