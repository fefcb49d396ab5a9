"""Admission, as one pass of the scheduler decides it: pure, no store, no processes.

What each run gets (slots, groups, CPUs, pinned cores, memory, GPUs, dependencies) is read
from `admit`'s decision: which runs start, where, and which can never start and why.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from nbrunner.models import RunRecord
from nbrunner.resources import Capacity, Device
from nbrunner.scheduler import admit
from nbrunner.states import RunStatus

GB = 10**9
ROOMY = Capacity(cpus=64, memory_total=1000 * GB, memory_available=1000 * GB)
ONE_GPU = replace(ROOMY, devices=(Device(0, 24 * GB),))
SLOTS = {"max_concurrent": 10}


def run(run_id: int, **fields: Any) -> RunRecord:
    record = RunRecord(
        id=run_id, module="m", params={}, status=RunStatus.QUEUED, submitted_at=0.0, log_path=""
    )
    return replace(record, **fields)


def held(run_id: int, **fields: Any) -> RunRecord:
    return run(run_id, status=RunStatus.RUNNING, **fields)


def started(*args: Any, **kwargs: Any) -> dict[int, Any]:
    return {r.id: where for r, where in admit(*args, **kwargs).start}


# -- dependencies ---------------------------------------------------------------------------
def test_a_run_starts_once_everything_it_waits_for_succeeded() -> None:
    after = run(3, after=[1, 2])
    done = {1: RunStatus.SUCCEEDED, 2: RunStatus.SUCCEEDED}
    assert list(started([after], [], SLOTS, ROOMY, done)) == [3]


def test_a_run_whose_dependency_is_still_going_or_unknown_waits() -> None:
    for statuses in ({1: RunStatus.SUCCEEDED, 2: RunStatus.RUNNING}, {1: RunStatus.SUCCEEDED}):
        decision = admit([run(3, after=[1, 2]), run(4)], [], SLOTS, ROOMY, statuses)
        assert [r.id for r, _ in decision.start] == [4]  # the free run behind it goes
        assert decision.doomed == []


def test_a_run_whose_dependency_ended_otherwise_can_never_start() -> None:
    waiting = run(3, after=[1, 2])
    statuses = {1: RunStatus.SUCCEEDED, 2: RunStatus.FAILED}
    decision = admit([waiting], [], SLOTS, ROOMY, statuses)
    assert decision.start == []
    assert decision.doomed == [(waiting, "run 2, which it depends on, ended failed")]


def test_without_dependencies_given_a_plain_run_starts() -> None:
    assert list(started([run(1)], [], SLOTS, ROOMY)) == [1]


# -- groups and slots -----------------------------------------------------------------------
def test_a_group_limit_counts_the_runs_started_in_the_same_pass() -> None:
    queued = [run(i, group="g") for i in range(1, 5)]
    assert list(started(queued, [], {**SLOTS, "group.g": 2}, ROOMY)) == [1, 2]
    holding = [held(9, group="g")]
    assert list(started(queued, holding, {**SLOTS, "group.g": 2}, ROOMY)) == [1]


def test_a_blocked_run_does_not_block_a_different_one_behind_it() -> None:
    wants_gpu = run(1, resources={"gpus": 1})
    waits = run(2, after=[7])
    plain = run(3)
    assert list(started([wants_gpu, waits, plain], [], SLOTS, ROOMY, {})) == [3]


# -- resources ------------------------------------------------------------------------------
def test_the_cpus_and_gpus_of_running_runs_are_taken() -> None:
    cpus = held(9, resources={"cpus": 60})
    assert started([run(1, resources={"cpus": 8})], [cpus], SLOTS, ROOMY) == {}
    gpu = held(9, resources={"gpus": 1}, gpus=["0"])
    assert started([run(1, resources={"gpus": 1})], [gpu], SLOTS, ONE_GPU) == {}
    assert list(started([run(1)], [gpu], SLOTS, ONE_GPU)) == [1]


def test_pinned_cores_of_running_runs_are_not_given_again() -> None:
    four = Capacity(cpus=4, memory_total=10 * GB, memory_available=10 * GB)
    pinned = {"cpus": 2, "pin": True}
    holding = held(9, resources=pinned, cores=[0, 1])
    (where,) = started([run(1, resources=pinned)], [holding], SLOTS, four).values()
    assert where.cores == (2, 3)


def test_one_gpu_goes_to_one_run_of_a_pass() -> None:
    queued = [run(1, resources={"gpus": 1}), run(2, resources={"gpus": 1})]
    assert {i: w.gpus for i, w in started(queued, [], SLOTS, ONE_GPU).items()} == {1: (0,)}


def test_memory_admitted_in_a_pass_counts_before_the_os_sees_it_used() -> None:
    machine = Capacity(cpus=64, memory_total=100 * GB, memory_available=10 * GB)
    queued = [run(i, resources={"memory": 6 * GB}) for i in (1, 2)]
    assert list(started(queued, [], SLOTS, machine)) == [1]
    too_big = run(3, resources={"memory": 11 * GB})
    assert started([too_big], [], SLOTS, machine) == {}
