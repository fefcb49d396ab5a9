"""Keeping the machine awake while runs are active (the display may still sleep).

A desktop on its default power plan suspends in the middle of a day-long training run. So
while any run holds a slot the service holds a "system required" request, and lets it go
when the last run ends (the `keep_awake` setting turns this off):

- Windows: `SetThreadExecutionState(ES_CONTINUOUS | ES_SYSTEM_REQUIRED)` on the service's
  main thread (the one that runs every pass); Windows drops it when the service exits.
- Linux: a logind inhibitor, `systemd-inhibit --what=sleep ... cat`, where systemd-inhibit
  exists and logind answers (not in most containers); `cat` reads a pipe only the service
  writes to.
- macOS: `caffeinate -i -w SERVICE`.

The child that holds the request on Linux and macOS ends with the service whatever kills
it, so a dead service never keeps a machine awake: the pipe's end closes the moment the
service dies (`tail --pid`, which it replaced, polled, and took a dead service that was not
yet reaped for a living one); `caffeinate -w` hears of the exit from the kernel. Which
mechanism and which argv are plain functions of the platform, tested on any machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("nbrunner.service")

ES_CONTINUOUS = 0x80000000
ES_SYSTEM_REQUIRED = 0x00000001
SETTING_EVERY_S = 60.0  # while held, how often the setting is read again


def mechanism(platform: str = sys.platform, which: Callable[[str], Any] = shutil.which) -> str:
    """How this platform is kept awake: "windows", "systemd-inhibit", "caffeinate" or ""."""
    if platform == "win32":
        return "windows"
    if platform == "darwin" and which("caffeinate"):
        return "caffeinate"
    if platform.startswith("linux") and which("systemd-inhibit") and which("tail"):
        return "systemd-inhibit"
    return ""


def holder_argv(kind: str, pid: int, why: str) -> list[str]:
    """The child that holds the request for process `pid` and ends when it does."""
    if kind == "caffeinate":
        return ["caffeinate", "-i", "-w", str(pid)]
    if kind == "systemd-inhibit":
        return [
            "systemd-inhibit",
            "--what=sleep",
            "--who=nbrunner",
            f"--why={why}",
            "--mode=block",
            "cat",  # until the service's end of its stdin closes
        ]
    raise ValueError(f"no holder process for {kind!r}")


def execution_state(hold: bool) -> int:
    """The SetThreadExecutionState flags that take (or give back) the request."""
    return ES_CONTINUOUS | ES_SYSTEM_REQUIRED if hold else ES_CONTINUOUS


class KeepAwake:
    """Held while `update(True, ...)`, let go at `update(False, ...)`. A mechanism that
    fails (no logind to talk to) is logged once and not tried again by this service."""

    def __init__(self, why: str, kind: str | None = None) -> None:
        self.why = why
        self.kind = mechanism() if kind is None else kind
        self.held = False
        self._child: subprocess.Popen[bytes] | None = None
        self._setting_read_at = float("-inf")
        self._enabled = True

    def update(self, wanted: bool, settings: Callable[[], Mapping[str, Any]]) -> None:
        """Hold the request while `wanted` and the keep_awake setting allow it."""
        self._notice_failure()
        now = time.monotonic()
        stale = now - self._setting_read_at >= SETTING_EVERY_S
        if wanted and self.kind and (not self.held or stale):  # no way to hold: no need to ask
            self._enabled = bool(settings().get("keep_awake", True))
            self._setting_read_at = now
        if wanted and self._enabled and self.kind and not self.held:
            self._acquire()
        elif self.held and not (wanted and self._enabled):
            self.release()

    def _acquire(self) -> None:
        if self.kind == "windows":  # pragma: no cover - Windows only
            ctypes.windll.kernel32.SetThreadExecutionState(execution_state(True))  # type: ignore[attr-defined]
        else:
            try:
                self._child = subprocess.Popen(
                    holder_argv(self.kind, os.getpid(), self.why),
                    stdin=subprocess.PIPE,  # never written: closed when the service dies
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    start_new_session=True,  # its whole group is stopped at release
                )
            except OSError as exc:
                self._give_up(str(exc))
                return
        self.held = True

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self.kind == "windows":  # pragma: no cover - Windows only
            ctypes.windll.kernel32.SetThreadExecutionState(execution_state(False))  # type: ignore[attr-defined]
            return
        child, self._child = self._child, None
        if child is not None:
            with contextlib.suppress(OSError):
                os.killpg(child.pid, signal.SIGTERM)
            child.wait()
            _close_pipes(child)

    def _notice_failure(self) -> None:
        """A holder that ended by itself could not take the request (no logind here)."""
        child = self._child
        if child is None or child.poll() is None:
            return
        detail = (child.stderr.read() if child.stderr else b"").decode(errors="replace")
        self._child, self.held = None, False
        _close_pipes(child)
        self._give_up(detail.strip() or f"it exited with code {child.returncode}")

    def _give_up(self, why: str) -> None:
        log.warning(
            "nbrunner service: cannot keep the machine awake with %s (%s); not tried again "
            "until the service restarts (`nbrunner config keep_awake false` stops trying)",
            self.kind,
            why,
        )
        self.kind = ""


def _close_pipes(child: subprocess.Popen[bytes]) -> None:
    for pipe in (child.stdin, child.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
