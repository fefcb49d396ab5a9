"""The concurrency limit, held across every process that uses one home."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers.procs import processes_with, wait_until
from helpers.sampling import MaxSampler

from nbrunner import Runner
from nbrunner.resources import Capacity
from nbrunner.scheduler import admit
from nbrunner.states import RunStatus

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
from nbrunner import Runner
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


def test_a_startable_run_deep_in_the_queue_is_found(runner: Runner) -> None:
    runner.config("max_concurrent", 2)
    runner.config("group.g", 1)
    blocker = runner.submit("count", {"n": 300, "delay": 0.1}, group="g")
    waiting = [runner.submit("count", {"n": 1}, group="g") for _ in range(11)]
    deep = runner.submit("count", {"n": 1, "delay": 0})
    assert deep.wait(timeout=30).status is RunStatus.SUCCEEDED
    assert blocker.status is RunStatus.RUNNING
    assert all(run.status is RunStatus.QUEUED for run in waiting)
