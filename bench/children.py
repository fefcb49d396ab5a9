"""The children the benchmarks run, the same for nbrunner, floors and peers.

This file runs as a plain script (standard library only), so that every runner starts it
the same way: `python bench/children.py MODE ...`.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve()
# A trivial Python child that says when it started: `python -c pass` plus one print.
STAMP_CODE = "import time; print('T', time.time())"
STAMP_PREFIX = "T "


def stamp_argv() -> list[str]:
    return [sys.executable, "-c", STAMP_CODE]


def log_argv(lines: int, width: int, report: Path, to: Path | None = None) -> list[str]:
    argv = [sys.executable, str(SCRIPT), "log", str(lines), str(width), str(report)]
    return [*argv, str(to)] if to else argv


def tree_argv(ignore_term: bool) -> list[str]:
    return [sys.executable, str(SCRIPT), "tree", *(["--ignore-term"] if ignore_term else [])]


def read_stamps(text: str) -> list[float]:
    return [float(line.split()[1]) for line in text.splitlines() if line.startswith(STAMP_PREFIX)]


def write_lines(lines: int, width: int, report: Path, to: Path | None) -> None:
    """Write `lines` lines of `width` bytes, one write per line (a print-style logger).

    Reports the wall time of the writing loop and the CPU of the whole process.
    """
    line = "x" * (width - 1) + "\n"
    start_wall = time.perf_counter()
    if to is None:
        write = sys.stdout.write
        for _ in range(lines):
            write(line)
        sys.stdout.flush()
    else:
        with open(to, "w") as f:
            for _ in range(lines):
                f.write(line)
    wall = time.perf_counter() - start_wall
    report.write_text(json.dumps({"wall": wall, "cpu": time.process_time()}))


def sleep_tree(ignore_term: bool, spawn: bool) -> None:
    """Sleep for ever; with `spawn`, first start a grandchild that does the same."""
    if ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if spawn:
        argv = [sys.executable, str(SCRIPT), "sleep", *(["--ignore-term"] if ignore_term else [])]
        subprocess.Popen(argv)
    print("ready", flush=True)
    while True:
        time.sleep(3600)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    log = sub.add_parser("log")
    log.add_argument("lines", type=int)
    log.add_argument("width", type=int)
    log.add_argument("report", type=Path)
    log.add_argument("to", type=Path, nargs="?")
    for mode in ("tree", "sleep"):
        sub.add_parser(mode).add_argument("--ignore-term", action="store_true")
    args = parser.parse_args()
    if args.mode == "log":
        write_lines(args.lines, args.width, args.report, args.to)
    else:
        sleep_tree(args.ignore_term, spawn=args.mode == "tree")


if __name__ == "__main__":
    main()
