"""After a reboot: the service starts at login (`service install`), lost runs are requeued.

The systemd unit's text and the Task Scheduler argv are decided by plain functions, checked
here; `systemctl --user` needs a user bus this machine lacks, so a stand-in `systemctl`
first on PATH records what nbrunner asks of it. Only Windows can run schtasks.
"""

from __future__ import annotations

import os
import shlex
import signal
import stat
import subprocess
import sys
from pathlib import Path

import psutil
from conftest import stop_everything
from helpers.cli import cli
from helpers.procs import python, wait_until

from nbrunner import Runner, contact
from nbrunner.autostart import schtasks_create_argv, schtasks_delete_argv, systemd_unit, task_name
from nbrunner.states import RunStatus
from nbrunner.store import Store

FAKE_SYSTEMCTL = '#!/bin/sh\necho "$*" >> "$NBR_FAKE_SYSTEMCTL_LOG"\n'


def exec_start(unit: str) -> list[str]:
    (line,) = [x for x in unit.splitlines() if x.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def test_the_unit_starts_the_homes_service_and_leaves_runs_alone_when_it_exits(
    tmp_path: Path,
) -> None:
    home = tmp_path / 'a "quoted" home'
    unit = systemd_unit(home, "/opt/py/bin/python")
    assert exec_start(unit) == ["/opt/py/bin/python", "-m", "nbrunner.service", str(home)]
    assert "\nKillMode=process\n" in unit  # runs outlive the service
    assert unit.endswith("[Install]\nWantedBy=default.target\n")
    percent = systemd_unit(tmp_path / "100%", "/py")
    assert '"/py" "-m" "nbrunner.service"' in percent and "100%%" in percent


def test_the_windows_logon_task_runs_the_service_without_a_console(tmp_path: Path) -> None:
    create = schtasks_create_argv(tmp_path, r"C:\Python311\python.exe")
    name = task_name(tmp_path)
    assert create[:7] == ["schtasks", "/Create", "/SC", "ONLOGON", "/TN", name, "/TR"]
    assert create[7] == f'"C:\\Python311\\pythonw.exe" "-m" "nbrunner.service" "{tmp_path}"'
    assert create[8:] == ["/F"]
    assert schtasks_delete_argv(tmp_path) == ["schtasks", "/Delete", "/TN", name, "/F"]
    assert task_name(tmp_path / "other") != name  # one task per home


def test_install_writes_and_enables_a_user_unit_and_uninstall_removes_it(
    home: Path, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(FAKE_SYSTEMCTL)
    (bin_dir / "systemctl").chmod(0o755 | stat.S_IXUSR)
    calls = tmp_path / "systemctl.log"
    env = {
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "NBR_FAKE_SYSTEMCTL_LOG": str(calls),
    }
    unit = tmp_path / "config" / "systemd" / "user" / f"{task_name(home)}.service"
    installed = cli(home, "service", "install", env=env)
    assert installed.stdout.strip() == f"wrote and enabled {unit}: the service starts at login"
    assert exec_start(unit.read_text())[1:] == ["-m", "nbrunner.service", str(home)]
    assert calls.read_text().splitlines() == ["--user daemon-reload", f"--user enable {unit.name}"]

    removed = cli(home, "service", "uninstall", env=env)
    assert removed.stdout.strip() == f"removed {unit}"
    assert not unit.exists() and not any(unit.parent.iterdir())
    assert calls.read_text().splitlines()[2:] == [
        f"--user disable {unit.name}",
        "--user daemon-reload",
    ]


def test_the_units_command_serves_what_was_queued_before_the_reboot(
    home: Path, tmp_path: Path
) -> None:
    """At login systemd runs ExecStart: run here as it would, it starts the queued run."""
    Store(home).insert_runs(
        [{"module": "m", "params": {}, "argv": python("print('after the reboot')"), "env": {}}]
    )
    assert not contact.is_running(home)  # nobody is there to start it
    started = subprocess.Popen(exec_start(systemd_unit(home)), start_new_session=True)
    try:
        store = Store(home)
        wait_until(lambda: store.get(1).status is RunStatus.SUCCEEDED, what="the queued run")
        assert "after the reboot" in Path(store.get(1).log_path).read_text()
    finally:
        contact.stop(home)
        started.wait(timeout=30)


RETRIED = """
[modules.retried]
command = ["{python}", "-c", "import os, sys, time\\nif os.path.exists(sys.argv[1]): sys.exit(0)\\nopen(sys.argv[1], 'w').close(); time.sleep(600)", "{marker}"]
retry_lost = 1

[modules.once]
command = ["{python}", "-c", "import time; time.sleep(600)"]
"""


def lose(run_pid: int) -> None:
    """What a reboot does to a run: its recorder and its processes die at once."""
    recorder = psutil.Process(run_pid).parent()
    assert recorder is not None
    recorder.send_signal(signal.SIGKILL)
    os.killpg(run_pid, signal.SIGKILL)


def test_a_run_lost_to_a_reboot_is_queued_again_once_when_its_module_asks(
    home: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "first-try"
    modules = RETRIED.replace("{marker}", str(marker)).replace("{python}", sys.executable)
    (home / "modules.toml").write_text(modules)
    with Runner(home) as runner:
        try:
            retried, once = runner.submit("retried"), runner.submit("once")
            wait_until(lambda: marker.exists() and once.status is RunStatus.RUNNING)
            wait_until(lambda: retried.status is RunStatus.RUNNING)
            lose(retried.record.pid)
            lose(once.record.pid)
            assert retried.wait(timeout=60).status is RunStatus.LOST
            assert once.wait(timeout=60).status is RunStatus.LOST
            again = wait_until(
                lambda: [r for r in runner.store.select("restart_of IS NOT NULL")],
                what="the lost run to be queued again",
            )
            assert [(r.restart_of, r.module) for r in again] == [(retried.id, "retried")]
            assert runner.wait(again[0].id, timeout=60).status is RunStatus.SUCCEEDED
            assert runner.get(again[0].id).record.retry_lost == 0  # no third try
            assert runner.get(retried.id).record.retry_lost == 0
            assert runner.count() == 3  # `once` did not ask: it stays lost
        finally:
            stop_everything(runner)


def test_retry_lost_must_be_a_small_whole_number(home: Path) -> None:
    (home / "modules.toml").write_text('[modules.x]\ncommand = ["true"]\nretry_lost = "twice"\n')
    result = cli(home, "modules", check=False)
    assert result.returncode == 2
    assert "retry_lost must be a whole number ≥ 0" in result.stderr
