"""Why a run failed, in one line, from its exit code and the end of its log.

`failure_reason` is the decision: a pure function of the exit code, the log's last lines and
whether the kernel said it killed the run for memory. In order:
- a POSIX signal by name ("killed by signal SIGSEGV (segmentation fault)"), SIGKILL with
  "out of memory?" when the kernel's log or the cgroup counted an OOM kill;
- a Windows crash code decoded ("crashed: 0xC0000005 access violation");
- Python's final exception line ("ValueError: ..."), for scripts, `-m` modules and `-c` alike;
- else "exited with code N: " and the last non-empty line the run printed, colours stripped,
  cut to `MAX_REASON`;
- CUDA's "out of memory" is named wherever the run printed it.
`run_failure` gathers those inputs for a finished run.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from .logs import collapse_carriage_returns, decode, read_tail_bytes, strip_ansi

MAX_REASON = 240
TAIL_LINES = 200
TAIL_BYTES = 64 * 1024
_TRACEBACK = "Traceback (most recent call last):"
_CUDA_OOM = re.compile(
    r"CUDA out of memory|CUDA error: out of memory|cudaErrorMemoryAllocation|"
    r"CUBLAS_STATUS_ALLOC_FAILED|CUDA_ERROR_OUT_OF_MEMORY",
    re.IGNORECASE,
)
_SIGNALS = {
    "SIGSEGV": "segmentation fault",
    "SIGABRT": "aborted",
    "SIGBUS": "bus error",
    "SIGFPE": "arithmetic error",
    "SIGILL": "illegal instruction",
    "SIGTERM": "terminated",
    "SIGINT": "interrupted",
    "SIGHUP": "its terminal hung up",
    "SIGPIPE": "broken pipe",
}
# NTSTATUS codes a crashed Windows process exits with (ntstatus.h); the exit code is their
# unsigned 32-bit value, or the same bits read as a negative number.
_NTSTATUS = {
    0xC0000005: "access violation",
    0xC0000409: "stack buffer overrun (a fail-fast abort)",
    0xC00000FD: "stack overflow",
    0xC0000017: "out of memory",
    0xC000001D: "illegal instruction",
    0xC0000094: "integer division by zero",
    0xC0000096: "privileged instruction",
    0xC000013A: "interrupted by Ctrl+C",
    0xC0000135: "a DLL was not found",
    0xC0000142: "a DLL failed to initialise",
    0xC0000374: "heap corruption",
    0x40010004: "killed by a debugger or the task manager",
}
_LARGEST_SIGNAL = 128


def failure_reason(exit_code: int | None, log_tail: str, *, oom_killed: bool = False) -> str:
    """One line saying why a run with this exit code and these last log lines failed."""
    if exit_code is None:
        return "ended without an exit code"
    if -_LARGEST_SIGNAL <= exit_code < 0:
        return _cuda_named(_signal_death(-exit_code, oom_killed), log_tail)
    crash = windows_crash(exit_code)
    if crash:
        return _cuda_named(f"crashed: {crash}", log_tail)
    exited = f"exited with code {exit_code}"
    said = _exception_line(log_tail)
    if said is None:
        last = _last_line(log_tail)
        said = f"{exited}: {last}" if last else exited
    return _cuda_named(said, log_tail)


def windows_crash(exit_code: int) -> str | None:
    """'0xC0000005 access violation' for a Windows crash code, else None."""
    status = exit_code & 0xFFFFFFFF
    meaning = _NTSTATUS.get(status)
    return f"0x{status:08X} {meaning}" if meaning else None


def _signal_death(number: int, oom_killed: bool) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"killed by signal {number}"
    if name == "SIGKILL" and oom_killed:
        return "killed by signal SIGKILL — out of memory?"
    meaning = _SIGNALS.get(name)
    return f"killed by signal {name}" + (f" ({meaning})" if meaning else "")


def _exception_line(log_tail: str) -> str | None:
    """Python's final exception line, if the tail holds a traceback."""
    lines = log_tail.splitlines()
    starts = [i for i, line in enumerate(lines) if line.rstrip().endswith(_TRACEBACK)]
    if starts:
        for line in lines[starts[-1] + 1 :]:
            # frames and their source lines are indented; the exception line is not
            if line.strip() and not line[0].isspace():
                return _cut(line.rstrip())
    return None


def _last_line(log_tail: str) -> str:
    for line in reversed(log_tail.splitlines()):
        if line.strip():
            return _cut(line.strip())
    return ""


def _cuda_named(reason: str, log_tail: str) -> str:
    if "out of memory" in reason.lower() or not _CUDA_OOM.search(log_tail):
        return reason
    return f"CUDA out of memory: {reason}"


def _cut(line: str) -> str:
    return line if len(line) <= MAX_REASON else line[: MAX_REASON - 1] + "…"


def log_tail(path: str | Path) -> str:
    """The log's last lines as a person would read them: redraws collapsed, colours gone."""
    data = read_tail_bytes(path, TAIL_LINES, TAIL_BYTES)
    return strip_ansi(collapse_carriage_returns(decode(data)))


def run_failure(exit_code: int | None, log_path: str | Path, pid: int | None) -> str:
    """The reason of a run that ended with this code, from its log and the kernel's word."""
    killed = exit_code == -getattr(signal, "SIGKILL", 9)
    return failure_reason(exit_code, log_tail(log_path), oom_killed=killed and oom_kill_seen(pid))


def oom_kill_seen(pid: int | None, cgroup_root: Path = Path("/sys/fs/cgroup")) -> bool:
    """Whether Linux says memory ran out: the kernel log names the pid as killed, or this
    process's cgroup (where runs live too) counted an OOM kill. False where unreadable."""
    return (pid is not None and _kernel_log_names(pid)) or _cgroup_oom_kills(cgroup_root) > 0


def _kernel_log_names(pid: int) -> bool:
    """/dev/kmsg, read without blocking; most systems allow it to root only."""
    pattern = re.compile(rf"Killed process {pid}\b|Out of memory.*process {pid}\b")
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                return False  # the end of the buffer
            except OSError:
                continue  # EPIPE: a record was overwritten while reading; go on
            if not record:
                return False
            if pattern.search(record.decode("utf-8", "replace")):
                return True
    finally:
        os.close(fd)


def _cgroup_oom_kills(root: Path) -> int:
    """The oom_kill count of this process's memory cgroup, 0 if unknown: cgroup v2's
    `memory.events` or v1's `memory.oom_control`, at the cgroup's path or, in a container
    whose own cgroup is mounted as the root, at the root."""
    for line in _read("/proc/self/cgroup").splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2
            folder, name = root, "memory.events"
        elif "memory" in controllers.split(","):
            folder, name = root / "memory", "memory.oom_control"
        else:
            continue
        for candidate in (folder / path.lstrip("/") / name, folder / name):
            text = _read(candidate)
            if text:
                return parse_oom_kills(text)
    return 0


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def parse_oom_kills(memory_events: str) -> int:
    """The `oom_kill N` count of a cgroup v2 memory.events file."""
    for line in memory_events.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value) if value.strip().isdigit() else 0
    return 0
