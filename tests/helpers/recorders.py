"""Every way runs are held, so the engine tests exercise each on every machine: the home's
keeper (the default on POSIX), a recorder forked from the warm service, or one started as
its own interpreter (Windows' default until the keeper has run there), chosen through the
recorder's environment switch; and the keeper waiting in a thread per run, as it does
where there are no pidfds or select() takes sockets only (macOS, Windows)."""

from __future__ import annotations

import sys

import pytest

from nbrunner.holding import THREADS_ENV
from nbrunner.recorder import RECORDER_ENV

PATHS = ["spawn", "keeper"] if sys.platform == "win32" else ["keeper", "fork", "spawn", "threads"]


@pytest.fixture(params=PATHS)
def recorder_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Set before a test's first submission, so the service it starts launches that way."""
    if request.param == "threads":
        monkeypatch.setenv(THREADS_ENV, "1")
    monkeypatch.setenv(RECORDER_ENV, "keeper" if request.param == "threads" else request.param)
    return str(request.param)
