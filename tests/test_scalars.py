"""Scalars runs report (nbrunner.report, `nbrunner:metric` lines) and sweeps, with real runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from helpers.cli import cli, cli_json
from nbformat.v4 import new_code_cell, new_notebook

from nbrunner import Runner, RunStatus
from nbrunner.errors import BadInput, InvalidParameter
from nbrunner.sweep import grid_points, random_points
from nbrunner.ui.history import HistoryQuery, export_csv

RUN_TIMEOUT_S = 60.0
TRAIN = """\
import argparse, time
from nbrunner import report
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.5)
parser.add_argument("--batch", type=int, default=32)
parser.add_argument("--steps", type=int, default=5)
args = parser.parse_args()
for step in range(args.steps):
    report(step=step, loss=1 / (1 + args.lr * step), acc=args.lr * step / (1 + args.lr * step))
print("nbrunner:metric step=7 loss=0.01 bad=x")
print("some other line nbrunner:metric speed=3.5 time=1700000000")
"""


def python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NBRUNNER_METRICS")}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=60,
        check=True,
    )


@pytest.fixture
def train(runner: Runner, tmp_path: Path) -> Runner:
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    runner.register(
        "train",
        script=str(script),
        params={
            "lr": {"type": "float", "default": 0.5},
            "batch": {"type": "int", "default": 32},
            "steps": {"type": "int", "default": 5},
        },
    )
    return runner


# -- report() in a plain process ---------------------------------------------------------------
def test_report_outside_nbrunner_does_nothing_and_loads_nothing(tmp_path: Path) -> None:
    code = (
        "import sys; from nbrunner import report; import nbrunner.reporting as r\n"
        "for i in range(1000): report(step=i, loss=0.5)\n"
        "heavy = [m for m in ('pandas', 'numpy', 'psutil', 'ipywidgets') if m in sys.modules]\n"
        "print(r._sink, heavy, [t.name for t in __import__('threading').enumerate()])"
    )
    assert python(code, {}).stdout.split() == ["None", "[]", "['MainThread']"]


def test_report_inside_a_run_is_written_at_exit(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    python(
        "from nbrunner import report\n"
        "report(step=1, loss=0.5, acc=1)\nreport(loss=float('nan'))\nreport(x=float('inf'))",
        {"NBRUNNER_METRICS": str(path)},
    )
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(d["step"], d.get("loss"), d.get("acc")) for d in lines[:2]] == [
        (1, 0.5, 1.0),
        (2, lines[1]["loss"], None),
    ]
    assert lines[1]["loss"] != lines[1]["loss"]  # NaN
    assert lines[2] == {"step": 3, "time": lines[2]["time"], "x": float("inf")}


def test_report_flushes_about_once_a_second_while_the_run_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    python(
        "import os, time\nfrom nbrunner import report\nreport(loss=1)\n"
        "path, deadline = os.environ['NBRUNNER_METRICS'], time.monotonic() + 50\n"
        "while not (os.path.exists(path) and os.path.getsize(path)) and time.monotonic() < deadline:\n"
        "    time.sleep(0.02)  # until the flusher has written, then an exit that flushes nothing\n"
        "os._exit(0)",
        {"NBRUNNER_METRICS": str(path)},
    )
    assert len(path.read_text().splitlines()) == 1  # written by the flusher, not at exit


def test_the_metrics_file_is_capped_but_keeps_the_last_point(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    python(
        "from nbrunner import report\nfor i in range(1000): report(step=i, loss=i)",
        {"NBRUNNER_METRICS": str(path), "NBRUNNER_METRICS_MAX": "4096"},
    )
    lines = path.read_text().splitlines()
    assert path.stat().st_size < 4096 + 200
    assert json.loads(lines[-2])["loss"] == 999
    assert json.loads(lines[-1])["dropped"] > 900


# -- real runs ---------------------------------------------------------------------------------
def test_a_run_reports_and_scalars_reads_a_long_frame(train: Runner, home: Path) -> None:
    run = train.submit("train", {"steps": 4})
    assert run.wait(RUN_TIMEOUT_S).status is RunStatus.SUCCEEDED
    frame = train.scalars([run.id])
    assert list(frame.columns) == ["run", "step", "time", "name", "value"]
    assert frame.groupby("name").size().to_dict() == {"acc": 4, "loss": 5, "speed": 1}
    loss = frame[frame["name"] == "loss"]
    assert loss["step"].tolist() == [0, 1, 2, 3, 7]  # the text line's step=7 too
    assert loss["value"].iloc[-1] == 0.01
    speed = frame[frame["name"] == "speed"].iloc[0]
    assert speed["value"] == 3.5 and speed["time"] == pd.Timestamp(1700000000, unit="s", tz="UTC")
    assert frame[frame["name"] == "acc"]["time"].notna().all()
    points = cli_json(home, "scalars", str(run.id), "--name", "acc")
    assert [p["step"] for p in points] == [0, 1, 2, 3]
    assert "loss" in cli(home, "scalars", str(run.id)).stdout


def test_a_command_module_reports_with_text_lines(runner: Runner) -> None:
    runner.register(
        "shell",
        command=["sh", "-c", "for i in 1 2 3; do echo nbrunner:metric step=$i loss=0.$i; done"],
    )
    run = runner.submit("shell")
    run.wait(RUN_TIMEOUT_S)
    frame = runner.scalars(run.id)
    assert frame["value"].tolist() == [0.1, 0.2, 0.3]


def test_a_notebook_run_reports_from_its_kernel(runner: Runner, tmp_path: Path) -> None:
    cells = ["from nbrunner import report", "for i in range(3):\n    report(step=i, loss=i / 10)"]
    nbformat.write(
        new_notebook(
            cells=[new_code_cell(c) for c in cells],
            metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        ),
        tmp_path / "nb.ipynb",
    )
    runner.register("nb", notebook=str(tmp_path / "nb.ipynb"))
    run = runner.submit("nb")
    assert run.wait(90).status is RunStatus.SUCCEEDED, run.logs()
    assert runner.scalars(run.id)["value"].tolist() == [0.0, 0.1, 0.2]


# -- sweeps -------------------------------------------------------------------------------------
def test_grid_and_seeded_random_points() -> None:
    assert grid_points({"lr": [1, 2], "batch": [32, 64]}) == [
        {"lr": 1, "batch": 32},
        {"lr": 1, "batch": 64},
        {"lr": 2, "batch": 32},
        {"lr": 2, "batch": 64},
    ]
    space = {"lr": (1e-5, 1e-1, "log"), "batch": [32, 64], "layers": (1, 4)}
    drawn = random_points(space, 20, seed=3)
    assert drawn == random_points(space, 20, seed=3) != random_points(space, 20, seed=4)
    assert all(1e-5 <= p["lr"] <= 1e-1 and p["layers"] in (1, 2, 3, 4) for p in drawn)
    with pytest.raises(InvalidParameter, match="non-empty list"):
        grid_points({"lr": 0.1})


def test_a_sweep_queues_one_tagged_run_per_point(train: Runner, home: Path) -> None:
    sweep = train.sweep("train", grid={"lr": [0.1, 0.9], "batch": [32, 64]}, params={"steps": 3})
    assert len(sweep) == 4
    for run in sweep:
        assert run.wait(RUN_TIMEOUT_S).status is RunStatus.SUCCEEDED
        assert run.record.sweep == sweep.id and run.params["steps"] == 3
    history = train.history(sweep=sweep.id, metric="loss")
    assert sorted(history["id"]) == sweep.ids
    assert set(history["sweep"]) == {sweep.id}
    best_run = history.sort_values("loss_best").iloc[0]
    assert best_run["params"]["lr"] == 0.9 and best_run["loss_last"] == 0.01
    acc = train.history(sweep=sweep.id, metric="acc")
    assert acc["acc_best"].max() == pytest.approx(0.9 * 2 / (1 + 0.9 * 2))  # maximized
    assert train.count(sweep=sweep.id) == 4
    assert train.sweeps()[0] == (sweep.id, "train", 4)
    path = home / "export.csv"
    export_csv(train, HistoryQuery(sweep=sweep.id, metric="loss"), path)
    assert {"loss_last", "loss_best"} <= set(pd.read_csv(path).columns)


def test_a_bad_point_queues_nothing(train: Runner) -> None:
    with pytest.raises(InvalidParameter):
        train.sweep("train", grid={"lr": [0.1, "fast"]})
    with pytest.raises(BadInput, match="either grid"):
        train.sweep("train")
    assert train.count() == 0


def test_a_sweep_name_in_use_is_refused_and_queues_nothing(train: Runner, home: Path) -> None:
    first = train.sweep("train", grid={"lr": [0.1, 0.9]}, params={"steps": 3}, name="lr-search")
    said = "a sweep named 'lr-search' exists already (2 runs): give another name, or none"
    with pytest.raises(InvalidParameter, match=re.escape(said)):
        train.sweep("train", grid={"lr": [0.5]}, name="lr-search")  # a cell run again
    again = cli(home, "sweep", "count", "-p", "n=1,2", "--name", "lr-search", check=False)
    assert (again.returncode, again.stdout) == (2, "")
    assert again.stderr == f"nbrunner: error: {said} for a new id\n"
    assert train.count(sweep="lr-search") == 2 and train.count() == 2
    assert train.wait(first.ids, timeout=RUN_TIMEOUT_S)


def test_the_cli_sweeps_a_grid_and_a_seeded_sample(train: Runner, home: Path) -> None:
    made = cli_json(home, "sweep", "train", "-p", "lr=0.1,0.2", "-p", "batch=8,16,32")
    assert len(made["runs"]) == 6
    for run_id in made["runs"]:
        train.wait(run_id, timeout=RUN_TIMEOUT_S)
    listed = cli_json(home, "history", "--sweep", made["sweep"], "--metric", "loss")
    assert sorted(r["id"] for r in listed) == made["runs"]
    assert all(r["loss_last"] == 0.01 and r["loss_best"] == 0.01 for r in listed)
    table = cli(home, "history", "--sweep", made["sweep"], "--metric", "acc").stdout
    assert "ACC_LAST" in table.splitlines()[0] and "ACC_BEST" in table.splitlines()[0]
    assert {(r["params"]["lr"], r["params"]["batch"]) for r in listed} == {
        (lr, b) for lr in (0.1, 0.2) for b in (8, 16, 32)
    }
    first, second = (
        cli_json(home, "sweep", "train", "-p", "lr=0.1,0.2,0.3", "--random", "4", "--seed", "7")
        for _ in range(2)
    )
    params = [
        [r["params"] for r in cli_json(home, "history", "--sweep", s["sweep"])]
        for s in (first, second)
    ]
    assert params[0] == params[1]


# -- the best run of a sweep --------------------------------------------------------------------
def _finished_sweep(train: Runner, home: Path) -> tuple[str, dict[float, int]]:
    """A CLI sweep over lr; returns its id and each lr's run id (acc's last grows with lr)."""
    made = cli_json(home, "sweep", "train", "-p", "lr=0.5,0.1,0.9", "-p", "steps=4")
    cli(home, "wait", "--sweep", made["sweep"])
    by_lr = {train.get(i).params["lr"]: i for i in made["runs"]}
    return made["sweep"], by_lr


def test_history_sorts_by_a_metric_column_or_param_and_json_keeps_the_order(
    train: Runner, home: Path
) -> None:
    sweep, by_lr = _finished_sweep(train, home)
    ranked = cli_json(home, "history", "--sweep", sweep, "--sort=-acc")
    assert [r["id"] for r in ranked] == [by_lr[0.9], by_lr[0.5], by_lr[0.1]]
    assert ranked[0]["acc_last"] == pytest.approx(0.9 * 3 / (1 + 0.9 * 3))  # shown beside
    ascending = cli_json(home, "history", "--sweep", sweep, "--sort", "lr", "--limit", "2")
    assert [r["id"] for r in ascending] == [by_lr[0.1], by_lr[0.5]]
    table = cli(home, "history", "--sweep", sweep, "--metric", "acc", "--sort=-acc_last").stdout
    assert [line.split()[0] for line in table.splitlines()[1:]] == [
        str(by_lr[lr]) for lr in (0.9, 0.5, 0.1)
    ]
    frame = train.history(sweep=sweep, sort="-acc", limit=1)
    assert frame["id"].tolist() == [by_lr[0.9]] and "acc_last" in frame
    assert train.history(sweep=sweep, sort="id")["id"].tolist() == sorted(by_lr.values())


def test_best_prints_the_winner_with_its_params(train: Runner, home: Path) -> None:
    sweep, by_lr = _finished_sweep(train, home)
    best = cli(home, "best", "--sweep", sweep, "--metric", "acc").stdout
    assert best.startswith(f"run {by_lr[0.9]} succeeded  acc=0.") and "lr=0.9" in best
    worst = cli_json(home, "best", "--sweep", sweep, "--metric", "acc:min")
    assert worst["id"] == by_lr[0.1] and worst["params"]["lr"] == 0.1
    record, value = train.best("acc", sweep=sweep)
    assert record.id == by_lr[0.9] and value == pytest.approx(0.9 * 3 / (1 + 0.9 * 3))
    again = cli(home, "restart", str(by_lr[0.9]), "-p", "steps=5").stdout.strip()
    assert cli_json(home, "show", again)["sweep"] == sweep  # a restart stays in its sweep


def test_a_metric_typo_or_unknown_sweep_is_one_clear_error(train: Runner, home: Path) -> None:
    sweep, _ = _finished_sweep(train, home)
    for args in (
        ("history", "--sweep", sweep, "--metric", "accuracy"),
        ("history", "--sweep", sweep, "--sort=-accuracy"),
        ("best", "--sweep", sweep, "--metric", "accuracy"),
    ):
        typo = cli(home, *args, check=False)
        assert (typo.returncode, typo.stdout) == (2, "")
        assert typo.stderr == (
            "nbrunner: error: no run here reported 'accuracy'; they reported: acc, loss, speed\n"
        )
    for verb in ("history", "ps", "wait", "cancel", "scalars"):
        unknown = cli(home, verb, "--sweep", "nope", check=False)
        assert unknown.returncode == 2
        assert unknown.stderr == f"nbrunner: error: no sweep 'nope'; the newest are: {sweep}\n"


def test_sweep_selects_runs_for_ps_wait_cancel_and_scalars(train: Runner, home: Path) -> None:
    done, _ = _finished_sweep(train, home)
    points = cli_json(home, "scalars", "--sweep", done, "--name", "acc")
    assert len({p["run"] for p in points}) == 3 and {p["name"] for p in points} == {"acc"}
    slow = cli_json(home, "sweep", "count", "-p", "n=1000", "-p", "delay=0.05,0.06")
    other = cli(home, "run", "count", "-p", "n=1000", "-p", "delay=0.05").stdout.strip()
    listed = cli_json(home, "ps", "--sweep", slow["sweep"])
    assert sorted(r["id"] for r in listed) == slow["runs"]
    cancelled = cli(home, "cancel", "--sweep", slow["sweep"]).stdout
    assert cancelled.count("run ") == 2 and f"run {other} " not in cancelled
    waited = cli(home, "wait", "--sweep", slow["sweep"], "--json", check=False)
    assert waited.returncode == 1  # none succeeded
    assert [r["status"] for r in json.loads(waited.stdout)] == ["cancelled", "cancelled"]
    assert [r["id"] for r in cli_json(home, "ps")] == [int(other)]
    cli(home, "cancel", other)
