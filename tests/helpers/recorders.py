"""Both ways a run's recorder starts, so the engine tests exercise each on every machine:
forked from the warm service (POSIX), or started as its own interpreter (Windows; chosen
on POSIX through the recorder's environment switch)."""

from __future__ import annotations

import sys

import pytest

from nbrunner.recorder import RECORDER_ENV

PATHS = ["spawn"] if sys.platform == "win32" else ["fork", "spawn", "keeper"]


@pytest.fixture(params=PATHS)
def recorder_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Set before a test's first submission, so the service it starts launches that way."""
    monkeypatch.setenv(RECORDER_ENV, request.param)
    return str(request.param)
