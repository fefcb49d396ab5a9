"""A run's process tree: sampling its use, and stopping all of it."""

from __future__ import annotations

import subprocess
import time
from contextlib import suppress

import psutil

from .. import platform
from . import Usage

# How often the list of the tree's processes is rebuilt: a full scan of the process table,
# so less often than the cheap per-process samples in between.
RESCAN_S = 5.0


class ProcessTree:
    """Samples a process and its descendants; the membership is rescanned now and then."""

    def __init__(self, root_pid: int) -> None:
        self._root = psutil.Process(root_pid)
        self._members: list[psutil.Process] = [self._root]
        self._scanned = 0.0
        self._cpu_time = 0.0
        self._last: tuple[float, float] | None = None  # (monotonic time, cpu time)

    def members(self, rescan: bool = False) -> list[psutil.Process]:
        now = time.monotonic()
        if rescan or now - self._scanned >= RESCAN_S:
            with suppress(psutil.Error):
                self._members = [self._root, *self._root.children(recursive=True)]
            self._scanned = now
        return self._members

    def sample(self) -> Usage | None:
        rss, cpu, pids = 0, 0.0, []
        for member in self.members():
            with suppress(psutil.Error), member.oneshot():
                times = member.cpu_times()
                cpu += times.user + times.system
                if member is self._root:  # descendants it already reaped
                    cpu += times.children_user + times.children_system
                rss += member.memory_info().rss
                pids.append(member.pid)
        if not pids:
            return None
        self._cpu_time = max(self._cpu_time, cpu)  # a member that exits takes its time along
        now = time.monotonic()
        percent = 0.0
        if self._last is not None and now > self._last[0]:
            percent = 100.0 * (self._cpu_time - self._last[1]) / (now - self._last[0])
        self._last = (now, self._cpu_time)
        return Usage(
            rss=rss, cpu_time=self._cpu_time, cpu_percent=max(percent, 0.0), pids=tuple(pids)
        )


def stop_tree(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Graceful signal to the whole tree, then a kill once the grace period is over.

    Descendants are listed first, so that any that left the child's process group (their
    own setsid) are still reached.
    """

    def alive(p: psutil.Process) -> bool:
        with suppress(psutil.Error):
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        return False

    tree: list[psutil.Process] = []
    with suppress(psutil.Error):
        tree = psutil.Process(proc.pid).children(recursive=True)
    platform.signal_group(proc.pid, graceful=True)
    for member in tree:
        with suppress(psutil.Error):
            member.terminate()
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and (proc.poll() is None or any(map(alive, tree))):
        time.sleep(0.05)
    platform.signal_group(proc.pid, graceful=False)
    for member in tree:
        with suppress(psutil.Error):
            member.kill()
    if proc.poll() is None:
        proc.kill()
    proc.wait()
