"""The service sleeps until something happens: an event, a deadline, a sample someone needs.

Each test plants the situation in a service object of the test process (no other service
runs on its home) and asks when it would pass next, or starts real runs and checks that
figures come when a reader asks for them.
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.procs import python, wait_until

from nbrunner import contact, platform, resources
from nbrunner.models import RunRecord
from nbrunner.service import SAFETY_PASS_S, Service
from nbrunner.states import RunStatus
from nbrunner.store import Store
from nbrunner.supervisor import LIMITED_SAMPLE_S, RECORD_EVERY_S, LocalWatch

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def running(run_id: int, **resources: object) -> RunRecord:
    return RunRecord(
        id=run_id, module="m", params={}, status=RunStatus.RUNNING, submitted_at=0.0,
        log_path="", resources=dict(resources),
    )  # fmt: skip


def held_by(owner: Service, record: RunRecord, recorder: subprocess.Popen[bytes]) -> LocalWatch:
    """A running run whose recorder (here: a sleeping process) this service started."""
    watch = LocalWatch(record, str(owner.home), recorder)
    watch.child = (recorder.pid, platform.start_marker(recorder.pid))
    owner.active[record.id] = record
    owner.watches[record.id] = watch
    owner._recorders[record.id] = recorder
    fd = platform.exit_signal(recorder.pid)
    assert fd is not None, "Linux has pidfds"
    owner._exit_signals[recorder.pid] = fd
    return watch


@pytest.mark.posix  # pidfds: Linux (the Windows service polls handles)
def test_with_nothing_due_the_service_sleeps_until_the_safety_pass(home: Path) -> None:
    owner = Service(home)
    owner._retention.apply(owner.store)  # applied at the first pass, next in an hour
    recorder = subprocess.Popen(SLEEPER)
    try:
        watch = held_by(owner, running(1), recorder)
        assert owner._sleep_s() > SAFETY_PASS_S - 1  # no one reads its figures: no samples
        contact.watching(home)
        assert owner._sleep_s() <= RECORD_EVERY_S  # now someone does
        (home / contact.WATCH_NAME).unlink()
        watch.begin_stop(RunStatus.CANCELLED, "cancelled by request", grace=0.5)
        assert watch.kill_at is not None
        assert owner._sleep_s() <= 0.5  # the kill after the grace period is due first
    finally:
        recorder.kill()
        recorder.wait()


@pytest.mark.posix  # pidfds: Linux (the Windows service polls handles)
def test_a_run_on_a_gpu_share_is_sampled_with_no_reader(home: Path) -> None:
    owner = Service(home)
    owner._retention.apply(owner.store)
    recorder = subprocess.Popen(SLEEPER)
    try:
        watch = held_by(owner, running(1, gpu_memory=2**30), recorder)
        assert watch.sample_every(watched=False) == LIMITED_SAMPLE_S
        assert owner._sleep_s() <= LIMITED_SAMPLE_S
    finally:
        recorder.kill()
        recorder.wait()


@pytest.mark.posix  # pidfds: Linux (the Windows service polls handles)
def test_a_recorder_that_ends_wakes_the_sleeping_service(home: Path) -> None:
    owner = Service(home)
    assert owner._take_over()
    recorder = subprocess.Popen(SLEEPER)
    try:
        held_by(owner, running(1), recorder)
        recorder.send_signal(signal.SIGKILL)  # dies without a word to the service
        assert owner._wait(SAFETY_PASS_S)  # woken by its end, not by the timeout
        owner._reap()
        assert owner.watches[1].recorder_gone and not owner._exit_signals
    finally:
        recorder.kill()
        recorder.wait()
        owner._close()


def test_a_reader_of_figures_gets_them_sampled(home: Path) -> None:
    gate = home.parent / "gate"
    code = f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.05)"
    from nbrunner import Runner

    with Runner(home) as runner:
        runner.register("gated", command=python(code))
        run = runner.submit("gated")
    store = Store(home)  # read without a Runner: nothing here says it reads figures
    wait_until(lambda: store.get(run.id).status is RunStatus.RUNNING, what="running")
    contact.watching(home)
    wait_until(lambda: store.get(run.id).rss, what="its memory sampled for the reader")
    gate.touch()
    wait_until(lambda: store.get(run.id).is_done, what="the run's end")


def test_the_runs_under_way_are_kept_apart_from_the_queue(home: Path) -> None:
    """A pass asks whether anything is queued, starting or holding a slot: answered without
    a look through the queue, which may be thousands deep, from views kept as runs move."""
    owner = Service(home)
    queued = [dataclasses.replace(running(run_id), status=RunStatus.QUEUED) for run_id in (1, 2)]
    for record in queued:
        owner.active[record.id] = record
    assert owner._queued() and not owner.active.under_way
    owner.active[1] = dataclasses.replace(queued[0], status=RunStatus.STARTING)
    assert set(owner.active) - set(owner.active.under_way) == {2}
    assert list(owner.active.under_way) == [1]
    owner.active.pop(2)
    assert not owner._queued() and set(owner.active) == {1}
    owner.active.pop(1)
    assert not owner.active and not owner.active.under_way and not owner._queued()


def test_a_queue_behind_full_slots_is_claimed_again_only_once_the_store_changes(
    home: Path,
) -> None:
    """Only a write (a run's end, a setting) can free a slot: with every slot taken, a
    pass claims nothing and reads no machine facts, and the service sleeps on, however
    deep the queue, until one comes."""
    owner = Service(home)
    owner.store.set_config("max_concurrent", 1)
    rows = [{"module": "m", "params": {}, "argv": ["true"], "env": {}} for _ in range(3)]
    holder, *_ = owner.store.insert_runs(rows)
    owner.store.transition(holder, RunStatus.STARTING)
    owner.store.transition(holder, RunStatus.RUNNING, started_at=1.0)
    owner._refresh_all()
    owner._retention.apply(owner.store)
    recorder = subprocess.Popen(SLEEPER)
    try:
        held_by(owner, owner.active[holder], recorder)
        owner._claim()
        assert owner._no_room is not None and owner._no_room[0] == owner.version
        assert not owner._claim_may_start()
        assert owner._sleep_s() > SAFETY_PASS_S - 1  # no tick for the queue
        owner._no_room = (owner.version, owner._no_room[1] - SAFETY_PASS_S)
        assert owner._claim_may_start()  # believed for a safety pass at most: a hand's write
        owner._claim()
        assert owner._no_room is not None and not owner._claim_may_start()  # still no room
        owner.store.set_config("max_concurrent", 2)  # a client's write (and its wake)
        owner._read_changes()
        assert owner._claim_may_start()  # started end to end: test_resources' drain test
    finally:
        recorder.kill()
        recorder.wait()


def test_a_start_with_every_slot_taken_is_followed_by_no_claim_write(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's start moves the store's version and frees no slot: the claim of the pass it
    wakes sees every slot taken in what the service already knows, and neither reads the
    machine's facts nor writes (behind full slots, every start cost a claim transaction).
    A setting that frees a slot is read by the next claim."""
    owner = Service(home)
    owner.store.set_config("max_concurrent", 1)
    rows = [{"module": "m", "params": {}, "argv": ["true"], "env": {}} for _ in range(2)]
    holder, waiting = owner.store.insert_runs(rows)
    owner.store.transition(holder, RunStatus.STARTING)
    owner._refresh_all()
    owner.store.transition(holder, RunStatus.RUNNING, started_at=1.0)  # its start
    owner._read_changes()
    assert owner._claim_may_start()  # the version moved

    def refused(*_: object, **__: object) -> None:
        raise AssertionError("a claim with every slot taken read facts or wrote")

    with monkeypatch.context() as patched:
        patched.setattr(resources, "machine_capacity", refused)
        patched.setattr(owner.store, "write", refused)
        owner._claim()
    assert owner._no_room is not None and not owner._claim_may_start()
    launched: list[int] = []
    monkeypatch.setattr(owner, "_launch", lambda record, settings: launched.append(record.id))
    owner.store.set_config("max_concurrent", 2)
    owner._read_changes()
    owner._claim()
    assert launched == [waiting]
    assert owner.store.get(waiting).status is RunStatus.STARTING
