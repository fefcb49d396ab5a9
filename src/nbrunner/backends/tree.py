"""A run's process tree: sampling its use, signalling, pausing and stopping all of it.

Every call expects members to vanish at any moment (psutil.NoSuchProcess): a child may
exit between being listed and being sampled, above all on a busy machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import suppress

import psutil

from .. import platform
from . import Usage

# How often the list of the tree's processes is rebuilt: a full scan of the process table,
# so less often than the cheap per-process samples in between, and one scan serves every
# tree sampled in the same pass.
RESCAN_S = 5.0
KILL_AGAIN_S = 1.0  # SIGKILL again after this, for what the tree started meanwhile
_table: tuple[float, dict[int, list[int]]] = (-RESCAN_S, {})


def children_by_parent(max_age: float) -> dict[int, list[int]]:
    """pid → its children's pids, from a scan of the process table at most max_age old."""
    global _table
    now = time.monotonic()
    if now - _table[0] > max_age:
        table: dict[int, list[int]] = {}
        for process in psutil.process_iter(["ppid"]):
            table.setdefault(process.info["ppid"], []).append(process.pid)
        _table = (now, table)
    return _table[1]


def descendants(pid: int, table: dict[int, list[int]]) -> list[int]:
    found, todo = [], list(table.get(pid, ()))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(table.get(child, ()))
    return found


class ProcessTree:
    """Samples a process and its descendants; the membership is rescanned now and then."""

    def __init__(self, root: psutil.Process) -> None:
        self._root = root
        self._members: list[psutil.Process] = [self._root]
        self._scanned = 0.0
        self._cpu_time = 0.0
        self._last: tuple[float, float] | None = None  # (monotonic time, cpu time)

    @classmethod
    def of(cls, root_pid: int) -> ProcessTree | None:
        """The tree under root_pid, or None if that process is already gone."""
        try:
            return cls(psutil.Process(root_pid))
        except psutil.Error:
            return None

    def members(self, rescan: bool = False) -> list[psutil.Process]:
        """The root and its descendants: rescanned now (before a signal), or when the list
        is older than RESCAN_S (from a table other trees may share)."""
        now = time.monotonic()
        if rescan or now - self._scanned >= RESCAN_S:
            table = children_by_parent(0.0 if rescan else RESCAN_S / 2)
            known = {member.pid: member for member in self._members}
            members = [self._root]
            for pid in descendants(self._root.pid, table):
                with suppress(psutil.Error):
                    members.append(known.get(pid) or psutil.Process(pid))
            self._members = members + self._job_members({m.pid for m in members})
            self._scanned = now
        return self._members

    def _job_members(self, known: set[int]) -> list[psutil.Process]:
        """Members its tree by parent pid misses: on Windows, orphans in the run's job."""
        found = []
        for pid in platform.job_pids(self._root.pid):
            if pid not in known:
                with suppress(psutil.Error):
                    found.append(psutil.Process(pid))
        return found

    def sample(self) -> Usage | None:
        rss, cpu, pids = 0, 0.0, []
        for member in self.members():
            with suppress(psutil.Error), member.oneshot():
                times = member.cpu_times()
                cpu += times.user + times.system
                if member is self._root:  # descendants it already reaped
                    cpu += times.children_user + times.children_system
                rss += getattr(member.memory_info(), platform.memory_field())
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


def signal_tree(root_pid: int, graceful: bool, members: Sequence[psutil.Process]) -> None:
    """SIGTERM (or SIGKILL) to the root's process group and to every listed member, so that
    descendants that left the group with a session of their own are reached too. Windows:
    CTRL_BREAK to the group (or the run's whole job object), and only a kill per member."""
    platform.signal_group(root_pid, graceful)
    if graceful and not platform.polite_per_process():
        return
    for member in members:
        with suppress(psutil.Error):
            member.terminate() if graceful else member.kill()


def escalate(
    signal: Callable[[bool], None], kill_at: float | None, grace: float, now: float
) -> float:
    """Stopping a tree, one step at a time (every stop with a grace goes through here): the
    first step asks it to end (`signal(True)`: SIGTERM, CTRL_BREAK on Windows); once `grace`
    is over, it is killed (`signal(False)`), again every KILL_AGAIN_S for what it started
    meanwhile. Never blocks: call it again at the time it returns (kill_at) until the tree
    is gone."""
    if kill_at is None:
        signal(True)
        return now + grace
    if now >= kill_at:
        signal(False)
        return now + KILL_AGAIN_S
    return kill_at


def stop_signal(
    root_pid: int, members: Callable[[], Sequence[psutil.Process]]
) -> Callable[[bool], None]:
    """`signal` for escalate on a run's tree: a paused (stopped) tree is resumed first, since
    a stopped process cannot act on SIGTERM; the members are listed again at each signal."""

    def signal(graceful: bool) -> None:
        found = members()
        if graceful:
            suspend_tree(root_pid, False, found)
        signal_tree(root_pid, graceful, found)

    return signal


def suspend_tree(root_pid: int, paused: bool, members: Sequence[psutil.Process]) -> None:
    platform.suspend_group(root_pid, paused)
    for member in members:
        with suppress(psutil.Error):
            member.suspend() if paused else member.resume()
