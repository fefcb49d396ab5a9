from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.leftovers import folders_left, left_behind, mark_session, session_start
from helpers.procs import is_subreaper
from helpers.ray_head import RayHead, require_ray

from nbrunner import Runner, contact


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("NBRUNNER_HOME", str(path))
    monkeypatch.delenv("NBRUNNER_MODULES", raising=False)
    monkeypatch.delenv("NBRUNNER_GPUS", raising=False)
    yield path
    contact.stop(path)  # runs were stopped by the test; its home's service goes too


@pytest.fixture(autouse=True)
def stays_an_ordinary_parent() -> Iterator[None]:
    """No test may leave the test process a subreaper: every detached service and keeper of
    the tests after it would become its descendant, and a test that kills a run's parent
    could kill the test process itself (a CI worker once crashed so, and the suite hung)."""
    yield
    assert not is_subreaper(), "this test made the test process a subreaper of its orphans"


@pytest.fixture
def busy_machine() -> Iterator[None]:
    """Two busy loops beside the test, as on a loaded workstation."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    yield
    for loop in loops:
        loop.kill()
        loop.wait()


@pytest.fixture(scope="session")
def ray_head() -> Iterator[RayHead]:
    """One local Ray head for every test that needs one (test_notebooks, test_ray): heads
    take seconds and most of a gigabyte to start."""
    require_ray()
    head = RayHead(num_cpus=2).start()
    yield head
    head.remove()


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


SESSION = pytest.StashKey[tuple[str, float]]()
LEFT_BEHIND = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    # before anything starts: every process of this session inherits the marker
    config.stash[SESSION] = (mark_session(), session_start())
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    # services of test homes go soon after their runs, not a minute later
    os.environ.setdefault("NBRUNNER_SERVICE_IDLE_S", "5")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a service, recorder, Voila, kernel or Ray head a test started is
    still alive once every fixture has cleaned up, or a scratch folder is still there."""
    config = session.config
    marker, since = config.stash[SESSION]
    if config.pluginmanager.hasplugin("dsession"):
        # xdist's controller runs no test: its workers checked their own and told it
        culprits = config.stash.get(LEFT_BEHIND, []) + folders_left(since)
    elif hasattr(config, "workeroutput"):
        culprits = left_behind(marker, since)  # folders: once all workers are done
        config.workeroutput["left_behind"] = culprits
    else:
        culprits = left_behind(marker, since) + folders_left(since)
    config.stash[LEFT_BEHIND] = culprits
    if culprits and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    told = getattr(node, "workeroutput", {}).get("left_behind", [])
    node.config.stash[LEFT_BEHIND] = node.config.stash.get(LEFT_BEHIND, []) + told


def pytest_terminal_summary(terminalreporter: Any) -> None:
    culprits = terminalreporter.config.stash.get(LEFT_BEHIND, [])
    if culprits:
        terminalreporter.section("processes and folders left behind", red=True)
        for line in culprits:
            terminalreporter.write_line(line)
        terminalreporter.write_line("the run fails: stop what a test starts before it ends")
