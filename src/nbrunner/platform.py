"""Everything about processes and files that differs between POSIX and Windows, behind one
switch.

Runs must outlive the kernel that started them: Jupyter kernels end their descendants at
shutdown (process group on POSIX, the whole tree on Windows), so the home's service is
started detached, with no parent link back to the caller. Each run's child gets its own
process group so that one signal reaches the whole tree it spawns.

Liveness is proven by OS file locks held by the living process (a lock dies with its
holder, whatever happens to pids), and a pid is only signalled once its start marker
matches the one recorded when it was started.

POSIX: a run's child leads a session of its own; SIGTERM to its group, SIGKILL after the
grace period, and the recorder (the child subreaper on Linux) stops what is left. Windows:
the child starts suspended in a process group of its own and is put in a job object
(kill-on-close, a memory limit behind the service's) before it runs; CTRL_BREAK to its
group, then the job is terminated. Where a job forbids breaking away, processes start in
it with a warning. Memory is RSS on POSIX and private bytes on Windows.

Which CPUs a run may get (affinity, cgroup quotas), how a command line splits into argv,
and how a shell runs argv in a directory are here too.

The decisions (which command, which flags, which structures) are plain functions of
`windows`, so both branches are unit-tested on any machine; only the system calls are
platform-bound.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import shlex
import signal
import struct
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

IS_WINDOWS = sys.platform == "win32"
# Windows' C runtime opens a descriptor as text unless told: "\n" would be written "\r\n"
# (and offsets no longer match lengths), as tempfile knows too.
O_BINARY = getattr(os, "O_BINARY", 0)
IS_LINUX = sys.platform.startswith("linux")
PR_SET_CHILD_SUBREAPER = 36
CGROUP_ROOT = Path("/sys/fs/cgroup")
LOCK_PATIENCE_S = 0.5

# Win32 process creation flags, spelled out so both branches can be built and checked here.
CREATE_SUSPENDED = 0x00000004
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000
CREATE_BREAKAWAY_FROM_JOB = 0x01000000
# CREATE_NO_WINDOW, not DETACHED_PROCESS: the service keeps a hidden console, which
# CTRL_BREAK_EVENT needs to reach a run's process group.
DETACHED_FLAGS = CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW | CREATE_BREAKAWAY_FROM_JOB
# A recorder shares the service's hidden console (no CREATE_NO_WINDOW: that would give it a
# console of its own), so the service's CTRL_BREAK reaches the run's group. A later service
# that adopts the run has another console: its CTRL_BREAK fails quietly and the run's job is
# terminated after the grace period.
RECORDER_FLAGS = CREATE_NEW_PROCESS_GROUP | CREATE_BREAKAWAY_FROM_JOB
BREAKAWAY_REFUSED = (
    "nbrunner: this process runs in a Windows job that forbids breaking away from it (Task "
    "Scheduler, RunAs, some IDE launchers); what it starts now stays in that job and ends "
    "when the job is closed. Start Jupyter or nbrunner from a plain terminal to avoid this."
)
# Windows job objects (winnt.h)
JOB_OBJECT_LIMIT_JOB_MEMORY = 0x00000200
JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x00002000
JOB_EXTENDED_LIMIT_INFORMATION = 9  # JOBOBJECTINFOCLASS
JOB_BASIC_PROCESS_ID_LIST = 3  # JOBOBJECTINFOCLASS
JOB_OBJECT_QUERY = 0x0004
JOB_OBJECT_ALL_ACCESS = 0x1F001F
# A job's own memory limit backs the service's (which stops a run with a clear reason): set
# this far above it, it only acts when no service is watching.
JOB_MEMORY_HEADROOM = 1.25


def child_popen_kwargs(windows: bool = IS_WINDOWS) -> dict[str, Any]:
    """Popen arguments that put a run's child in a process group of its own; on Windows it
    starts suspended, so it is in its job object (`contain`) before it can start anything."""
    if windows:
        return {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_SUSPENDED}
    return {"start_new_session": True}


def recorder_popen_kwargs(windows: bool = IS_WINDOWS) -> dict[str, Any]:
    """Popen arguments of a recorder started as its own interpreter (Windows; POSIX runs
    the same path when asked to, so that its logic is exercised everywhere): out of the
    service's process group, so signals meant for the service never reach it."""
    if windows:
        return {"creationflags": RECORDER_FLAGS}
    return {"start_new_session": True}


ChildExit = tuple[int, dict[str, float]]  # exit code; cpu_time (s) and peak_rss (bytes)


def wait_child(child: subprocess.Popen[bytes], timeout: float | None) -> ChildExit | None:
    """Wait up to timeout seconds (None: for good) for the child to end: its exit code and
    what it used, from the OS's own accounts (CPU seconds of it and of what it waited for,
    peak memory), however short it was; None while it still runs."""
    if IS_WINDOWS:  # pragma: no cover - Windows only
        try:
            code = child.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return code, _windows_usage(child)
    if timeout is not None and not _exited_within(child.pid, timeout):
        return None
    return reap_child(child)


def reap_child(child: subprocess.Popen[bytes]) -> ChildExit:
    """POSIX: the exit of a child that has ended (or waited for until it does)."""
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)  # so Popen never waits for it again
    peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)  # bytes there, KiB here
    return child.returncode, {"cpu_time": usage.ru_utime + usage.ru_stime, "peak_rss": peak}


def exit_signal(pid: int) -> int | None:
    """A descriptor that becomes readable in select() when process pid ends (a Linux
    pidfd), so a sleeper can wait on several processes and a socket at once; None where
    the OS has none (macOS, Windows, old kernels) or pid is gone: the caller polls then."""
    with suppress(OSError, AttributeError):
        return int(os.pidfd_open(pid))  # type: ignore[attr-defined]
    return None


def _exited_within(pid: int, timeout: float) -> bool:
    """Whether the (unreaped) child pid ends within timeout: one pidfd to sleep on where
    the OS has them, else a look every 0.1 s that leaves it unreaped."""
    import select

    fd = exit_signal(pid)
    if fd is not None:
        try:
            return bool(select.select([fd], [], [], max(timeout, 0.0))[0])
        finally:
            os.close(fd)
    deadline = time.monotonic() + timeout  # pragma: no cover - no pidfd (macOS, old kernels)
    while True:  # pragma: no cover
        found = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if found is not None or time.monotonic() >= deadline:
            return found is not None
        time.sleep(min(0.1, max(deadline - time.monotonic(), 0.0)))


def polite_per_process(windows: bool = IS_WINDOWS) -> bool:
    """Whether a polite stop also goes to each process of a run. POSIX: SIGTERM to every
    member too, for descendants that left the group. Windows has no polite signal for one
    process (TerminateProcess kills at once): CTRL_BREAK to the run's group is all."""
    return not windows


def memory_field(windows: bool = IS_WINDOWS) -> str:
    """The memory a run is charged (a field of psutil's memory_info): RSS on POSIX; on
    Windows the working set can be trimmed at will, so the committed private bytes."""
    return "private" if windows else "rss"


def job_name(child_pid: int) -> str:
    """The name of a run's job object, so that the service can terminate it by name."""
    return f"Local\\nbrunner-run-{child_pid}"


def job_limits(keep_leftovers: bool, memory_limit: int) -> tuple[int, int]:
    """A run's job object limits: (LimitFlags, JobMemoryLimit). Its processes end with the
    recorder's handle (kill-on-close) unless the module keeps what it leaves behind."""
    flags = 0 if keep_leftovers else JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
    if not memory_limit:
        return flags, 0
    return flags | JOB_OBJECT_LIMIT_JOB_MEMORY, int(memory_limit * JOB_MEMORY_HEADROOM)


def detach_command(
    argv: Sequence[str], windows: bool = IS_WINDOWS
) -> tuple[list[str], dict[str, Any]]:
    """The command that starts argv detached, and the Popen arguments for it.

    POSIX: a shell backgrounds argv and exits at once, so argv is re-parented to init, in a
    new session away from the kernel's process group. Windows: a short-lived launcher
    breaks the parent chain that tree-killers walk. Either prints the pid it started.
    """
    if windows:
        return [sys.executable, "-m", "nbrunner.platform", *argv], {"creationflags": DETACHED_FLAGS}
    shell = ["/bin/sh", "-c", '"$@" >/dev/null & echo $!', "sh"]
    return [*shell, *argv], {"start_new_session": True, "close_fds": True}


def popen_detached(argv: Sequence[str], **options: Any) -> subprocess.Popen[bytes]:
    """Popen, breaking away from this process's Windows job where the flags ask to. A job
    that forbids it refuses with WinError 5: then the process starts inside it, with a
    warning (BREAKAWAY_REFUSED)."""
    flags = options.get("creationflags", 0)
    try:
        return subprocess.Popen(argv, **options)
    except PermissionError:
        if not flags & CREATE_BREAKAWAY_FROM_JOB:
            raise
    warnings.warn(BREAKAWAY_REFUSED, RuntimeWarning, stacklevel=2)
    options["creationflags"] = flags & ~CREATE_BREAKAWAY_FROM_JOB
    return subprocess.Popen(argv, **options)


def spawn_detached(argv: Sequence[str], stderr_path: str) -> int:
    """Start argv so that it is nobody's descendant and survives this process's death;
    its pid."""
    command, options = detach_command(argv)
    fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with open(fd, "ab") as stderr:
        launcher = popen_detached(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, **options
        )
        printed, _ = launcher.communicate()
    if launcher.returncode:
        raise subprocess.CalledProcessError(launcher.returncode, command)
    return int(printed)


def signal_group(pid: int, graceful: bool) -> None:
    """Signal the process group led by pid: politely (SIGTERM / CTRL_BREAK) or for good
    (SIGKILL / the run's whole job object)."""
    try:
        if IS_WINDOWS:  # pragma: no cover - Windows only
            if graceful:
                os.kill(pid, signal.CTRL_BREAK_EVENT)
            elif not _terminate_job(job_name(pid)):
                subprocess.run(
                    ["taskkill", "/F", "/T", "/PID", str(pid)], capture_output=True, check=False
                )
        else:
            os.killpg(pid, signal.SIGTERM if graceful else signal.SIGKILL)
    except OSError:
        pass  # already gone


def contain(child: subprocess.Popen[bytes], keep_leftovers: bool, memory_limit: int) -> None:
    """Windows: put the (suspended) child in a job object of its own, then let it run. The
    job's handle stays open for the recorder's life: when the recorder ends, however it
    ends, so does everything in the job (unless the module keeps its leftovers). POSIX:
    nothing to do, the child's session is its container."""
    if not IS_WINDOWS:
        return
    import psutil  # pragma: no cover - Windows only

    try:  # pragma: no cover
        _create_job(job_name(child.pid), child, *job_limits(keep_leftovers, memory_limit))
    except OSError as exc:  # pragma: no cover - e.g. a job that forbids nesting
        warnings.warn(f"nbrunner: no job object for the run ({exc})", RuntimeWarning, stacklevel=2)
    finally:  # pragma: no cover
        psutil.Process(child.pid).resume()


# -- Win32 job objects through ctypes (no pywin32); the structures are checked anywhere --------
class IoCounters(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in ("Read", "Write", "Other", "ReadBytes", "WriteBytes", "OtherBytes")
    ]


class BasicLimits(ctypes.Structure):  # JOBOBJECT_BASIC_LIMIT_INFORMATION
    _fields_ = [
        ("PerProcessUserTimeLimit", ctypes.c_int64),
        ("PerJobUserTimeLimit", ctypes.c_int64),
        ("LimitFlags", ctypes.c_uint32),
        ("MinimumWorkingSetSize", ctypes.c_size_t),
        ("MaximumWorkingSetSize", ctypes.c_size_t),
        ("ActiveProcessLimit", ctypes.c_uint32),
        ("Affinity", ctypes.c_size_t),
        ("PriorityClass", ctypes.c_uint32),
        ("SchedulingClass", ctypes.c_uint32),
    ]


class ExtendedLimits(ctypes.Structure):  # JOBOBJECT_EXTENDED_LIMIT_INFORMATION
    _fields_ = [
        ("BasicLimitInformation", BasicLimits),
        ("IoInfo", IoCounters),
        ("ProcessMemoryLimit", ctypes.c_size_t),
        ("JobMemoryLimit", ctypes.c_size_t),
        ("PeakProcessMemoryUsed", ctypes.c_size_t),
        ("PeakJobMemoryUsed", ctypes.c_size_t),
    ]


class ProcessIdList(ctypes.Structure):  # JOBOBJECT_BASIC_PROCESS_ID_LIST, room for 1024
    _fields_ = [
        ("NumberOfAssignedProcesses", ctypes.c_uint32),
        ("NumberOfProcessIdsInList", ctypes.c_uint32),
        ("ProcessIdList", ctypes.c_size_t * 1024),
    ]


def job_pids(child_pid: int) -> list[int]:
    """Windows: every process in the run's job object, orphans and late arrivals included
    (its tree by parent pid misses those). POSIX: none beyond the tree (the recorder is the
    run's subreaper, and its session is signalled as one)."""
    if not IS_WINDOWS:
        return []
    kernel32 = _kernel32()  # pragma: no cover - Windows only
    job = kernel32.OpenJobObjectW(JOB_OBJECT_QUERY, 0, job_name(child_pid))  # pragma: no cover
    if not job:  # pragma: no cover
        return []
    try:  # pragma: no cover
        found = ProcessIdList()
        if not kernel32.QueryInformationJobObject(
            job, JOB_BASIC_PROCESS_ID_LIST, ctypes.byref(found), ctypes.sizeof(found), None
        ):
            return []
        return [int(pid) for pid in found.ProcessIdList[: found.NumberOfProcessIdsInList]]
    finally:  # pragma: no cover
        kernel32.CloseHandle(job)


@functools.cache
def _kernel32() -> Any:  # pragma: no cover - Windows only
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    kernel32.CreateJobObjectW.restype = ctypes.c_void_p
    kernel32.CreateJobObjectW.argtypes = (ctypes.c_void_p, ctypes.c_wchar_p)
    kernel32.OpenJobObjectW.restype = ctypes.c_void_p
    kernel32.OpenJobObjectW.argtypes = (ctypes.c_uint32, ctypes.c_int, ctypes.c_wchar_p)
    kernel32.SetInformationJobObject.argtypes = (
        ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32,
    )  # fmt: skip
    kernel32.AssignProcessToJobObject.argtypes = (ctypes.c_void_p, ctypes.c_void_p)
    kernel32.TerminateJobObject.argtypes = (ctypes.c_void_p, ctypes.c_uint32)
    kernel32.QueryInformationJobObject.argtypes = (
        ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p,
    )  # fmt: skip
    kernel32.CloseHandle.argtypes = (ctypes.c_void_p,)
    kernel32.GetProcessTimes.argtypes = (ctypes.c_void_p, *[ctypes.c_void_p] * 4)
    kernel32.K32GetProcessMemoryInfo.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32)
    return kernel32


def _check(result: Any) -> Any:  # pragma: no cover - Windows only
    if not result:
        raise ctypes.WinError(ctypes.get_last_error())  # type: ignore[attr-defined]
    return result


def _create_job(  # pragma: no cover - Windows only
    name: str, child: subprocess.Popen[bytes], flags: int, job_memory: int
) -> int:
    kernel32 = _kernel32()
    job = _check(kernel32.CreateJobObjectW(None, name))
    limits = ExtendedLimits()
    limits.BasicLimitInformation.LimitFlags = flags
    limits.JobMemoryLimit = job_memory
    _check(
        kernel32.SetInformationJobObject(
            job, JOB_EXTENDED_LIMIT_INFORMATION, ctypes.byref(limits), ctypes.sizeof(limits)
        )
    )
    _check(kernel32.AssignProcessToJobObject(job, int(child._handle)))  # type: ignore[attr-defined]
    return job


class MemoryCounters(ctypes.Structure):  # PROCESS_MEMORY_COUNTERS
    _fields_ = [
        ("cb", ctypes.c_uint32),
        ("PageFaultCount", ctypes.c_uint32),
        *[
            (name, ctypes.c_size_t)
            for name in (
                "PeakWorkingSetSize", "WorkingSetSize", "QuotaPeakPagedPoolUsage",
                "QuotaPagedPoolUsage", "QuotaPeakNonPagedPoolUsage", "QuotaNonPagedPoolUsage",
                "PagefileUsage", "PeakPagefileUsage",
            )
        ],
    ]  # fmt: skip


def _windows_usage(child: subprocess.Popen[bytes]) -> dict[str, float]:  # pragma: no cover
    """CPU seconds (GetProcessTimes: kernel + user, in 100 ns) and peak private bytes of the
    ended child, read through the handle its Popen still holds."""
    kernel32 = _kernel32()
    handle = int(child._handle)  # type: ignore[attr-defined]
    creation, ended, kernel, user = (ctypes.c_uint64() for _ in range(4))  # FILETIMEs
    usage: dict[str, float] = {}
    if kernel32.GetProcessTimes(handle, *map(ctypes.byref, (creation, ended, kernel, user))):
        usage["cpu_time"] = (kernel.value + user.value) / 1e7
    counters = MemoryCounters(cb=ctypes.sizeof(MemoryCounters))
    if kernel32.K32GetProcessMemoryInfo(handle, ctypes.byref(counters), counters.cb):
        usage["peak_rss"] = counters.PeakPagefileUsage
    return usage


def _terminate_job(name: str) -> bool:  # pragma: no cover - Windows only
    """Terminate every process in the named job; False if there is no such job."""
    kernel32 = _kernel32()
    job = kernel32.OpenJobObjectW(JOB_OBJECT_ALL_ACCESS, 0, name)
    if not job:
        return False
    try:
        return bool(kernel32.TerminateJobObject(job, 1))
    finally:
        kernel32.CloseHandle(job)


def suspend_group(pid: int, pause: bool) -> None:
    """Stop or continue the process group led by pid (the caller also suspends by process,
    which is all Windows offers)."""
    if IS_WINDOWS:  # pragma: no cover
        return
    with suppress(OSError):
        os.killpg(pid, signal.SIGSTOP if pause else signal.SIGCONT)


def try_lock(path: Path, create: bool = True) -> int | None:
    """An exclusive lock on path held through the returned descriptor, or None if another
    process holds it (or, with create=False, if there is no such file). The lock ends with
    the descriptor, or with the process, however it dies; descriptors are not inherited by
    children (Python's default)."""
    try:
        fd = os.open(path, os.O_RDWR | O_BINARY | (os.O_CREAT if create else 0), 0o600)
    except FileNotFoundError:
        if create:
            raise
        return None
    try:
        if IS_WINDOWS:  # pragma: no cover - Windows only
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        elif OFD_LOCKS:
            _ofd_lock(fd, "F_OFD_SETLK", "F_WRLCK")
            _flock_as_older_releases_do(fd)
        else:  # pragma: no cover - POSIX without open file description locks (macOS)
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def is_locked(path: Path) -> bool:
    """Whether a living process holds the lock on path. Linux asks without taking the lock,
    so a check never makes the holder-to-be (a starting service, a recorder) find it taken;
    elsewhere the lock is taken and let go at once, and takers retry (`take_lock`)."""
    if OFD_LOCKS:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return False  # no lock file: nobody ever took it, or its home is gone
        try:
            held = _ofd_lock(fd, "F_OFD_GETLK", "F_WRLCK") != _ofd_lock_type("F_UNLCK")
            return held or _flock_held(fd)
        finally:
            os.close(fd)
    if not path.parent.is_dir():  # pragma: no cover - not Linux
        return False
    fd = try_lock(path)  # pragma: no cover - not Linux
    if fd is None:  # pragma: no cover
        return True
    os.close(fd)  # pragma: no cover
    return False  # pragma: no cover


def take_lock(path: Path, patience: float = LOCK_PATIENCE_S, create: bool = True) -> int | None:
    """try_lock, retried for a moment: where a liveness check holds the lock for an instant
    (not Linux), a taker that meets such a check must not give up."""
    deadline = time.monotonic() + patience
    while True:
        fd = try_lock(path, create)
        if fd is not None or OFD_LOCKS or time.monotonic() >= deadline:
            return fd
        time.sleep(0.01)  # pragma: no cover - not Linux


# Linux open file description locks: held like flock (per open file, not per process), and
# F_OFD_GETLK tests one without taking it. struct flock on 64-bit Linux.
OFD_LOCKS = IS_LINUX and struct.calcsize("P") == 8
_FLOCK = "hhqqi4x"  # l_type, l_whence, l_start, l_len, l_pid


def _ofd_lock_type(name: str) -> int:
    import fcntl

    return int(getattr(fcntl, name))


# Releases before OFD locks held flock locks, and on Linux the two kinds never see each other:
# a service or recorder of an older release, still running after an upgrade, must be seen
# alive (never doubled, its runs never taken for lost), and an older client must see ours.
# So holders take both, and a check that finds no OFD lock looks for a flock too.
def _flock_as_older_releases_do(fd: int, patience: float = LOCK_PATIENCE_S) -> None:
    """Take the flock beside the OFD lock; OSError if an older release's holder keeps it
    (a check's probe holds it for an instant only, so a moment's patience)."""
    import fcntl

    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


def _flock_held(fd: int) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def _ofd_lock(fd: int, command: str, kind: str) -> int:
    """One OFD lock call on the whole file; the lock type it reports back."""
    import fcntl

    request = struct.pack(_FLOCK, _ofd_lock_type(kind), os.SEEK_SET, 0, 0, 0)
    return int(struct.unpack(_FLOCK, fcntl.fcntl(fd, getattr(fcntl, command), request))[0])


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


def pin_this_thread(cores: Sequence[int]) -> None:
    """Run on these CPUs only (Linux: this thread; Windows: this process), as the children
    started meanwhile will; where the OS cannot, nothing changes."""
    with suppress(OSError, AttributeError, ValueError):
        os.sched_setaffinity(0, cores)  # type: ignore[attr-defined]
        return
    import psutil  # pragma: no cover - no sched_setaffinity (Windows, macOS)

    with suppress(psutil.Error, AttributeError, ValueError, OSError):  # pragma: no cover
        psutil.Process().cpu_affinity(list(cores))  # type: ignore[attr-defined]


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, membership: str | None = None) -> float | None:
    """The CPU quota (in CPUs) of this process's cgroup or the tightest of its ancestors,
    v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us` / `cpu.cfs_period_us`); None where no quota is
    set or there are no cgroups. `membership` is /proc/self/cgroup's text."""
    if membership is None:
        try:
            membership = Path("/proc/self/cgroup").read_text()
        except OSError:
            return None
    return min(_cgroup_limits(root, membership, "cpu", _v2_quota, _v1_quota), default=None)


def cgroup_memory_limit(
    root: Path = CGROUP_ROOT, membership: str | None = None
) -> tuple[int, int | None] | None:
    """The memory limit of this process's cgroup or the tightest of its ancestors (a
    container's), with what that cgroup uses now: (limit, usage) in bytes, v2 (`memory.max`,
    `memory.current`) or v1 (`memory.limit_in_bytes`, `memory.usage_in_bytes`); None where
    no limit is set ("max", or v1's huge "unlimited") or there are no cgroups."""
    if membership is None:
        try:
            membership = Path("/proc/self/cgroup").read_text()
        except OSError:
            return None
    return min(_cgroup_limits(root, membership, "memory", _v2_memory, _v1_memory), default=None)


def _cgroup_limits(
    root: Path,
    membership: str,
    controller: str,
    v2: Callable[[Path], Any],
    v1: Callable[[Path], Any],
) -> list[Any]:
    """The limits set on this process's cgroups and their ancestors, read by `v2` in the
    unified hierarchy and by `v1` in the one mounted for `controller`."""
    limits = []
    for line in membership.splitlines():
        hierarchy, controllers, path = [*line.split(":", 2), "", ""][:3]
        if hierarchy == "0" and not controllers:
            limits += _quotas_up(root, path, v2)
        elif controller in controllers.split(","):
            limits += _quotas_up(root / controllers, path, v1)
    return limits


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


# v1 reports "no limit" as the largest page-aligned signed 64-bit number; anything from
# 2**62 up is no limit on any machine that exists.
_NO_MEMORY_LIMIT = 2**62


def _v2_memory(directory: Path) -> tuple[int, int | None] | None:
    return _memory_pair(directory, "memory.max", "memory.current", "inactive_file")


def _v1_memory(directory: Path) -> tuple[int, int | None] | None:
    return _memory_pair(
        directory, "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"
    )


def _memory_pair(
    directory: Path, limit_name: str, usage_name: str, cache_key: str
) -> tuple[int, int | None] | None:
    """(limit, usage) of one cgroup. Usage leaves out the inactive page cache, as `docker
    stats` does: the kernel reclaims it before it would refuse a run its memory."""
    try:
        limit = int((directory / limit_name).read_text())
    except (OSError, ValueError):  # absent, or "max"
        return None
    if limit >= _NO_MEMORY_LIMIT:
        return None
    try:
        usage = int((directory / usage_name).read_text())
    except (OSError, ValueError):
        return limit, None
    try:
        stat = dict(line.split() for line in (directory / "memory.stat").read_text().splitlines())
        usage -= int(stat.get(cache_key, 0))
    except (OSError, ValueError):
        pass
    return limit, max(0, usage)


def direct_children() -> list[int]:
    """The pids of this process's children: on Linux kernels that list them in /proc/self
    (CONFIG_PROC_CHILDREN), else from every process's parent in /proc (a keeper looks at
    each run's end: read here, one stat file per process costs a 25th of psutil's
    children(), which makes an object of each); elsewhere psutil's."""
    if _PROC_CHILDREN:
        found: list[int] = []
        for task in os.listdir("/proc/self/task"):
            with suppress(OSError):
                found += map(int, Path(f"/proc/self/task/{task}/children").read_text().split())
        return found
    if IS_LINUX:
        me = os.getpid()
        return [pid for pid in _linux_pids() if _linux_parent(pid) == me]
    import psutil  # pragma: no cover - not Linux

    with suppress(psutil.Error):  # pragma: no cover
        return [p.pid for p in psutil.Process().children()]
    return []  # pragma: no cover


def _linux_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _linux_parent(pid: int) -> int | None:
    """The parent of pid, from /proc/PID/stat (None once it is gone)."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    except OSError:
        return None
    try:
        stat = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    return int(stat[stat.rindex(b")") + 2 :].split(None, 2)[1])


_PROC_CHILDREN = IS_LINUX and Path(f"/proc/self/task/{os.getpid()}/children").exists()


def become_subreaper() -> bool:
    """Linux: orphaned descendants are re-parented to this process instead of init, so a
    run's recorder can find and stop what its child left behind."""
    if not IS_LINUX:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def split_command(text: str, windows: bool = IS_WINDOWS) -> list[str]:
    """A command line as argv, split as this platform's programs split theirs: POSIX shell
    words (shlex; ValueError for an unclosed quote), or the Windows rules (backslashes are
    literal unless they precede a quote), so C:\\tools\\notify.exe stays whole."""
    return _split_windows(text) if windows else shlex.split(text)


def _split_windows(text: str) -> list[str]:
    """CommandLineToArgvW's rules (as the Microsoft C runtime parses argv since 2008)."""
    words: list[str] = []
    word: list[str] | None = None  # None: between words
    quoted, i = False, 0
    while i < len(text):
        char = text[i]
        if char in " \t" and not quoted:
            if word is not None:
                words.append("".join(word))
            word, i = None, i + 1
            continue
        word = [] if word is None else word
        if char == "\\":
            run = len(text) - i - len(text[i:].lstrip("\\"))
            if text[i + run : i + run + 1] == '"':  # 2n (+1): n backslashes (and a quote)
                word.append("\\" * (run // 2) + ('"' if run % 2 else ""))
                i += run + run % 2
            else:
                word.append("\\" * run)
                i += run
        elif char == '"':
            if quoted and text[i + 1 : i + 2] == '"':  # "" inside quotes: a quote
                word.append('"')
                i += 1
            else:
                quoted = not quoted
            i += 1
        else:
            word.append(char)
            i += 1
    if word is not None:
        words.append("".join(word))
    return words


LAUNCH_ENV = "NBRUNNER_LAUNCH"
# Reads argv and the directory from LAUNCH_ENV: no character of a run's arguments ever
# passes through cmd.exe, whose quoting cannot carry every one (%, ^, &, ").
_LAUNCHER = (
    "import json, os, subprocess, sys; a = json.loads(os.environ['NBRUNNER_LAUNCH']); "
    "sys.exit(subprocess.call(a['argv'], cwd=a['cwd']))"
)


def shell_command(
    argv: Sequence[str], cwd: str | None, windows: bool = IS_WINDOWS
) -> tuple[str, dict[str, str]]:
    """A command line that this platform's shell (sh; cmd.exe on Windows, as Ray runs a
    job's entrypoint) runs as argv in cwd, and the environment it needs."""
    if windows:
        launch = json.dumps({"argv": list(argv), "cwd": cwd})
        return subprocess.list2cmdline([sys.executable, "-c", _LAUNCHER]), {LAUNCH_ENV: launch}
    command = shlex.join(argv)
    return (f"cd {shlex.quote(cwd)} && {command}" if cwd else command), {}


if __name__ == "__main__":  # pragma: no cover - the Windows launcher of spawn_detached
    detached = popen_detached(
        sys.argv[1:],
        creationflags=DETACHED_FLAGS,
        close_fds=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    print(detached.pid)
