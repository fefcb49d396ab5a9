"""Everything about processes and files that differs between POSIX and Windows, behind one
switch.

Runs must outlive the kernel that started them: Jupyter kernels end their descendants at
shutdown (process group on POSIX, the whole tree on Windows), so the home's service is
started detached, with no parent link back to the caller. Each run's child gets its own
process group so that one signal reaches the whole tree it spawns.

Liveness is proven by OS file locks held by the living process (a lock dies with its
holder, whatever happens to pids), and a pid is only signalled once its start marker
matches the one recorded when it was started.

The decisions (which command, which flags) are plain functions of `windows`, so both
branches are unit-tested on any machine; only the system calls are platform-bound.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

IS_WINDOWS = sys.platform == "win32"
IS_LINUX = sys.platform.startswith("linux")
PR_SET_CHILD_SUBREAPER = 36
CGROUP_ROOT = Path("/sys/fs/cgroup")

# Win32 process creation flags, spelled out so both branches can be built and checked here.
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000
CREATE_BREAKAWAY_FROM_JOB = 0x01000000
# CREATE_NO_WINDOW, not DETACHED_PROCESS: the supervisor keeps a hidden console, which
# CTRL_BREAK_EVENT needs to reach the child's process group.
DETACHED_FLAGS = CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW | CREATE_BREAKAWAY_FROM_JOB


def child_popen_kwargs(windows: bool = IS_WINDOWS) -> dict[str, Any]:
    """Popen arguments that put a run's child in a process group of its own."""
    if windows:
        return {"creationflags": CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def detach_command(
    argv: Sequence[str], windows: bool = IS_WINDOWS
) -> tuple[list[str], dict[str, Any]]:
    """The command that starts argv detached, and the Popen arguments for it.

    POSIX: a shell backgrounds argv and exits at once, so argv is re-parented to init, in a
    new session away from the kernel's process group. Windows: a short-lived launcher
    breaks the parent chain that tree-killers walk.
    """
    if windows:
        return [sys.executable, "-m", "nbrunner.platform", *argv], {"creationflags": DETACHED_FLAGS}
    return ["/bin/sh", "-c", '"$@" &', "sh", *argv], {"start_new_session": True, "close_fds": True}


def spawn_detached(argv: Sequence[str], stderr_path: str) -> None:
    """Start argv so that it is nobody's descendant and survives this process's death."""
    command, options = detach_command(argv)
    fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with open(fd, "ab") as stderr:
        subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            check=True,
            **options,
        )


def signal_group(pid: int, graceful: bool) -> None:
    """Signal the process group led by pid: politely (SIGTERM / CTRL_BREAK) or for good."""
    try:
        if IS_WINDOWS:  # pragma: no cover - Windows only
            if graceful:
                os.kill(pid, signal.CTRL_BREAK_EVENT)
            else:
                subprocess.run(
                    ["taskkill", "/F", "/T", "/PID", str(pid)], capture_output=True, check=False
                )
        else:
            os.killpg(pid, signal.SIGTERM if graceful else signal.SIGKILL)
    except OSError:
        pass  # already gone


def suspend_group(pid: int, pause: bool) -> None:
    """Stop or continue the process group led by pid (the caller also suspends by process,
    which is all Windows offers)."""
    if IS_WINDOWS:  # pragma: no cover
        return
    with suppress(OSError):
        os.killpg(pid, signal.SIGSTOP if pause else signal.SIGCONT)


def try_lock(path: Path) -> int | None:
    """An exclusive lock on path held through the returned descriptor, or None if another
    process holds it. The lock ends with the descriptor, or with the process, however it
    dies; descriptors are not inherited by children (Python's default)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if IS_WINDOWS:  # pragma: no cover - Windows only
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def is_locked(path: Path) -> bool:
    """Whether a living process holds the lock on path."""
    fd = try_lock(path)
    if fd is None:
        return True
    os.close(fd)
    return False


def start_marker(pid: int) -> str | None:
    """What tells this process from any later one with the same pid, or None if it is gone.

    Linux: the start time in clock ticks since boot, which a wall-clock step does not move
    (psutil's create time is derived from the boot time and moves with the clock).
    Elsewhere: the creation time the OS keeps.
    """
    if IS_LINUX:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = stat[stat.rindex(")") + 2 :].split()
        return None if fields[0] in ("Z", "X") else fields[19]
    import psutil  # pragma: no cover - not Linux

    try:  # pragma: no cover
        process = psutil.Process(pid)
        return None if process.status() == psutil.STATUS_ZOMBIE else repr(process.create_time())
    except psutil.Error:  # pragma: no cover
        return None


def is_same_process(pid: int | None, marker: str | None) -> bool:
    return pid is not None and marker is not None and start_marker(pid) == marker


def usable_cpus() -> tuple[int, ...]:
    """The CPUs this process may run on: its affinity (taskset, a container's cpuset, a
    Windows affinity mask), which its children inherit."""
    if hasattr(os, "sched_getaffinity"):
        return tuple(sorted(os.sched_getaffinity(0)))
    import psutil  # pragma: no cover - no sched_getaffinity (Windows, macOS)

    try:  # pragma: no cover
        return tuple(sorted(psutil.Process().cpu_affinity()))  # type: ignore[attr-defined]
    except (AttributeError, psutil.Error):  # pragma: no cover - macOS has no affinity
        return tuple(range(os.cpu_count() or 1))


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, membership: str | None = None) -> float | None:
    """The CPU quota (in CPUs) of this process's cgroup or the tightest of its ancestors,
    v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us` / `cpu.cfs_period_us`); None where no quota is
    set or there are no cgroups. `membership` is /proc/self/cgroup's text."""
    if membership is None:
        try:
            membership = Path("/proc/self/cgroup").read_text()
        except OSError:
            return None
    quotas = []
    for line in membership.splitlines():
        hierarchy, controllers, path = [*line.split(":", 2), "", ""][:3]
        if hierarchy == "0" and not controllers:
            quotas += _quotas_up(root, path, _v2_quota)
        elif "cpu" in controllers.split(","):
            quotas += _quotas_up(root / controllers, path, _v1_quota)
    return min(quotas, default=None)


def _quotas_up(mount: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
    """The quotas set on a cgroup and its ancestors that are visible under `mount` (in a
    container the mount is the container's own cgroup, whatever the path says)."""
    parts = [p for p in path.split("/") if p]
    found = (read(mount.joinpath(*parts[:depth])) for depth in range(len(parts), -1, -1))
    return [quota for quota in found if quota is not None]


def _v2_quota(directory: Path) -> float | None:
    try:
        quota, period = (directory / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _v1_quota(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def become_subreaper() -> bool:
    """Linux: orphaned descendants are re-parented to this process instead of init, so a
    run's recorder can find and stop what its child left behind."""
    if not IS_LINUX:
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


if __name__ == "__main__":  # pragma: no cover - the Windows launcher of spawn_detached
    subprocess.Popen(
        sys.argv[1:],
        creationflags=DETACHED_FLAGS,
        close_fds=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
