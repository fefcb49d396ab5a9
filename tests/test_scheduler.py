"""The concurrency limit, held across every process that uses one home."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.procs import processes_with, python, wait_for_file, wait_until
from helpers.sampling import MaxSampler

from nbrunner import Runner, contact, service
from nbrunner.launching import fork_recorder
from nbrunner.resources import Capacity
from nbrunner.scheduler import admit
from nbrunner.states import RunStatus
from nbrunner.store import Store

# Prints its token many times, slowly enough that the runs overlap in time.
CHATTY = (
    "import sys, time\n"
    "token = sys.argv[sys.argv.index('--token') + 1]\n"
    "for i in range(40):\n"
    "    print(f'{token} line {i}', flush=True)\n"
    "    time.sleep(0.01)\n"
)


def limit_watcher(runner: Runner, marker: str) -> MaxSampler:
    """Samples the store and the process table while runs go on; keeps the maxima."""
    return MaxSampler(
        {
            "holding": lambda: len(runner.store.holding_slot()),
            "processes": lambda: len(processes_with(marker)),
        }
    )


def test_twelve_runs_of_three_modules_never_exceed_the_limit(runner: Runner, home: Path) -> None:
    marker = f"chatty-{home.name}-{id(runner)}"
    for name in ("alpha", "beta", "gamma"):
        runner.register(
            name, command=[sys.executable, "-c", CHATTY, marker], params={"token": {"type": "str"}}
        )
    runner.config("max_concurrent", 4)
    with limit_watcher(runner, marker) as watcher:
        runs = [
            runner.submit(name, {"token": f"{name}-{i}"})
            for i in range(4)
            for name in ("alpha", "beta", "gamma")
        ]
        records = [run.wait(timeout=120) for run in runs]
    assert [r.status for r in records] == [RunStatus.SUCCEEDED] * 12
    assert 1 <= watcher.most["holding"] <= 4
    assert 1 <= watcher.most["processes"] <= 4
    for run, record in zip(runs, records, strict=True):
        lines = Path(record.log_path).read_text().splitlines()
        token = record.params["token"]
        assert lines == [f"{token} line {i}" for i in range(40)], f"run {run.id} log mixed"


SUBMITTER = """
import sys
from nbrunner import Runner, contact, service
from nbrunner.launching import fork_recorder
runner = Runner(sys.argv[1], start=False)
for i in range(30):
    runner.submit("nap", {"token": f"{sys.argv[2]}-{i}"})
"""


def test_the_limit_holds_across_three_processes_submitting_at_once(
    runner: Runner, home: Path
) -> None:
    marker = f"nap-{home.name}-{id(runner)}"
    nap = "import time; time.sleep(0.3)"
    runner.register(
        "nap", command=[sys.executable, "-c", nap, marker], params={"token": {"type": "str"}}
    )
    runner.config("max_concurrent", 3)
    with limit_watcher(runner, marker) as watcher:
        submitters = [
            subprocess.Popen([sys.executable, "-c", SUBMITTER, str(home), f"p{n}"])
            for n in range(3)
        ]
        assert [p.wait(timeout=60) for p in submitters] == [0, 0, 0]
        wait_until(
            lambda: runner.count() == 90 and runner.count(status="succeeded") == 90,
            timeout=180,
            interval=0.2,
            what="90 runs to succeed",
        )
    assert 1 <= watcher.most["holding"] <= 3
    assert 1 <= watcher.most["processes"] <= 3


def test_queued_runs_start_by_priority_then_submission_order(runner: Runner) -> None:
    runner.config("paused", True)
    low = runner.submit("count", {"n": 0}, priority=0)
    high = runner.submit("count", {"n": 0}, priority=5)
    low2 = runner.submit("count", {"n": 0}, priority=0)
    runner.config("max_concurrent", 1)
    runner.config("paused", False)
    records = [r.wait(timeout=30) for r in (low, high, low2)]
    starts = sorted(records, key=lambda r: r.started_at or 0)
    assert [r.id for r in starts] == [high.id, low.id, low2.id]


def _queued(run_id: int, group: str | None = None):
    from nbrunner.models import RunRecord

    return RunRecord(
        id=run_id,
        module="m",
        params={},
        status=RunStatus.QUEUED,
        submitted_at=0.0,
        log_path="",
        group=group,
    )


ROOMY = Capacity(cpus=64, memory_total=10**12, memory_available=10**12)


def test_a_full_group_does_not_block_the_runs_behind_it() -> None:
    holding = [_queued(1, "gpu")]
    queued = [_queued(2, "gpu"), _queued(3), _queued(4, "gpu")]
    decision = admit(queued, holding, {"max_concurrent": 10, "group.gpu": 1}, ROOMY)
    assert [r.id for r, _ in decision.start] == [3]


def test_admission_stops_at_the_free_slots_and_when_paused() -> None:
    queued = [_queued(i) for i in range(5)]
    assert len(admit(queued, [_queued(9)], {"max_concurrent": 3}, ROOMY).start) == 2
    assert admit(queued, [], {"max_concurrent": 3, "paused": True}, ROOMY).start == []


def held(runner: Runner, gate: Path) -> None:
    """A module whose runs hold their place until the test creates `gate`."""
    runner.register("held", command=python(wait_for_file(gate)))


def test_a_startable_run_deep_in_the_queue_is_found(runner: Runner, tmp_path: Path) -> None:
    runner.config("max_concurrent", 2)
    runner.config("group.g", 1)
    held(runner, tmp_path / "gate")  # the blocker runs until the test ends
    blocker = runner.submit("held", group="g")
    wait_until(lambda: blocker.status is RunStatus.RUNNING, what="the group's one run")
    waiting = [runner.submit("count", {"n": 1}, group="g") for _ in range(11)]
    deep = runner.submit("count", {"n": 1, "delay": 0})
    assert deep.wait(timeout=30).status is RunStatus.SUCCEEDED
    assert blocker.status is RunStatus.RUNNING
    assert all(run.status is RunStatus.QUEUED for run in waiting)


def test_a_ray_run_counts_against_slots_and_groups_but_not_this_machines_resources() -> None:
    ray_gpu = dataclasses.replace(_queued(2, "g"), backend="ray", resources={"gpus": 1})
    ray_holding = dataclasses.replace(_queued(1), backend="ray", resources={"cpus": 64})
    local = dataclasses.replace(_queued(3), resources={"cpus": 64})
    no_gpu_here = Capacity(cpus=64, memory_total=10**12, memory_available=10**12)
    started = admit([ray_gpu, local], [ray_holding], {"max_concurrent": 10}, no_gpu_here).start
    assert [r.id for r, _ in started] == [2, 3]  # nothing local is booked for either Ray run
    assert admit([ray_gpu], [ray_holding], {"max_concurrent": 1}, no_gpu_here).start == []
    full_group = {"max_concurrent": 10, "group.g": 1}
    assert (
        admit([ray_gpu], [dataclasses.replace(ray_holding, group="g")], full_group, ROOMY).start
        == []
    )


def test_a_startable_run_behind_a_thousand_blocked_ones_starts(
    runner: Runner, tmp_path: Path
) -> None:
    runner.config("group.g", 1)
    held(runner, tmp_path / "gate")  # the blocker runs until the test ends
    blocker = runner.submit("held", group="g")
    wait_until(lambda: blocker.status is RunStatus.RUNNING, what="the group's one run")
    runner.submit_many("count", [{"n": 1}] * 1000, group="g", priority=5)
    runner.submit_many("count", [{"n": 2}] * 300, priority=5, after=[blocker])
    deep = runner.submit("count", {"n": 1, "delay": 0})
    assert deep.wait(timeout=30).status is RunStatus.SUCCEEDED
    assert blocker.status is RunStatus.RUNNING


def test_one_failed_launch_leaves_no_run_of_its_batch_claimed_and_unlaunched(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Runner(home) as client:
        client.config("paused", True)
        runs = [client.submit("count", {"n": 1, "delay": 0}) for _ in range(3)]
    assert contact.stop(home)
    Store(home).set_config("paused", False)
    calls = []

    def first_fails(spec, link):
        calls.append(spec.run_id)
        if len(calls) == 1:
            raise subprocess.CalledProcessError(1, ["recorder"])
        return fork_recorder(spec, link)

    monkeypatch.setattr(service, "start_recorder", first_fails)
    owner = service.Service(home, idle_exit=0)
    assert owner._take_over()
    try:
        owner._tick()
        assert sorted(calls) == [r.id for r in runs]  # all three were launched in one tick
        deadline = time.monotonic() + 30
        records = [Store(home).get(r.id) for r in runs]
        while not all(r.is_done for r in records):
            assert time.monotonic() < deadline, "the batch did not end"
            time.sleep(0.1)
            owner._tick()
            records = [Store(home).get(r.id) for r in runs]
    finally:
        owner._close()
    failed = next(r for r in records if r.id == calls[0])
    assert failed.status is RunStatus.FAILED
    assert "could not start the run's recorder" in failed.reason
    assert [r.status for r in records if r.id != calls[0]] == [RunStatus.SUCCEEDED] * 2
