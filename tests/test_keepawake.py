"""Keeping the machine awake while runs are active.

Which mechanism and which argv are decided by plain functions, checked here for every
platform (Windows' SetThreadExecutionState and macOS' caffeinate can only be called there).
On Linux the service really starts its holder: a stand-in `systemd-inhibit` first on PATH
(this machine has no logind to ask) records when it is started and when it ends.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from conftest import stop_everything
from helpers.procs import python, wait_until

from nbrunner import Runner, contact
from nbrunner.keepawake import KeepAwake, execution_state, holder_argv, mechanism
from nbrunner.states import RunStatus

WAIT_FOR = "import os, sys, time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.05)"
FAKE_INHIBIT = """#!/bin/sh
echo "acquired $*" >> "$NBR_FAKE_INHIBIT_LOG"
trap 'echo released >> "$NBR_FAKE_INHIBIT_LOG"; exit 0' TERM
while [ "${1#--}" != "$1" ]; do shift; done
"$@"
echo released >> "$NBR_FAKE_INHIBIT_LOG"
"""


def test_each_platform_has_its_mechanism() -> None:
    everything = {"systemd-inhibit": "/usr/bin/x", "tail": "/usr/bin/x", "caffeinate": "/x"}
    assert mechanism("win32", everything.get) == "windows"
    assert mechanism("linux", everything.get) == "systemd-inhibit"
    assert mechanism("linux", {"tail": "/usr/bin/tail"}.get) == ""  # no logind tools
    assert mechanism("darwin", everything.get) == "caffeinate"
    assert mechanism("darwin", {}.get) == ""


def test_the_holder_ends_with_the_service_and_asks_for_sleep_only() -> None:
    assert holder_argv("caffeinate", 42, "w") == ["caffeinate", "-i", "-w", "42"]
    argv = holder_argv("systemd-inhibit", 42, "runs are active")
    assert argv[:5] == [
        "systemd-inhibit",
        "--what=sleep",  # not idle: the display may sleep
        "--who=nbrunner",
        "--why=runs are active",
        "--mode=block",
    ]
    assert argv[5:] == ["cat"]  # reads the service's pipe: ends the moment the service dies
    assert execution_state(True) == 0x80000001  # ES_CONTINUOUS | ES_SYSTEM_REQUIRED
    assert execution_state(False) == 0x80000000  # ES_CONTINUOUS alone clears the request


@pytest.fixture
def fake_inhibit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "systemd-inhibit"
    script.write_text(FAKE_INHIBIT)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "inhibit.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("NBR_FAKE_INHIBIT_LOG", str(log))
    return log


def lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_the_service_holds_the_machine_awake_from_the_first_run_to_the_last(
    runner: Runner, fake_inhibit: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NBRUNNER_SERVICE_IDLE_S", "600")  # released by nbrunner, not an exit
    for name in ("one", "two", "three"):
        runner.register(name, command=[*python(WAIT_FOR), str(tmp_path / name)])
    try:
        first = runner.submit("one")
        wait_until(lambda: lines(fake_inhibit), what="the keep-awake request")
        pid = contact.info(runner.home)["pid"]
        assert lines(fake_inhibit) == [
            f"acquired --what=sleep --who=nbrunner --why=runs are active in {runner.home} "
            "--mode=block cat"
        ]
        second = runner.submit("two")
        wait_until(lambda: second.status is RunStatus.RUNNING, what="the second run")
        (tmp_path / "one").touch()
        assert first.wait(timeout=60).status is RunStatus.SUCCEEDED
        assert len(lines(fake_inhibit)) == 1  # one run still active: still held
        (tmp_path / "two").touch()
        assert second.wait(timeout=60).status is RunStatus.SUCCEEDED
        wait_until(lambda: lines(fake_inhibit)[1:] == ["released"], what="the release")
        assert contact.info(runner.home)["pid"] == pid  # the same service let it go

        runner.config("keep_awake", "false")
        third = runner.submit("three")
        wait_until(lambda: third.status is RunStatus.RUNNING, what="the third run")
        (tmp_path / "three").touch()
        assert third.wait(timeout=60).status is RunStatus.SUCCEEDED
        assert len(lines(fake_inhibit)) == 2  # turned off: not asked for again
    finally:
        stop_everything(runner)


def test_a_killed_service_keeps_no_machine_awake(
    runner: Runner, fake_inhibit: Path, tmp_path: Path
) -> None:
    runner.register("waits", command=[*python(WAIT_FOR), str(tmp_path / "go")])
    try:
        run = runner.submit("waits")
        wait_until(lambda: lines(fake_inhibit), what="the keep-awake request")
        os.kill(contact.info(runner.home)["pid"], signal.SIGKILL)
        wait_until(lambda: "released" in lines(fake_inhibit), what="the holder to end")
        (tmp_path / "go").touch()
        assert run.wait(timeout=60).status is RunStatus.SUCCEEDED  # a new service adopted it
    finally:
        stop_everything(runner)


def test_without_logind_the_request_is_given_up_once_and_runs_go_on() -> None:
    holder = KeepAwake("test", kind="systemd-inhibit")
    holder.update(True, dict)
    assert holder.held or holder.kind == ""  # started, or failed at once
    wait_until(lambda: (holder.update(True, dict), holder.kind == "")[1], what="a give-up")
    assert not holder.held  # this machine has no logind: not held, not retried
    asked: list[int] = []
    holder.update(True, lambda: asked.append(1) or {})
    assert asked == []  # nor is the setting read on every pass (a store read each)


@pytest.mark.posix
def test_a_dead_service_that_no_one_has_reaped_yet_keeps_nothing_awake(fake_inhibit: Path) -> None:
    """A killed service stays a zombie until its parent (often init, which may take
    seconds) reaps it, and a zombie still answers kill(pid, 0): the holder must end on the
    death itself. Here the test process is that parent, and reaps only afterwards."""
    holding = (
        "import time; from nbrunner.keepawake import KeepAwake\n"
        "k = KeepAwake('test', kind='systemd-inhibit'); k.update(True, dict); print(flush=True)\n"
        "time.sleep(600)"
    )
    service = subprocess.Popen([sys.executable, "-c", holding], stdout=subprocess.PIPE)
    try:
        assert service.stdout is not None and service.stdout.readline() == b"\n"
        wait_until(lambda: lines(fake_inhibit), what="the keep-awake request")
        os.kill(service.pid, signal.SIGKILL)
        wait_until(lambda: "released" in lines(fake_inhibit), what="the holder to end")
        assert psutil.Process(service.pid).status() == psutil.STATUS_ZOMBIE  # still unreaped
    finally:
        service.kill()
        service.wait()
