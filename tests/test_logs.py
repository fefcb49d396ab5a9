"""Logs: complete on disk whatever the child writes; readers bounded and never crashing."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest
from helpers.procs import python

from nbrunner import Runner
from nbrunner.logs import (
    LogFollower,
    collapse_carriage_returns,
    last_line,
    read_tail_bytes,
    read_text,
    strip_ansi,
    tail_offset,
)
from nbrunner.states import RunStatus

FIFTY_MB = """
import sys
line = b"y" * 99 + b"\\n"
out = sys.stdout.buffer
for _ in range(500_000):
    out.write(line)
"""
LONG_LINE = "import sys; sys.stdout.write('z' * 2_000_000); sys.stdout.flush()"
BAD_UTF8 = r"import sys; sys.stdout.buffer.write(b'ok \xff\xfe bytes \xc3\n'); sys.stdout.flush()"
TQDM = r"""
import sys
for i in range(0, 101, 10):
    sys.stdout.write(f'\r{i:3d}%|' + '#' * (i // 10)); sys.stdout.flush()
sys.stdout.write('\ndone\n')
"""


def test_fifty_megabytes_land_complete_and_the_runner_stays_flat(runner: Runner) -> None:
    runner.register("big", command=python(FIFTY_MB))
    rss_before = psutil.Process().memory_info().rss
    record = runner.submit("big").wait(timeout=120)
    assert record.status is RunStatus.SUCCEEDED
    assert os.path.getsize(record.log_path) == 50_000_000
    tail = runner.logs(record.id, tail=3)
    assert tail == ("y" * 99 + "\n") * 3
    follower = LogFollower(record.log_path)
    total = 0
    while chunk := follower.read(1 << 20):
        total += len(chunk)
    assert total == 50_000_000
    assert psutil.Process().memory_info().rss - rss_before < 30_000_000


def test_a_two_megabyte_line_without_newline(runner: Runner) -> None:
    runner.register("long", command=python(LONG_LINE))
    record = runner.submit("long").wait(timeout=60)
    assert os.path.getsize(record.log_path) == 2_000_000
    assert runner.logs(record.id, tail=5) == "z" * 2_000_000
    assert len(read_tail_bytes(record.log_path, 1, max_bytes=1000)) == 1000
    assert last_line(record.log_path) == "z" * 16 * 1024


def test_invalid_utf8_is_kept_on_disk_and_replaced_for_readers(runner: Runner) -> None:
    runner.register("bad", command=python(BAD_UTF8))
    record = runner.submit("bad").wait(timeout=60)
    assert Path(record.log_path).read_bytes() == b"ok \xff\xfe bytes \xc3\n"
    assert runner.logs(record.id) == "ok \ufffd\ufffd bytes \ufffd\n"


def test_progress_bars_collapse_to_their_last_redraw(runner: Runner) -> None:
    runner.register("bar", command=python(TQDM))
    record = runner.submit("bar").wait(timeout=60)
    assert runner.logs(record.id) == "100%|##########\ndone\n"
    assert "\r" in runner.logs(record.id, raw=True)
    assert last_line(record.log_path) == "done"


def test_follower_splits_multibyte_characters_safely(tmp_path: Path) -> None:
    path = tmp_path / "log"
    data = "héllo wörld ✓\n".encode()
    follower = LogFollower(path)
    text = ""
    with open(path, "ab") as f:
        for byte in data:
            f.write(bytes([byte]))
            f.flush()
            text += follower.read()
    assert text == "héllo wörld ✓\n"


def test_from_tail_starts_near_the_end(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"a" * 10_000 + b"\nlast\n")
    assert LogFollower.from_tail(path, 5).read() == "last\n"


def test_helpers_for_readers() -> None:
    assert collapse_carriage_returns("a\r\nb\rc\n") == "a\nc\n"
    assert strip_ansi("\x1b[32mgreen\x1b[0m \x1b]0;title\x07x") == "green x"
    assert read_text("/nonexistent/log") == ""


@pytest.mark.parametrize(
    ("content", "lines", "expected"),
    [(b"a\nb\nc\n", 1, b"c\n"), (b"a\nb\nc\n", 2, b"b\nc\n"), (b"a\nb\nc\n", 9, b"a\nb\nc\n"),
     (b"a\nb\nc", 1, b"c"), (b"a\nb\nc", 2, b"b\nc"), (b"\n\n", 1, b"\n"), (b"", 3, b""),
     (b"x\n" * 40_000, 2, b"x\nx\n"), (b"a\nb\n", 0, b"")],
)  # fmt: skip
def test_tail_finds_the_start_of_the_last_lines(tmp_path: Path, content, lines, expected) -> None:
    path = tmp_path / "log"
    path.write_bytes(content)
    assert read_tail_bytes(path, lines) == expected
    assert tail_offset(path, lines) == len(content) - len(expected)
