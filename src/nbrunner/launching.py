"""How the service hands a run to whoever will hold it: the home's keeper (POSIX; a spec
file and a datagram, or a keeper started), or a recorder of its own, forked from the
warm service or spawned as an interpreter (Windows; and the designs the bench compares).
"""

from __future__ import annotations

import functools
import gc
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from . import platform, wakes
from .holding import CHILD_FILE_PATIENCE_S, record
from .recorder import (
    KEEPER_INFO,
    KEEPER_LOCK,
    KEEPER_LOG,
    KEEPER_START_S,
    RECORDER_ENV,
    RecorderSpec,
    RunFiles,
    RunJournal,
    ServiceLink,
    write_atomically,
)


def _close_inherited_files() -> None:
    """Drop every descriptor the service had open but stdio: above all its lock, which
    would otherwise stay held, for the service, by every recorder alive."""
    try:
        open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        open_fds = list(range(3, 1024))
    for fd in open_fds:
        if fd > 2:
            with suppress(OSError):
                os.close(fd)


class ForkedRecorder:
    """A recorder forked by this process: polled (and reaped) by its own pid only, so
    that no one else's exit status (a hook's) is ever taken."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 0
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def fork_recorder(spec: RecorderSpec, link: ServiceLink) -> ForkedRecorder:
    """POSIX: a recorder forked from the warm service (no interpreter to start).

    The fork leaves the service's session at once, so signals meant for the service's
    group never reach a run's recorder. The service's objects are frozen for the fork
    (the recorder shares their pages untouched) and thawed after it in the service, so
    its garbage is still collected.
    """
    gc.freeze()
    pid = os.fork()
    if pid:
        gc.unfreeze()
        return ForkedRecorder(pid)
    status = 1
    try:
        gc.disable()  # collecting would touch, and so copy, the service's shared pages
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the service's handler is not ours
        os.setsid()
        _close_inherited_files()
        status = record(spec, link)
    except BaseException:  # a forked child must never return into the service
        with suppress(Exception):
            import traceback

            traceback.print_exc()
    finally:
        os._exit(status)


def spawn_recorder(spec: RecorderSpec) -> subprocess.Popen[bytes]:
    """Windows: a recorder started as its own interpreter, handed its spec on stdin."""
    proc = platform.popen_detached(
        [sys.executable, "-m", "nbrunner.recording"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **platform.recorder_popen_kwargs(),
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(spec.as_json()).encode())
    proc.stdin.close()
    return proc


class KeeperHandle:
    """The launching service's handle on a run handed to the home's keeper: alive while a
    keeper holds the keeper lock, or, just after one was started, has had no time to."""

    def __init__(self, lock: Path, started_one: bool, pid: int = 0) -> None:
        self.lock = lock
        self.born = time.monotonic() if started_one else None
        self.returncode: int | None = None
        self.pid = pid  # 0: not known yet (no pidfd; polled)

    def poll(self, locks: dict[Path, bool] | None = None) -> int | None:
        """None while its keeper holds the lock (or may still come); `locks` keeps what a
        look at each lock found, for the other handles polled in the same pass."""
        if self.returncode is None:
            locked = (locks or {}).get(self.lock)
            if locked is None:
                locked = platform.is_locked(self.lock)
                if locks is not None:
                    locks[self.lock] = locked
            if locked:
                if self.born is not None or not self.pid:  # seen holding it at last
                    self.born = None
                    home = str(self.lock.parent.parent)
                    self.pid = self.pid or living_keeper(home)
                    _keepers_started.pop(home, None)  # it came: the next one may be started
            elif self.born is None or time.monotonic() - self.born > KEEPER_START_S:
                self.returncode = 0
        return self.returncode


def keeper_info(home: str) -> dict[str, Any]:
    """What the home's keeper announced (its pid, start marker and port), or {}."""
    return RunFiles.of(home, 0).read(Path(home) / "runs" / KEEPER_INFO) or {}


def living_keeper(home: str, found: dict[str, Any] | None = None) -> int:
    """The pid of the home's keeper, if the one its info file names lives; else 0."""
    found = keeper_info(home) if found is None else found
    pid = int(found.get("pid") or 0)
    return pid if platform.is_same_process(pid, found.get("marker")) else 0


# home → when this process started a keeper that no handle has yet seen holding its lock
_keepers_started: dict[str, float] = {}
# home → keeper.json's identity when the keeper it names was last looked for, and its pid if
# that one lived: a keeper announces itself once, so while the file is the same, so is its
# keeper.
_keeper_pids: dict[str, tuple[tuple[int, int, int], int]] = {}


@functools.cache
def _keeper_files(home: str) -> tuple[Path, Path]:
    """The home's keeper lock and info file, made once: a burst of runs is handed over
    every few milliseconds."""
    runs = Path(home) / "runs"
    return runs / KEEPER_LOCK, runs / KEEPER_INFO


def _announced_keeper(home: str) -> tuple[dict[str, Any], int]:
    """Where to wake the home's keeper, and its pid (0: not known), read again only when
    its info file changed."""
    try:
        identity, info = wakes.announcement(_keeper_files(home)[1])
    except (OSError, ValueError):
        return {}, 0
    known = _keeper_pids.get(home)
    if known is None or known[0] != identity or not known[1]:
        known = (identity, living_keeper(home, info))
        _keeper_pids[home] = known
    return info, known[1]


# home → the port of its keeper, handed runs since the last wake_keepers()
_keepers_to_wake: dict[str, Any] = {}


def hand_to_keeper(spec: RecorderSpec) -> KeeperHandle:
    """Write the run's spec, then have the home's keeper woken (wake_keepers), or start
    one unless one started here is still on its way (it takes every spec it finds). The
    spec comes first: a keeper on its way out looks for specs after letting go of its lock."""
    lock = _keeper_files(spec.home)[0]
    files = RunFiles(lock.parent, spec.run_id)
    write_atomically(files.spec, RunJournal.spec_text(spec), CHILD_FILE_PATIENCE_S)
    if platform.is_locked(lock):
        found, pid = _announced_keeper(spec.home)
        _keepers_to_wake[spec.home] = found.get("port")
        return KeeperHandle(lock, False, pid)
    started_at = _keepers_started.get(spec.home)
    if started_at is None or time.monotonic() - started_at >= KEEPER_START_S:
        argv = [sys.executable, "-m", "nbrunner.keeper", spec.home]
        platform.spawn_detached(argv, str(files.directory / KEEPER_LOG))
        _keepers_started[spec.home] = time.monotonic()
    return KeeperHandle(lock, started_one=True)


def wake_keepers() -> None:
    """Wake each keeper handed runs since the last call, once however many it was handed
    (the service calls it when its pass has handed every run over)."""
    while _keepers_to_wake:
        _, port = _keepers_to_wake.popitem()
        with suppress(OSError, ValueError, TypeError):  # a lost wake costs the keeper a pass
            wakes.send(port)


def start_recorder(
    spec: RecorderSpec, link: ServiceLink
) -> ForkedRecorder | subprocess.Popen[bytes] | KeeperHandle:
    """Hand the run to the home's keeper (POSIX), or start a recorder of its own: an
    interpreter on Windows until its CI job has run the keeper; `NBRUNNER_RECORDER=fork` or
    `spawn` for the designs the bench compares. A handle to poll whether it has ended; a
    spawned recorder and the keeper make their own link (nbrunner.recording, .keeper)."""
    chosen = os.environ.get(RECORDER_ENV) or ("spawn" if platform.IS_WINDOWS else "keeper")
    if chosen == "spawn" or (chosen == "fork" and platform.IS_WINDOWS):
        return spawn_recorder(spec)
    if chosen == "fork":
        return fork_recorder(spec, link)
    return hand_to_keeper(spec)
