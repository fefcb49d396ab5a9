"""Helpers for tests that start real processes: portable children, liveness, waiting."""

from __future__ import annotations

import ctypes
import sys
import time
from collections.abc import Callable
from typing import TypeVar

import psutil

T = TypeVar("T")


def python(code: str) -> list[str]:
    """A portable child: this interpreter running `code`."""
    return [sys.executable, "-c", code]


def wait_for_file(gate: object) -> str:
    """Python source that waits until the file `gate` exists: a child holds its place (still
    running, its output so far written) until the test lets it go, however slow the machine."""
    return f"import os, time\nwhile not os.path.exists({str(gate)!r}):\n    time.sleep(0.02)\n"


def alive(pid: int) -> bool:
    """Running and not a zombie (orphans may never be reaped in containers)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


PR_GET_CHILD_SUBREAPER = 37
_LIBC = ctypes.CDLL(None) if sys.platform.startswith("linux") else None  # asked after each test


def is_subreaper() -> bool:
    """Linux: whether this process adopts its descendants' orphans (False elsewhere)."""
    if _LIBC is None:
        return False
    flag = ctypes.c_int(0)
    _LIBC.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0)
    return bool(flag.value)


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def processes_with(marker: str) -> list[psutil.Process]:
    """Live processes whose command line contains marker."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if any(marker in part for part in proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def services_of(home: object) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        ours = "nbrunner.service" in cmdline and str(home) in cmdline
        if ours and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found
