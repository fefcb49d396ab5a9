"""Reading run logs while they grow: by byte offset, never the whole file for a tail.

A run's output is untrusted bytes: invalid UTF-8 is replaced, not raised; a line may be
megabytes long; tqdm redraws with carriage returns. Readers bound what they hold in memory.
"""

from __future__ import annotations

import codecs
import os
import re
from pathlib import Path

TAIL_BLOCK = 64 * 1024
MAX_TAIL_BYTES = 4 * 1024 * 1024
MAX_READ_BYTES = 8 * 1024 * 1024  # what one read of a "whole" log returns at most
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


def collapse_carriage_returns(text: str) -> str:
    """Keep each line's last redraw, as a terminal would show a tqdm bar."""
    if "\r" not in text:
        return text
    lines = text.split("\n")
    return "\n".join(_last_redraw(line) for line in lines)


def _last_redraw(line: str) -> str:
    for segment in reversed(line.split("\r")):
        if segment:
            return segment
    return ""


class CollapsedLines:
    """Text that arrives in pieces, given back as whole lines showing each line's last redraw.

    A line still being redrawn is held back (only its last two frames, so a progress bar
    that never ends a line cannot grow it) until it ends or `flush` is called.
    """

    def __init__(self) -> None:
        self._partial = ""

    def feed(self, text: str) -> str:
        done, newline, partial = (self._partial + text).rpartition("\n")
        head, cr, last = partial.rpartition("\r")
        self._partial = head.rpartition("\r")[2] + cr + last
        return collapse_carriage_returns(done + newline)

    def flush(self) -> str:
        rest, self._partial = self._partial, ""
        return collapse_carriage_returns(rest)


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def tail_offset(path: str | Path, lines: int, max_bytes: int = MAX_TAIL_BYTES) -> int:
    """Where the last `lines` lines start, found by reading backwards from the end, but no
    further back than max_bytes (a log may be one endless line)."""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            floor = max(0, end - max_bytes)
            if lines <= 0 or end == 0:
                return end
            f.seek(end - 1)
            to_pass = lines + (f.read(1) == b"\n")  # the newline ending the last line too
            position = end
            while position > floor:
                step = min(TAIL_BLOCK, position - floor)
                position -= step
                f.seek(position)
                block = f.read(step)
                index = len(block)
                while (index := block.rfind(b"\n", 0, index)) >= 0:
                    to_pass -= 1
                    if to_pass == 0:
                        return position + index + 1
            return floor
    except FileNotFoundError:
        return 0


def read_tail_bytes(path: str | Path, lines: int, max_bytes: int = MAX_TAIL_BYTES) -> bytes:
    """The last `lines` lines, at most max_bytes of them."""
    offset = tail_offset(path, lines, max_bytes)
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(max_bytes)
    except FileNotFoundError:
        return b""


def decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def read_text(path: str | Path, tail: int | None = None, raw: bool = False) -> str:
    """The log as text: its last `tail` lines, or all of it up to MAX_READ_BYTES (a longer
    log starts with a note saying what is not shown); redraws collapsed unless raw."""
    if tail is not None:
        text = decode(read_tail_bytes(path, tail))
    else:
        text = _read_end(Path(path), MAX_READ_BYTES)
    return text if raw else collapse_carriage_returns(text)


def _read_end(path: Path, max_bytes: int) -> str:
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - max_bytes))
            data = f.read(max_bytes)
    except FileNotFoundError:
        return ""
    if size <= max_bytes:
        return decode(data)
    from .units import format_size

    note = f"[nbrunner: the first {format_size(size - max_bytes)} of this log are not shown; "
    return f"{note}the whole log is {path}]\n{decode(data)}"


def last_line(path: str | Path) -> str:
    """The last non-empty line as a person would see it: redraw collapsed, colours gone."""
    text = strip_ansi(collapse_carriage_returns(decode(read_tail_bytes(path, 2, 16 * 1024))))
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()
    return ""


class LogFollower:
    """Reads what was appended since the last call; cost is proportional to what is new."""

    def __init__(self, path: str | Path, offset: int = 0) -> None:
        self.path = Path(path)
        self.offset = offset
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    @classmethod
    def from_tail(cls, path: str | Path, max_bytes: int) -> LogFollower:
        """Start near the end, so a huge log is not read from its beginning."""
        try:
            size = os.path.getsize(path)
        except OSError:
            size = 0
        return cls(path, max(0, size - max_bytes))

    def read_bytes(self, max_bytes: int = 1024 * 1024) -> bytes:
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                if size < self.offset:  # the log cap cut the file: go on from its new tail
                    self.offset = max(0, size - max_bytes)
                f.seek(self.offset)
                data = f.read(max_bytes)
        except FileNotFoundError:
            return b""
        self.offset += len(data)
        return data

    def read(self, max_bytes: int = 1024 * 1024) -> str:
        return self._decoder.decode(self.read_bytes(max_bytes))
