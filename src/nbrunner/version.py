"""Versions across an upgrade: the service says which nbrunner it runs, and hands over.

After `pip install -U nbrunner` a service started before keeps running the old code, for
days if runs keep it busy. Its `service.json` records its version, so a client of another
version says so (one line on stderr, once per process). A newer client also leaves a
handover request in the home (`service.handover.json`: its version and its Python); the old
service honours it at the first pass where no run is being launched and no hook is
running: it exits and starts the newer service, which adopts the runs (they never stop: a
run's recorder, not the service, holds it). An older client never makes a newer service
hand over.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

HANDOVER_NAME = "service.handover.json"
_warned: set[Path] = set()


def current() -> str:
    """The version of the nbrunner this process runs."""
    import nbrunner

    return nbrunner.__version__


def as_tuple(version: str) -> tuple[int, ...]:
    """ "1.10.2" → (1, 10, 2), for ordering; what is not a number counts as 0."""
    return tuple(int(part) if part.isdigit() else 0 for part in re.split(r"[.+-]", version))


def mismatch_line(service_version: str | None, client_version: str) -> str | None:
    """What a client says when the service runs another version (None when it does not)."""
    if service_version == client_version:
        return None
    running = f"nbrunner {service_version}" if service_version else "an nbrunner without a version"
    if service_version is None:  # from before handing over existed
        then = "it serves until it is idle; the next service started is this version's"
    elif as_tuple(client_version) > as_tuple(service_version):
        then = "it hands over to this version as soon as no run is being started"
    else:
        then = "this older client leaves it running; upgrade this environment's nbrunner"
    return f"nbrunner: the service of this home runs {running}, this is {client_version}: {then}"


def check_service(home: Path, found: dict[str, Any] | None) -> tuple[str | None, bool]:
    """Compare the living service (`found`: its service.json) with this client: the line to
    say, if any, and whether this newer client asked the service to hand over."""
    if found is None:
        return None, False
    theirs, ours = found.get("version"), current()
    line = mismatch_line(theirs, ours)
    asked = line is not None and as_tuple(ours) > as_tuple(theirs or "0")
    if asked:
        from .recorder import write_atomically

        write_atomically(home / HANDOVER_NAME, {"version": ours, "python": sys.executable})
    return line, asked


def warn_once(home: Path, found: dict[str, Any] | None) -> bool:
    """check_service, said on stderr once per process and home; True if it asked for a
    handover (the caller wakes the service, or it would wait for its next safety pass)."""
    if home in _warned:
        return False
    line, asked = check_service(home, found)
    if line is not None:
        _warned.add(home)
        print(line, file=sys.stderr)
    return asked


def successor(home: Path) -> list[str] | None:
    """The service a newer client asked for (argv), or None; a request from an older or
    the same version is stale and removed."""
    path = home / HANDOVER_NAME
    try:
        asked = json.loads(path.read_text())
        newer = as_tuple(str(asked["version"])) > as_tuple(current())
        python = str(asked["python"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not newer or not os.path.exists(python):
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return [python, "-m", "nbrunner.service", str(home)]


def start_successor(home: Path, argv: list[str], stderr_path: str) -> None:
    """Start the newer service (after this one let go of the home's lock)."""
    from . import platform

    with contextlib.suppress(OSError):
        (home / HANDOVER_NAME).unlink()
    platform.spawn_detached(argv, stderr_path)
