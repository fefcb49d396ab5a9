"""Waking a sleeping process of a home (the service, the keeper): a datagram to the port it
announced in its info file (`service.json`, `runs/keeper.json`).

A wake is sent several times per run (a submit, a child's start, its exit), and reading the
info file and making a socket for each cost more than the datagram: the file is read again
only when it changed, and each process sends from one socket.

Clients that follow a home's changes (a runner feeding a dashboard or a wait) are rung the
same way: each announces its port as an empty file `listeners/PID-PORT` while it listens
(ChangeBell), and every commit to the store rings them all (ring). The listener still reads
the change feed now and then, so a lost datagram delays a change and loses nothing.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

LISTENERS = "listeners"  # the home's folder of PID-PORT files, one per listening client

# info file → its identity (inode, mtime, size) and what it said then: a process announces
# itself once, in a file replaced whole, so while the identity holds, so does the content.
_announced: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}
_sender: socket.socket | None = None
_sender_lock = threading.Lock()
# listeners folder → its identity (inode, mtime) and the listeners it named then
_listening: dict[Path, tuple[tuple[int, int], tuple[int, ...]]] = {}
# a folder's mtime moves in the kernel's coarse steps: a listing made within this long of
# its last change may have missed a listener added in the same step, so it is made again
SETTLE_NS = 2_000_000_000


def announcement(path: Path) -> tuple[tuple[int, int, int], dict[str, Any]]:
    """What the info file at `path` says, and its identity; OSError or ValueError if it
    is missing or not JSON."""
    found = os.stat(path)
    identity = (found.st_ino, found.st_mtime_ns, found.st_size)
    known = _announced.get(path)
    if known is None or known[0] != identity:
        with open(path, "rb") as info:
            known = (identity, json.loads(info.read()))
        _announced[path] = known
    return known


def _forget_sender() -> None:
    """In a forked child: the parent's socket is left to whatever the child does with the
    files it inherited (a forked recorder closes them all, and the number may then name
    another file); the child makes its own on its first send."""
    global _sender, _sender_lock
    if _sender is not None:
        _sender.detach()  # the number stays the child's to close, never closed by us
    _sender, _sender_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_sender)


def send(port: Any) -> None:
    """One datagram to 127.0.0.1:port; OSError, ValueError or TypeError if it cannot go."""
    global _sender
    if _sender is None:
        with _sender_lock:
            _sender = _sender or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    _sender.sendto(b"w", ("127.0.0.1", int(port)))


def wake(path: Path) -> None:
    """Wake the process that announced itself at `path`; a lost wake costs its next pass."""
    with suppress(OSError, ValueError, TypeError, KeyError):
        send(announcement(path)[1]["port"])


# -- listening for changes ----------------------------------------------------------------------
def listener_ports(folder: Path) -> tuple[int, ...]:
    """The ports of the clients listening for changes, as the folder names them; listed
    again only once the folder changed (a commit costs a stat when none did)."""
    try:
        found = os.stat(folder)
    except OSError:
        return ()
    identity = (found.st_ino, found.st_mtime_ns)
    known = _listening.get(folder)
    if known is None or known[0] != identity or time.time_ns() - identity[1] < SETTLE_NS:
        ports = tuple(entry[1] for entry in map(_listener, _names(folder)) if entry)
        known = (identity, ports)
        _listening[folder] = known
    return known[1]


def ring(folder: Path) -> None:
    """Tell every listening client that the store changed (after each commit: it never
    raises, so a committed write never looks failed)."""
    for port in listener_ports(folder):
        with suppress(OSError):
            send(port)


def _names(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _listener(name: str) -> tuple[int, int] | None:
    """(pid, port) of a listener's file name, None for anything else."""
    pid, _, port = name.partition("-")
    if not (pid.isdigit() and port.isdigit() and 0 < int(port) < 65536):
        return None
    return int(pid), int(port)


class ChangeBell:
    """A client's ear for its home's changes: a socket, announced in the listeners folder
    while the client wants to hear (want), so that a client nobody waits on is not woken
    by every commit."""

    def __init__(self, home: Path) -> None:
        self.folder = home / LISTENERS
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.setblocking(False)
        self.entry = self.folder / f"{os.getpid()}-{self.socket.getsockname()[1]}"
        self.announced = False

    def want(self, wanted: bool) -> None:
        if wanted and not self.announced:
            self._announce()
        elif not wanted and self.announced:
            self._withdraw()

    def _announce(self) -> None:
        """Announce this port, and remove what clients that died without withdrawing left
        (each would cost every commit a datagram); on failure the client only polls."""
        import psutil  # here: the keeper and the service ring, and never pay its import

        with suppress(OSError):
            self.folder.mkdir(mode=0o700, exist_ok=True)
            self.entry.touch(mode=0o600)
            self.announced = True
            for name in _names(self.folder):
                found = _listener(name)
                if found and not psutil.pid_exists(found[0]):
                    (self.folder / name).unlink(missing_ok=True)

    def _withdraw(self) -> None:
        self.announced = False
        with suppress(OSError):
            self.entry.unlink()

    def drain(self) -> None:
        """Take every datagram waiting: however many commits rang, one read of the feed."""
        with suppress(OSError):
            while self.socket.recv(64):
                pass

    def close(self) -> None:
        self._withdraw()
        self.socket.close()
