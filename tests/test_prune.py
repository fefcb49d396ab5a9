"""Removing old runs (`nbrunner prune`, `retention`), logs on another disk, disk usage shown."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import stop_everything
from helpers.cli import cli, cli_json
from helpers.procs import python, wait_until

from nbrunner import Runner
from nbrunner.prune import parse_age, prune
from nbrunner.reporting import metrics_path
from nbrunner.states import RunStatus
from nbrunner.store import Store

REPORTS = "from nbrunner import report; report(step=1, loss=0.5); print('done')"
HOLD = "import time; print('up', flush=True); time.sleep(600)"


def ended_runs(runner: Runner) -> tuple[int, int]:
    """One succeeded run that reported a metric and one failed run; their ids."""
    runner.register("ok", command=python(REPORTS))
    runner.register("bad", command=python("import sys; sys.exit(3)"))
    ok, bad = runner.submit("ok"), runner.submit("bad")
    assert ok.wait(timeout=60).status is RunStatus.SUCCEEDED
    assert bad.wait(timeout=60).status is RunStatus.FAILED
    return ok.id, bad.id


def test_parse_age_takes_units_and_refuses_the_rest() -> None:
    assert parse_age("30d") == 30 * 86_400
    assert parse_age("12h") == 12 * 3600
    assert parse_age(" 1.5 W ") == 1.5 * 7 * 86_400
    for bad in ("30", "d", "-1d", "30 days", "", 30):
        with pytest.raises(ValueError, match="like 30d"):
            parse_age(bad)


def test_prune_removes_ended_runs_with_their_files_and_never_an_active_one(
    runner: Runner, home: Path
) -> None:
    ok, bad = ended_runs(runner)
    runner.register("hold", command=python(HOLD))
    held = runner.submit("hold")
    wait_until(lambda: "up" in held.logs(), what="the held run to start")
    ok_log = Path(runner.get(ok).record.log_path)
    files = [ok_log, Path(metrics_path(str(ok_log)))]
    assert all(p.exists() for p in files)

    dry = cli_json(home, "prune", "--older-than", "0s", "--keep-failed", "--dry-run")
    assert dry["runs"] == [ok] and dry["dry_run"] and dry["bytes_freed"] > 0
    assert all(p.exists() for p in files)  # a dry run removes nothing

    kept = cli(home, "prune", "--older-than", "0s", "--keep-failed")
    assert kept.stdout.startswith("removed 1 run(s) and 2 file(s)")
    assert not any(p.exists() for p in files)
    ids = {r["id"] for r in cli_json(home, "history")}
    assert ids == {bad, held.id}

    assert cli_json(home, "prune", "--older-than", "1d")["runs"] == []  # too recent
    assert cli_json(home, "prune", "--older-than", "0s")["runs"] == [bad]
    assert [r["id"] for r in cli_json(home, "history")] == [held.id]  # active: never pruned
    assert held.status is RunStatus.RUNNING


def test_prune_forgets_environments_no_run_uses(runner: Runner, home: Path) -> None:
    ended_runs(runner)
    db = sqlite3.connect(home / "nbrunner.db")
    assert db.execute("SELECT count(*) FROM environments").fetchone()[0] == 1
    runner.prune("0s")
    assert db.execute("SELECT count(*) FROM environments").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == 0


def test_a_run_that_an_active_run_waits_on_is_kept(runner: Runner) -> None:
    ok, _ = ended_runs(runner)
    runner.config("paused", True)  # the waiting run stays queued
    waiting = runner.submit("ok", after=[ok])
    report = runner.prune("0s")
    assert ok not in report.runs and waiting.id not in report.runs
    assert runner.get(ok).status is RunStatus.SUCCEEDED


def test_bad_ages_are_one_line_and_exit_2(home: Path) -> None:
    for args in (["--older-than", "30"], ["--older-than", "soon"]):
        result = cli(home, "prune", *args, check=False)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and "like 30d" in result.stderr
    result = cli(home, "config", "retention", "forever", check=False)
    assert result.returncode == 2 and "retention must be an age like 30d" in result.stderr


def test_a_store_that_lost_much_is_vacuumed(tmp_path: Path) -> None:
    store = Store(tmp_path / "home")
    rows = [
        {"module": "m", "params": {"blob": "x" * 20_000}, "argv": ["true"], "env": {}}
        for _ in range(200)
    ]
    ids = store.insert_runs(rows)
    with store.write() as tx:
        for run_id in ids:
            tx.update(run_id, status=RunStatus.SUCCEEDED, ended_at=1.0)
    before = store.path.stat().st_size
    report = prune(store, 60)
    assert report.vacuumed and len(report.runs) == 200
    assert store.path.stat().st_size < before / 4


def test_the_service_applies_the_retention_setting(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NBRUNNER_RETENTION_EVERY_S", "0.2")  # the service's, not hourly
    with Runner(home) as runner:
        ended_runs(runner)
        runner.config("retention", "0s")
        runner.register("hold", command=python(HOLD))
        held = runner.submit("hold")  # keeps the service busy, and is never removed
        try:
            wait_until(lambda: runner.count() == 1, what="the service to remove the ended runs")
            assert not runner.get(held.id).status.is_done  # active: kept
        finally:
            stop_everything(runner)


def test_logs_can_go_to_another_disk_and_old_runs_keep_theirs(
    runner: Runner, home: Path, tmp_path: Path
) -> None:
    ok, _ = ended_runs(runner)
    elsewhere = tmp_path / "other-disk" / "logs"
    cli(home, "config", "logs_dir", str(elsewhere))
    moved = runner.submit("ok")
    assert moved.wait(timeout=60).status is RunStatus.SUCCEEDED
    assert Path(moved.record.log_path).parent == elsewhere
    assert "done" in moved.logs()
    assert Path(runner.get(ok).record.log_path).parent == home / "logs"
    # the home's disk usage counts the logs kept elsewhere too
    shown = cli_json(home, "show")
    assert shown["home"] == str(home) and shown["runs"] == 3
    assert shown["disk_usage"] >= (home / "nbrunner.db").stat().st_size + sum(
        p.stat().st_size for p in elsewhere.iterdir()
    )
    assert "disk usage" in cli(home, "show").stdout
    # pruning removes the logs where they are
    runner.prune("0s")
    assert list(elsewhere.iterdir()) == []
    bad = cli(home, "config", "logs_dir", "relative/dir", check=False)
    assert bad.returncode == 2 and "logs_dir must be an absolute path" in bad.stderr


def test_the_dashboard_summary_says_how_much_disk_the_home_uses(runner: Runner) -> None:
    from nbrunner.ui import Dashboard

    ended_runs(runner)
    dashboard = Dashboard(runner, start=False)
    try:
        dashboard.summary.load()
        assert "Disk used by this home:" in dashboard.summary.disk.value
        assert "KB" in dashboard.summary.disk.value or "MB" in dashboard.summary.disk.value
    finally:
        dashboard.close()
