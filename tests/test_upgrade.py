"""Upgrades while runs are active: the service's version, the handover, a newer store."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import psutil
import pytest
from conftest import stop_everything
from helpers.cli import cli, cli_json
from helpers.procs import python, wait_until

import nbrunner
from nbrunner import Runner, contact
from nbrunner.states import RunStatus
from nbrunner.store import MIGRATIONS, NewerStore, Store
from nbrunner.version import as_tuple, mismatch_line

OLD = "0.0.1"
# A service of an older nbrunner: the same code, saying it is OLD, whose safety pass never
# comes within a test (so a handover it is not woken for fails the test)
OLD_SERVICE = (
    "import sys, nbrunner; nbrunner.__version__ = {old!r}; "
    "import nbrunner.service as s; s.SAFETY_PASS_S = 3600.0; sys.exit(s.main([{home!r}]))"
)
WAIT_FOR_FILE = "import os, sys, time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.05)\nprint('released')"


def test_versions_order_by_their_numbers() -> None:
    assert as_tuple("0.10.0") > as_tuple("0.9.3") > as_tuple("0.9")
    assert mismatch_line("0.1.0", "0.1.0") is None
    assert "hands over to this version" in (mismatch_line("0.1.0", "0.2.0") or "")
    assert "leaves it running" in (mismatch_line("0.2.0", "0.1.0") or "")
    assert "serves until it is idle" in (mismatch_line(None, "0.1.0") or "")


def test_the_service_records_its_version(runner: Runner, home: Path) -> None:
    runner.register("quick", command=python("pass"))
    runner.submit("quick").wait(timeout=60)
    shown = cli_json(home, "service")
    assert shown["running"] and shown["version"] == nbrunner.__version__


def test_an_old_service_hands_over_to_a_newer_client_and_its_runs_go_on(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = None
    old = subprocess.Popen(
        [sys.executable, "-c", OLD_SERVICE.format(old=OLD, home=str(home))],
        start_new_session=True,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: (contact.info(home) or {}).get("version") == OLD, what="old service")
        release = tmp_path / "release"
        with monkeypatch.context() as patch:  # a client as old as the service: no handover
            patch.setattr(nbrunner, "__version__", OLD)
            client = Runner(home, start=False)
            client.register("waits", command=[*python(WAIT_FOR_FILE), str(release)])
            run = client.submit("waits")
            wait_until(lambda: run.status is RunStatus.RUNNING, what="the run to start")
        pid = run.record.pid
        assert old.poll() is None  # nobody asked it to go yet

        newer = cli(home, "ps")  # a client of this version
        lines = newer.stderr.splitlines()
        assert lines == [
            f"nbrunner: the service of this home runs nbrunner {OLD}, this is "
            f"{nbrunner.__version__}: it hands over to this version as soon as no run is "
            "being started"
        ]
        old.wait(timeout=60)  # it handed over ...
        wait_until(
            lambda: (contact.info(home) or {}).get("version") == nbrunner.__version__,
            what="the newer service",
        )
        record = client.get(run.id).record
        assert record.status is RunStatus.RUNNING and record.pid == pid  # ... the run went on
        release.touch()
        assert client.wait(run.id, timeout=60).status is RunStatus.SUCCEEDED
        assert "released" in client.logs(run.id)
        assert cli(home, "ps").stderr == ""  # same version now: nothing to say
    finally:
        if old.poll() is None:
            old.kill()
            old.wait()
        if client is not None:
            stop_everything(client)
            client.close()


def newer_store(tmp_path: Path) -> Path:
    """A home whose store a newer nbrunner wrote (its schema version one past ours)."""
    home = tmp_path / "home"
    Store(home).close()
    db = sqlite3.connect(home / "nbrunner.db")
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return home


def files_of(home: Path) -> dict[str, bytes]:
    return {str(p.relative_to(home)): p.read_bytes() for p in home.rglob("*") if p.is_file()}


def test_a_store_from_a_newer_nbrunner_is_refused_in_one_line_and_left_alone(
    tmp_path: Path,
) -> None:
    home = newer_store(tmp_path)
    shutil.rmtree(home / "logs")
    before = files_of(home)
    result = cli(home, "ps", check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert f"written by a newer nbrunner (schema {len(MIGRATIONS) + 1}" in result.stderr
    with pytest.raises(NewerStore, match="upgrade nbrunner"):
        Runner(home, start=False)
    assert files_of(home) == before  # nothing written
    assert not (home / "logs").exists()


# The release before this one (the code of commit 6895f26, nbrunner/ only): a real older
# service and older recorders, not this code told to say an older version.
PREVIOUS_RELEASE = Path(__file__).parent / "fixtures" / "nbrunner-0.1.0-6895f26.tar.gz"
WAIT_THEN_EXIT = (
    "import os, sys, time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.05)\n"
    "print('released', flush=True)\nsys.exit(int(sys.argv[2]))"
)
OLD_CLIENT = """
import sys, time, nbrunner
from nbrunner import Runner
assert nbrunner.__file__.startswith(sys.argv[1]), nbrunner.__file__
runner = Runner(sys.argv[2])
runs = []
for code in ("0", "3"):
    runner.register(f"exits{code}", command=[sys.executable, "-c", *sys.argv[3:], code])
    runs.append(runner.submit(f"exits{code}"))
while any(run.status.value != "running" for run in runs):
    time.sleep(0.05)
print(" ".join(f"{run.id}:{run.record.pid}" for run in runs))
"""


def previous_release(folder: Path) -> Path:
    with tarfile.open(PREVIOUS_RELEASE) as archive:
        archive.extractall(folder, filter="data")
    return folder / "nbrunner-6895f26"


def other_services(service: psutil.Process, home: str) -> list[psutil.Process]:
    """Services of the home other than `service`, and not its forked recorders."""
    found = []
    for process in psutil.process_iter(["pid", "ppid", "cmdline"]):
        argv = process.info["cmdline"] or []
        if "nbrunner.service" in argv and home in argv and service.pid not in (
            process.info["pid"], process.info["ppid"]
        ):  # fmt: skip
            found.append(process)
    return found


def test_runs_started_by_the_previous_release_are_adopted_after_its_service_is_killed(
    home: Path, tmp_path: Path
) -> None:
    old_code, gate = previous_release(tmp_path), tmp_path / "gate"
    old_env = {**os.environ, "PYTHONPATH": str(old_code), "NBRUNNER_HOME": str(home)}
    started = subprocess.run(
        [sys.executable, "-c", OLD_CLIENT, str(old_code), str(home), WAIT_THEN_EXIT, str(gate)],
        env=old_env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    runs = dict(pair.split(":") for pair in started.stdout.split())
    old_service = psutil.Process((contact.info(home) or {})["pid"])
    assert old_service.environ().get("PYTHONPATH") == str(old_code)
    # each of the old client's submissions may have started a service (that release had no
    # note of one on its way); one still starting would take the home once its service is
    # killed, and serve until idle: the upgrade waits until they found the lock taken.
    wait_until(
        lambda: not other_services(old_service, str(home)), timeout=60,
        what="the old release's other services to find the home taken",
    )  # fmt: skip
    old_service.kill()  # the upgrade: the old service is gone, its recorders hold the runs
    old_service.wait(30)

    with Runner(home) as runner:  # this release: its service adopts the old release's runs
        for run_id, pid in runs.items():
            record = runner.get(int(run_id)).record
            assert (record.status, record.pid) == (RunStatus.RUNNING, int(pid))
        serving = wait_until(lambda: contact.info(home), what="this release's service")
        assert psutil.Process(serving["pid"]).environ().get("PYTHONPATH") != str(old_code)
        gate.touch()
        ended = [runner.wait(int(run_id), timeout=60) for run_id in runs]
        assert [(r.status, r.exit_code) for r in ended] == [
            (RunStatus.SUCCEEDED, 0), (RunStatus.FAILED, 3)
        ]  # fmt: skip
        assert all("released" in runner.logs(r.id) for r in ended)
