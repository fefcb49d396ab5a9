"""Waking a sleeping process of a home (the service, the keeper): a datagram to the port it
announced in its info file (`service.json`, `runs/keeper.json`).

A wake is sent several times per run (a submit, a child's start, its exit), and reading the
info file and making a socket for each cost more than the datagram: the file is read again
only when it changed, and each process sends from one socket.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from contextlib import suppress
from pathlib import Path
from typing import Any

# info file → its identity (inode, mtime, size) and what it said then: a process announces
# itself once, in a file replaced whole, so while the identity holds, so does the content.
_announced: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}
_sender: socket.socket | None = None
_sender_lock = threading.Lock()


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
