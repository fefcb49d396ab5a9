from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbrunner import Runner


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("NBRUNNER_HOME", str(path))
    monkeypatch.delenv("NBRUNNER_MODULES", raising=False)
    monkeypatch.delenv("NBRUNNER_GPUS", raising=False)
    return path


@pytest.fixture
def runner(home: Path) -> Iterator[Runner]:
    with Runner(home) as r:
        yield r
        stop_everything(r)


def stop_everything(runner: Runner) -> None:
    """Leave no run behind: cancel what is active and wait for the supervisors to finish."""
    runner.config("paused", True)
    for record in runner.store.active():
        with contextlib.suppress(Exception):
            runner.cancel(record.id)
    for record in runner.store.active():
        with contextlib.suppress(Exception):
            runner.wait(record.id, timeout=15)


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
