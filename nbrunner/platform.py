"""Everything about processes that differs between POSIX and Windows, behind one switch.

Runs must outlive the kernel that started them: Jupyter kernels end their descendants at
shutdown (process group on POSIX, the whole tree on Windows), so supervisors are started
detached, with no parent link back to the caller. Each run's child gets its own process
group so that one signal reaches the whole tree it spawns.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

IS_WINDOWS = sys.platform == "win32"

if IS_WINDOWS:  # pragma: no cover - Windows only
    _CHILD_FLAGS = subprocess.CREATE_NEW_PROCESS_GROUP
    # CREATE_NO_WINDOW, not DETACHED_PROCESS: the supervisor keeps a hidden console, which
    # CTRL_BREAK_EVENT needs to reach the child's process group.
    _DETACHED_FLAGS = (
        subprocess.CREATE_NEW_PROCESS_GROUP
        | subprocess.CREATE_NO_WINDOW
        | subprocess.CREATE_BREAKAWAY_FROM_JOB
    )
    GRACEFUL_SIGNAL = signal.CTRL_BREAK_EVENT
else:
    GRACEFUL_SIGNAL = signal.SIGTERM


def child_popen_kwargs() -> dict[str, Any]:
    """Popen arguments that put a run's child in a process group of its own."""
    if IS_WINDOWS:  # pragma: no cover
        return {"creationflags": _CHILD_FLAGS}
    return {"start_new_session": True}


def spawn_detached(argv: Sequence[str], stderr_path: str) -> None:
    """Start argv so that it is nobody's descendant and survives this process's death."""
    with open(stderr_path, "ab") as stderr:
        if IS_WINDOWS:  # pragma: no cover
            # A short-lived launcher breaks the parent chain that tree-killers walk.
            launcher = [sys.executable, "-m", "nbrunner.platform", *argv]
            subprocess.run(
                launcher,
                creationflags=_DETACHED_FLAGS,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                check=True,
            )
            return
        # The shell backgrounds argv and exits at once, so argv is re-parented to init, in
        # a new session away from the kernel's process group.
        subprocess.run(
            ["/bin/sh", "-c", '"$@" &', "sh", *argv],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            close_fds=True,
            check=True,
        )


def signal_group(pid: int, graceful: bool) -> None:
    """Signal the process group led by pid: politely (SIGTERM / CTRL_BREAK) or for good."""
    try:
        if IS_WINDOWS:  # pragma: no cover
            if graceful:
                os.kill(pid, GRACEFUL_SIGNAL)
            else:
                subprocess.run(
                    ["taskkill", "/F", "/T", "/PID", str(pid)], capture_output=True, check=False
                )
        else:
            os.killpg(pid, signal.SIGTERM if graceful else signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass  # already gone


def suspend_group(pid: int, pause: bool) -> None:
    """Stop or continue the process group led by pid (the tree is handled by the caller)."""
    if IS_WINDOWS:  # pragma: no cover - no group stop on Windows; psutil suspends per process
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGSTOP if pause else signal.SIGCONT)


if __name__ == "__main__":  # pragma: no cover - the Windows launcher of spawn_detached
    subprocess.Popen(
        sys.argv[1:],
        creationflags=_DETACHED_FLAGS,
        close_fds=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
