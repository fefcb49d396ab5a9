"""Pruning sweeps: the median stopping rule on curves, and real sweeps whose runs it stops."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from helpers.cli import cli, cli_json

from nbrunner import Runner, RunStatus
from nbrunner.errors import InvalidParameter
from nbrunner.pruning import PruneRule, best_until, judge, running_mean

RUN_TIMEOUT_S = 60.0
RULE = PruneRule("acc", "max", grace=2, min_peers=2)


def rising(quality: float, steps: int = 10) -> list[tuple[float, float]]:
    return [(float(s), quality * (s + 1) / steps) for s in range(steps)]


# -- the rule ------------------------------------------------------------------------------------
def test_a_run_behind_the_median_is_stopped_and_the_reason_says_where_and_against_what() -> None:
    verdict = judge(RULE, rising(0.2), [rising(0.9), rising(0.8), rising(0.85)])
    assert verdict is not None
    assert verdict.step == 9 and verdict.peers == 3
    assert verdict.median == pytest.approx(0.85 * 0.55)  # the peers' running means at step 9
    assert verdict.reason.startswith("pruned at step 9: acc best 0.2 is below the median 0.4675")
    assert "3 peers" in verdict.reason


def test_a_run_at_or_above_the_median_is_never_stopped() -> None:
    peers = [rising(q) for q in (0.1, 0.2, 0.3, 0.9)]
    for quality in (0.3, 0.5, 0.95):  # its best beats the peers' median running mean
        assert judge(RULE, rising(quality), peers) is None
    # a run judged at every step of its curve: the best of the sweep is never stopped
    best = rising(0.95)
    assert all(judge(RULE, best[: n + 1], peers) is None for n in range(len(best)))


def test_grace_steps_and_fewest_peers_hold_judgement_back() -> None:
    peers = [rising(0.9), rising(0.8)]
    poor = rising(0.1)
    assert judge(RULE, poor[:2], peers) is None  # step 1 < grace 2
    assert judge(RULE, poor[:3], peers) is not None
    assert judge(RULE, poor, peers[:1]) is None  # one peer, two needed


def test_peers_count_only_where_they_have_been() -> None:
    """A peer that has not reached the step (queued late, or stopped early) is no peer."""
    short = rising(0.9)[:4]
    assert running_mean(short, 3) == pytest.approx(0.9 * 0.25)
    assert math.isnan(running_mean(short, 5))
    assert judge(RULE, rising(0.1), [short, short, rising(0.9)]) is None  # one peer at step 9


def test_minimized_metrics_and_diverged_runs() -> None:
    rule = PruneRule("loss", "min", grace=0, min_peers=1)
    falling = [(0.0, 1.0), (1.0, 0.5)]
    assert judge(rule, [(0.0, 2.0), (1.0, 1.5)], [falling]) is not None
    assert judge(rule, [(0.0, 0.4), (1.0, 0.3)], [falling]) is None
    nan = [(0.0, math.nan), (1.0, math.nan)]
    assert math.isnan(best_until(nan, 1, "min"))
    verdict = judge(rule, nan, [falling])
    assert verdict is not None and "no finite value" in verdict.reason


def test_rules_are_parsed_and_bad_ones_refused() -> None:
    assert PruneRule.parse("val/acc:max") == PruneRule("val/acc", "max")
    assert PruneRule.parse("loss:min", grace=0, min_peers=1) == PruneRule("loss", "min", 0, 1)
    for bad in ("val_acc", "val_acc:up", ":max", "", 3):
        with pytest.raises(InvalidParameter, match="prune must be METRIC:max or METRIC:min"):
            PruneRule.parse(bad)
    with pytest.raises(InvalidParameter, match="prune min_peers must be a whole number ≥ 1"):
        PruneRule.parse("loss:min", min_peers=0)


# -- the service's side: real stores and metrics files ---------------------------------------------
def test_a_run_is_judged_again_when_its_peers_catch_up(tmp_path: Path) -> None:
    """A run that reported all its steps before its peers had any is judged once they have."""
    import json

    from nbrunner.pruning import Pruner
    from nbrunner.reporting import metrics_path
    from nbrunner.store import Store

    store = Store(tmp_path / "home")
    row = {"module": "m", "params": {}, "argv": ["true"], "env": {}, "sweep": "s"}
    ids = store.insert_runs([row | {"prune": RULE.to_dict()}] * 3)
    for run_id in ids:
        store.transition(run_id, RunStatus.STARTING)
        store.transition(run_id, RunStatus.RUNNING)

    def report(run_id: int, quality: float) -> None:
        lines = [json.dumps({"step": s, "acc": v}) for s, v in rising(quality)]
        Path(metrics_path(store.get(run_id).log_path)).write_text("\n".join(lines) + "\n")

    pruner = Pruner(store)
    poor, *peers = ids
    report(poor, 0.2)
    assert pruner.behind(store.active()) == []  # no peer has been as far yet
    assert pruner.behind(store.active()) == []  # nothing new: nothing judged
    for run_id, quality in zip(peers, (0.9, 0.8), strict=True):
        report(run_id, quality)
    ((stopped, reason),) = pruner.behind(store.active())
    assert stopped == poor and reason.startswith("pruned at step 9: acc best 0.2")


# -- real sweeps -----------------------------------------------------------------------------------
LEARN = """\
import argparse, os, time
from pathlib import Path
from nbrunner import report
from nbrunner.reporting import flush
parser = argparse.ArgumentParser()
parser.add_argument("--quality", type=float)
args = parser.parse_args()
for step in range(10):
    report(step=step, acc=args.quality * (step + 1) / 10)
flush()
# the runs named in HOLD go on until the test releases them: a slow run, being judged
if str(args.quality) in os.environ["HOLD"].split(","):
    while not Path(os.environ["RELEASE"]).exists():
        time.sleep(0.05)
"""


@pytest.fixture
def learn(runner: Runner, tmp_path: Path) -> Runner:
    script = tmp_path / "learn.py"
    script.write_text(LEARN)
    runner.register(
        "learn",
        script=str(script),
        params={"quality": {"type": "float", "default": 0.5}},
        env={"HOLD": "0.2,0.95", "RELEASE": str(tmp_path / "release")},
    )
    runner.config("max_concurrent", 2)  # the last two wait for the first two to end
    return runner


def check_pruned_sweep(runner: Runner, ids: list[int], release: Path) -> None:
    """0.9 and 0.8 run and end; 0.2 is pruned against them; 0.95, ahead, is not."""
    fine, good, poor, best = ids
    pruned = runner.wait(poor, timeout=RUN_TIMEOUT_S)
    assert pruned.status is RunStatus.PRUNED, pruned
    assert pruned.reason is not None and pruned.reason.startswith("pruned at step 9: acc best 0.2")
    assert not runner.store.get(best).is_done  # ahead: still going (or just claimed)
    release.touch()
    assert runner.wait(best, timeout=RUN_TIMEOUT_S).status is RunStatus.SUCCEEDED
    for run_id in (fine, good):
        assert runner.store.get(run_id).status is RunStatus.SUCCEEDED


def test_the_cli_sweep_prunes_a_run_behind_its_finished_peers(
    learn: Runner, home: Path, tmp_path: Path
) -> None:
    made = cli_json(
        home,
        "sweep",
        "learn",
        "-p",
        "quality=0.9,0.8,0.2,0.95",
        "--prune",
        "acc:max",
        "--prune-grace",
        "3",
        "--prune-min-peers",
        "2",
    )
    check_pruned_sweep(learn, made["runs"], tmp_path / "release")
    listed = cli_json(home, "history", "--status", "pruned")
    assert [r["id"] for r in listed] == [made["runs"][2]]
    assert listed[0]["prune"] == {"metric": "acc", "direction": "max", "grace": 3, "min_peers": 2}
    shown = cli(home, "history", "--status", "pruned").stdout
    assert "pruned" in shown


def test_the_api_sweep_prunes_with_the_default_rule(learn: Runner, tmp_path: Path) -> None:
    sweep = learn.sweep("learn", {"quality": [0.9, 0.8, 0.2, 0.95]}, prune="acc:max")
    check_pruned_sweep(learn, sweep.ids, tmp_path / "release")
    assert list(learn.history(status="pruned")["id"]) == [sweep.ids[2]]
    again = learn.restart(sweep.ids[2])  # asked for by name: it runs to its end
    assert again.record.sweep == sweep.id and again.record.prune is None
    assert again.wait(timeout=RUN_TIMEOUT_S).status is RunStatus.SUCCEEDED


def test_a_bad_prune_rule_queues_nothing(learn: Runner, home: Path) -> None:
    result = cli(home, "sweep", "learn", "-p", "quality=0.1,0.2", "--prune", "acc", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "nbrunner: error: prune must be METRIC:max or METRIC:min, like val_acc:max, got 'acc'"
    ]
    result = cli(home, "sweep", "learn", "-p", "quality=0.1", "--prune-grace", "3", check=False)
    assert result.returncode == 2 and "need --prune" in result.stderr
    assert learn.count() == 0


# -- the dashboard ---------------------------------------------------------------------------------
def test_the_sweep_launcher_has_a_prune_box_and_pruned_runs_their_own_colour(
    learn: Runner,
) -> None:
    from nbrunner.monitor import SystemSampler
    from nbrunner.ui import Dashboard
    from nbrunner.ui.theme import badge, status_colour

    learn.config("paused", True)
    dash = Dashboard(learn, start=False, sampler=SystemSampler(interval=3600))
    try:
        launcher = dash.launcher
        launcher.module.value = "learn"
        assert launcher.prune_row.layout.display == "none"  # only a sweep prunes
        launcher.sweep.value = True
        assert launcher.prune_row.layout.display is None
        launcher.fields["quality"].input.value = "0.1,0.9"
        launcher.prune.value = "acc"
        assert launcher.submit() == []
        assert "prune must be METRIC:max or METRIC:min" in launcher.message.value
        launcher.prune.value = "acc:max"
        ids = launcher.submit()
        assert [(learn.store.get(i).prune or {}).get("metric") for i in ids] == ["acc", "acc"]
        assert "pruned" in [value for _, value in dash.history.status.options]
    finally:
        dash.close()
    colours = [status_colour(s.value) for s in RunStatus]
    assert len(set(colours)) == len(colours)  # pruned looks like no other state
    assert status_colour("pruned") in badge("pruned")
