"""How clients, the keeper and recorders reach a home's service: find it, start it
(detached) when none lives or is on its way, wake it, ask it to stop, say that live figures
are being read. Kept apart from the service itself, so that a process that only talks to
it (a kernel's Runner, the CLI, the keeper) never imports the service's machinery.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from . import platform, version, wakes
from .recorder import RunFiles, write_atomically

LOCK_NAME = "service.lock"
INFO_NAME = "service.json"
ERR_NAME = "service.log"
STARTING_NAME = "service.starting"  # the service a client started, until it holds the lock
STARTING_PATIENCE_S = 60.0  # one that started no sooner than this is stuck: start another
WATCH_NAME = "watching"  # touched by readers of live figures (dashboard, Runner.metrics)
WATCH_FRESH_S = 15.0  # runs' trees are sampled while a reader touched it this recently
# Variables that belong to the submitting process, not to the runs it submits: a kernel's
# connection settings and its inline plotting backend, a debugger's hooks.
NOISE_PREFIXES = ("JPY_", "PYDEVD_", "NBRUNNER_SERVICE_")
NOISE_VALUES = {"MPLBACKEND": "module://matplotlib_inline"}


# os.environ as last read, and the environment made of it: reading os.environ decodes every
# variable (a notebook's kernel has a hundred), once per submit; its raw mapping is
# compared in one C call. None where the interpreter keeps no raw mapping.
_environment_read: tuple[dict[Any, Any], dict[str, str]] | None = None


def submitter_environment() -> dict[str, str]:
    """This process's environment as a run should get it: without per-process noise."""
    global _environment_read
    raw = getattr(os.environ, "_data", None)
    if _environment_read is not None and raw == _environment_read[0]:
        return dict(_environment_read[1])
    found = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(NOISE_PREFIXES) and not value.startswith(NOISE_VALUES.get(key, "\0"))
    }
    if isinstance(raw, dict):
        _environment_read = (dict(raw), found)
    return dict(found)


def is_running(home: str | Path) -> bool:
    return platform.is_locked(Path(home) / LOCK_NAME)


def info(home: str | Path) -> dict[str, Any] | None:
    """What the living service wrote about itself (pid, port, started_at), if one lives.
    None also between a new service taking the lock and writing its own: the file is then
    still its dead predecessor's."""
    if not is_running(home):
        return None
    written = RunFiles.of(home, 0).read(Path(home) / INFO_NAME)
    if written is None or not platform.is_same_process(written.get("pid"), written.get("marker")):
        return None
    return written


_watched_at: dict[Path, float] = {}  # home → when this process last said it watches


def watching(home: str | Path) -> None:
    """Say that this process reads the runs' live figures (cpu, rss): the service samples
    their trees while one has said so within WATCH_FRESH_S. Costs a touch of a file every
    few seconds at most, and a wake when the service had stopped sampling."""
    home = Path(home)
    now = time.monotonic()
    if now - _watched_at.get(home, -WATCH_FRESH_S) < WATCH_FRESH_S / 3:
        return
    path = home / WATCH_NAME
    stale = not watched_recently(path)
    try:
        path.touch()
    except OSError:
        return  # no home (yet): nothing to sample either
    _watched_at[home] = now
    if stale:
        wake(home)


def watched_recently(path: Path) -> bool:
    try:
        return time.time() - path.stat().st_mtime < WATCH_FRESH_S
    except OSError:
        return False


def announce(path: Path, wake_socket: socket.socket) -> None:
    """Who this process is (pid and start marker), where to wake it and its version, for
    clients and recorders to find: the service's info file, and the keeper's."""
    pid = os.getpid()
    found = {"pid": pid, "marker": platform.start_marker(pid)}
    found |= {"port": wake_socket.getsockname()[1], "started_at": time.time()}
    write_atomically(path, found | {"version": version.current()})


def ensure_running(home: str | Path) -> bool:
    """Start the home's service if none is alive or on its way; True if one was started."""
    home = Path(home)
    if is_running(home) or _on_its_way(home):
        return False
    argv = [sys.executable, "-m", "nbrunner.service", str(home)]
    pid = platform.spawn_detached(argv, str(home / ERR_NAME))
    started = {"pid": pid, "marker": platform.start_marker(pid), "at": time.time()}
    with contextlib.suppress(OSError):  # only spares the next clients a start: never wait
        write_atomically(home / STARTING_NAME, started, patience=0)
    return True


def _on_its_way(home: Path) -> bool:
    """A service some client started lives and has not taken the lock yet: it will take
    every run it finds. Starting more meanwhile (each submission of a sweep would) costs an
    interpreter each, which only finds the lock taken and leaves."""
    files = RunFiles.of(home, 0)
    started = files.read(home / STARTING_NAME) or {}
    served = files.read(home / INFO_NAME) or {}  # then it has had the lock: not on its way
    recent = 0 <= time.time() - float(started.get("at") or 0) < STARTING_PATIENCE_S
    alive = platform.is_same_process(started.get("pid"), started.get("marker"))
    return recent and alive and started.get("pid") != served.get("pid")


def wake(home: str | Path) -> None:
    """Tell the service to look at the store now (a lost datagram costs one tick)."""
    wakes.wake(Path(home) / INFO_NAME)


def notify(home: str | Path) -> None:
    """After writing an intent: make sure a service is alive, and wake it."""
    if not ensure_running(home):
        wake(home)


def stop(home: str | Path, timeout: float = 30.0) -> bool:
    """Ask the living service to exit (runs go on); True once it has. One that is starting
    (its lock taken, its info not yet written) is asked as soon as it says who it is."""
    deadline = time.monotonic() + timeout
    asked: set[int] = set()
    while is_running(home):
        found = info(home)
        if found is not None and int(found["pid"]) not in asked:
            asked.add(int(found["pid"]))
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(found["pid"]), signal.SIGTERM)
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
