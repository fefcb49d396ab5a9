"""Logs: complete on disk whatever the child writes; readers bounded and never crashing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from helpers.logs import capped, split_capped
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
from nbrunner.recorder import CappedLog
from nbrunner.states import RunStatus
from nbrunner.units import format_size

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


# -- the cap: whole below it, exactly its head and newest tail above it ----------------------
NUMBERED = b"".join(b"%07d\n" % i for i in range(12_500))  # 100 KB; every byte's place shows


def write_capped(path: Path, cap: int, output: bytes, chunk: int) -> tuple[CappedLog, int]:
    """Write output in fixed-size pieces; the log and the largest size seen on disk."""
    log = CappedLog(str(path), cap)
    largest = 0
    for start in range(0, len(output), chunk):
        log.write(output[start : start + chunk])
        largest = max(largest, os.path.getsize(path))
    log.close()
    return log, largest


@pytest.mark.parametrize("cap", [4_000, 10_001, 64_000])
@pytest.mark.parametrize("chunk", [7, 1_000, 4_096, 65_536, len(NUMBERED)])
def test_a_capped_log_keeps_exactly_its_head_and_newest_tail(
    tmp_path: Path, cap: int, chunk: int
) -> None:
    path = tmp_path / "log"
    log, largest = write_capped(path, cap, NUMBERED, chunk)
    head, tail, said_dropped = split_capped(path.read_bytes())
    assert (head, tail) == capped(NUMBERED, cap)
    assert len(head) + len(tail) == cap
    assert log.dropped == len(NUMBERED) - cap
    assert said_dropped == format_size(len(NUMBERED) - cap).encode()
    if chunk < cap // 4:  # a live log grows at most a quarter past its cap between cuts
        assert largest <= cap + cap // 4


@pytest.mark.parametrize(("size", "dropped"), [(4_000, 0), (4_001, 1), (5_000, 1_000)])
def test_a_log_just_over_its_cap_is_cut_when_it_closes(
    tmp_path: Path, size: int, dropped: int
) -> None:
    path = tmp_path / "log"
    log, _ = write_capped(path, 4_000, NUMBERED[:size], 100)
    assert log.dropped == dropped
    if not dropped:
        assert path.read_bytes() == NUMBERED[:size]
        return
    assert split_capped(path.read_bytes())[:2] == capped(NUMBERED[:size], 4_000)


def test_the_notes_say_what_the_log_keeps_and_what_it_dropped(tmp_path: Path) -> None:
    path = tmp_path / "log"
    write_capped(path, 4_000, NUMBERED, 1_000)
    data = path.read_bytes()
    assert b"[nbrunner: output dropped here; this log keeps its first and last 2.0 KB]" in data
    assert data.endswith(
        b"[nbrunner: 96.0 KB of output were dropped from this log (max_log_size = 4.0 KB)]\n"
    )


def test_a_log_is_private_and_what_it_held_counts_against_its_cap(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(NUMBERED[:3_000])  # a line written before the child's output began
    log, _ = write_capped(path, 4_000, NUMBERED[3_000:6_000], 1_000)
    assert log.dropped == 2_000
    assert split_capped(path.read_bytes())[:2] == capped(NUMBERED[:6_000], 4_000)
    fresh = tmp_path / "fresh"
    CappedLog(str(fresh), 4_000).close()
    assert fresh.stat().st_mode & 0o777 == 0o600


def test_a_cap_of_zero_keeps_the_whole_log(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log, _ = write_capped(path, 0, NUMBERED * 10, 4_096)
    assert path.read_bytes() == NUMBERED * 10
    assert log.dropped == 0


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_a_full_disk_drops_and_counts_output_never_raises() -> None:
    log = CappedLog("/dev/full", 4_000)
    for _ in range(10):
        log.write(b"x" * 1_000)
    log.close()
    assert log.dropped == 10_000


def test_max_log_size_zero_keeps_a_run_log_whole(runner: Runner) -> None:
    runner.config("max_log_size", 0)
    runner.register("numbered", command=python("import sys; sys.stdout.write('x' * 300_000)"))
    record = runner.submit("numbered").wait(timeout=60)
    assert record.status is RunStatus.SUCCEEDED
    assert Path(record.log_path).read_bytes() == b"x" * 300_000
    assert not record.log_dropped


@pytest.mark.parametrize(("given", "kept"), [("4KB", 4_000), ("0", 0), ("256MB", 256_000_000)])
def test_max_log_size_takes_what_its_message_names(tmp_path: Path, given: str, kept: int) -> None:
    """The error says "at least 4KB ..., or 0 for no cap": both must be accepted."""
    home = str(tmp_path / "home")
    nbrunner = [sys.executable, "-m", "nbrunner", "config", "max_log_size"]
    subprocess.run([*nbrunner, given, "--home", home], check=True, timeout=60)
    shown = subprocess.run(
        [*nbrunner, "--home", home], check=True, timeout=60, capture_output=True, text=True
    )
    assert shown.stdout.split() == [str(kept)]
