"""Processes a test session leaves behind: services, recorders, Voila, kernels, Ray heads;
and the scratch folders nbrunner, its notebooks and its tests make in the temp folder.

Every process the session starts inherits a marker in its environment (detached services
and their recorders, Voila's kernels, Ray's workers alike), so the session can find exactly
its own, even beside other sessions on the same machine, and name what is still alive.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from contextlib import suppress

import psutil

from .procs import wait_until

MARKER_ENV = "NBRUNNER_TEST_SESSION"
# A test home's service exits this long after its last run (conftest shortens it to 5 s),
# and a busy machine may delay that: only what outlives this is left behind.
SETTLE_S = float(os.environ.get("NBRUNNER_TEST_SETTLE_S", "30"))  # shorter: the check's own test


def mark_session() -> str:
    """Put a fresh marker in the environment every child of this process inherits."""
    marker = uuid.uuid4().hex
    os.environ[MARKER_ENV] = marker
    return marker


def started_by(marker: str, since: float) -> list[psutil.Process]:
    """Live processes, other than this one, that carry the marker and began after `since`."""
    found = []
    for process in psutil.process_iter(["pid", "create_time", "status"]):
        info = process.info
        if info["pid"] == os.getpid() or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if (info["create_time"] or 0) < since:
            continue
        try:
            if process.environ().get(MARKER_ENV) == marker:
                found.append(process)
        except psutil.Error:  # gone meanwhile, or not ours to read
            continue
    return found


def describe(process: psutil.Process) -> str:
    try:
        return f"pid {process.pid}: {' '.join(process.cmdline())[:300]}"
    except psutil.Error:
        return f"pid {process.pid}: (gone)"


def left_behind(marker: str, since: float, settle: float = SETTLE_S) -> list[str]:
    """What is still alive once services had their idle time to exit, named, then stopped
    so that a failed run leaves nothing either; [] when nothing is."""
    try:
        wait_until(lambda: not started_by(marker, since), timeout=settle, interval=0.5)
    except AssertionError:
        culprits = started_by(marker, since)
        named = [describe(p) for p in culprits]
        for process in culprits:
            with suppress(psutil.Error):
                process.kill()
        return named
    return []


def session_start() -> float:
    """Now, as psutil states create times (a little early: its clock ticks are coarse)."""
    return time.time() - 1.0


def folders_left(since: float) -> list[str]:
    """nbrunner-* folders made in the temp folder since `since` that are still there (a
    notebook's scratch home, a dashboard's private config, a kernel's sockets)."""
    found = []
    with os.scandir(tempfile.gettempdir()) as entries:
        for entry in entries:
            with suppress(OSError):
                if entry.name.startswith("nbrunner-") and entry.stat().st_ctime >= since:
                    found.append(f"folder {entry.path}")
    return sorted(found)
