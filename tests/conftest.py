from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbrunner import Runner, service


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("NBRUNNER_HOME", str(path))
    monkeypatch.delenv("NBRUNNER_MODULES", raising=False)
    monkeypatch.delenv("NBRUNNER_GPUS", raising=False)
    yield path
    service.stop(path)  # runs were stopped by the test; its home's service goes too


@pytest.fixture
def busy_machine() -> Iterator[None]:
    """Two busy loops beside the test, as on a loaded workstation."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    yield
    for loop in loops:
        loop.kill()
        loop.wait()


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
    # services of test homes go soon after their runs, not a minute later
    os.environ.setdefault("NBRUNNER_SERVICE_IDLE_S", "5")
