"""One keeper per home holding every run (the default on POSIX): what sharing one process
changes. The engine tests of test_service.py run on this path too."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from helpers.procs import alive, python, wait_for_file, wait_until

from nbrunner import Runner, RunStatus, contact, platform
from nbrunner.holding import Holder
from nbrunner.launching import hand_to_keeper, wake_keepers
from nbrunner.recorder import (
    KEEPER_INFO,
    KEEPER_LOCK,
    RECORDER_ENV,
    RecorderSpec,
    RunFiles,
    ServiceLink,
)
from nbrunner.service import SAFETY_PASS_S, Service

pytestmark = pytest.mark.posix

WAITS = (
    "import os, sys, time\nprint(os.getpid(), flush=True)\n"
    "while not os.path.exists(sys.argv[1]): time.sleep(0.02)"
)
ABANDONS = (
    "import subprocess, sys\n"
    "kid = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'],"
    " start_new_session=True)\nprint(kid.pid, flush=True)"
)


@pytest.fixture
def keeper_runner(runner: Runner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Runner:
    monkeypatch.setenv(RECORDER_ENV, "keeper")  # before the first submit starts the service
    runner.register("waits", command=[*python(WAITS), str(tmp_path / "gate")])
    return runner


def pid_in_log(run) -> int:  # type: ignore[no-untyped-def]
    return int(wait_until(lambda: run.logs().split(), what=f"run {run.id}'s pid")[0])


def test_one_process_holds_every_run_and_a_runs_leftovers_go_alone(
    keeper_runner: Runner, tmp_path: Path
) -> None:
    runner = keeper_runner
    runner.register("abandons", command=python(ABANDONS))
    waiting = [runner.submit("waits") for _ in range(2)]
    children = [pid_in_log(run) for run in waiting]
    (keeper,) = {psutil.Process(pid).ppid() for pid in children}  # one holder for both
    abandoning = runner.submit("abandons")
    assert abandoning.wait(timeout=60).status is RunStatus.SUCCEEDED
    orphan = pid_in_log(abandoning)  # in a session of its own: found by its NBRUNNER_RUN_ID
    wait_until(lambda: not alive(orphan), what="the ended run's orphan to be stopped")
    assert all(alive(pid) for pid in children)  # the other runs' processes were not touched
    later = runner.submit("waits")
    assert psutil.Process(pid_in_log(later)).ppid() == keeper
    (tmp_path / "gate").touch()
    ended = [run.wait(timeout=60) for run in [*waiting, later]]
    assert [r.status for r in ended] == [RunStatus.SUCCEEDED] * 3


def test_a_kept_leftover_is_adopted_by_the_keeper_and_reaped_once_it_ends(
    keeper_runner: Runner, tmp_path: Path
) -> None:
    """The keeper is the subreaper of its runs' orphans: one a run may keep comes to it,
    and is reaped once it ends (a zombie would hold its pid for as long as the keeper
    lives, days)."""
    runner, free = keeper_runner, tmp_path / "free"
    leaves = f"import subprocess\nkid = subprocess.Popen({python(wait_for_file(free))!r})\n"
    runner.register("leaves", command=python(leaves + "print(kid.pid, flush=True)"),
                    keep_leftovers=True)  # fmt: skip
    runner.register("quick", command=python("pass"))
    holding = runner.submit("waits")  # the keeper stays while this run waits
    keeper = psutil.Process(pid_in_log(holding)).ppid()
    kept = runner.submit("leaves")
    assert kept.wait(timeout=60).status is RunStatus.SUCCEEDED
    orphan = psutil.Process(pid_in_log(kept))
    assert orphan.ppid() == keeper
    free.touch()
    wait_until(lambda: not alive(orphan.pid), what="the orphan to end")  # a zombie, or reaped
    assert runner.submit("quick").wait(timeout=60).status is RunStatus.SUCCEEDED  # a step
    wait_until(lambda: not orphan.is_running(), what="the keeper to reap the orphan")
    (tmp_path / "gate").touch()
    assert holding.wait(timeout=60).status is RunStatus.SUCCEEDED


def test_a_killed_keeper_loses_its_runs_and_the_next_run_gets_a_new_one(
    keeper_runner: Runner, tmp_path: Path
) -> None:
    runner = keeper_runner
    runs = [runner.submit("waits") for _ in range(2)]
    children = [pid_in_log(run) for run in runs]
    keeper = psutil.Process(children[0]).ppid()
    serving = (contact.info(runner.home) or {})["pid"]
    os.kill(keeper, signal.SIGKILL)
    lost = [run.wait(timeout=60) for run in runs]
    assert [r.status for r in lost] == [RunStatus.LOST] * 2
    assert all("ended without recording how the run ended" in r.reason for r in lost)
    wait_until(lambda: not any(alive(pid) for pid in children), what="the lost runs stopped")
    assert (contact.info(runner.home) or {})["pid"] == serving  # the service lives on
    again = runner.submit("waits")
    assert psutil.Process(pid_in_log(again)).ppid() not in (keeper, serving)
    (tmp_path / "gate").touch()
    assert again.wait(timeout=60).status is RunStatus.SUCCEEDED


@contextmanager
def keeper_alone(home: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A keeper started by hand, with the home's service lock held here: telling of each
    end, it starts no service (one would sweep away the journals of runs its store does
    not have)."""
    serving = platform.take_lock(home / contact.LOCK_NAME)
    keeper = subprocess.Popen([sys.executable, "-m", "nbrunner.keeper", str(home)])
    try:
        yield keeper
    finally:
        if keeper.poll() is None:
            keeper.kill()
            keeper.wait()
        if serving is not None:
            os.close(serving)


def test_a_spec_it_cannot_read_ends_that_run_and_a_newer_ones_extra_fields_are_ignored(
    home: Path, tmp_path: Path
) -> None:
    """A spec lacking what this keeper needs (or no JSON at all): the run it names ends
    with the reason in its journal, and the keeper goes on. A spec from a newer nbrunner
    (a keeper lives across an upgrade) is run, what this version does not know left out."""
    runs = home / "runs"
    runs.mkdir(mode=0o700)
    (runs / "7.spec").write_text(json.dumps({"home": str(home), "run_id": 7}))
    log = tmp_path / "8.log"
    newer = RecorderSpec(
        home=str(home), run_id=8, argv=python("print('ran')"), cwd=None, env=dict(os.environ),
        log_path=str(log), max_log_size=0, keep_leftovers=False, cores=[],
    ).as_json() | {"from_a_newer_nbrunner": True}  # fmt: skip
    (runs / "8.spec").write_text(json.dumps(newer))
    with keeper_alone(home) as keeper:
        ended = wait_until(
            lambda: RunFiles.of(home, 7).recorded().get("exit"), timeout=60, what="7's exit"
        )
        assert ended["exit_code"] is None
        assert "the keeper could not read the run's spec" in ended["error"]
        assert "argv" in ended["error"]  # what it lacked
        ran = wait_until(
            lambda: RunFiles.of(home, 8).recorded().get("exit"), timeout=60, what="8's exit"
        )
        assert ran["exit_code"] == 0 and log.read_text() == "ran\n"
        assert keeper.wait(timeout=60) == 0  # it went on, and left once idle


def test_the_keeper_holds_its_runs_in_one_thread_and_a_run_it_cannot_hold_ends_alone(
    home: Path, tmp_path: Path
) -> None:
    """Every run is held by the keeper's one thread (a thread per run cost 53 GIL hand-overs
    per run); a step of one run that raises (here its log's cap is no number) stops that
    run, writes why in its journal, and leaves the keeper holding the others; a run let
    go leaves no descriptor behind (a keeper lives for weeks)."""
    runs = home / "runs"
    runs.mkdir(mode=0o700)

    def hand_over(run_id: int, argv: list[str], **changes: object) -> RunFiles:
        spec = RecorderSpec(
            home=str(home), run_id=run_id, argv=argv, cwd=None, env=dict(os.environ),
            log_path=str(tmp_path / f"{run_id}.log"), max_log_size=0, keep_leftovers=False,
            cores=[],
        ).as_json() | changes  # fmt: skip
        (runs / f"{run_id}.spec").write_text(json.dumps(spec))
        return RunFiles.of(home, run_id)

    def let_go(held: list[RunFiles]) -> list[int]:
        ended = [
            wait_until(lambda f=f: f.recorded().get("exit"), timeout=60, what="an exit")
            for f in held
        ]  # type: ignore[misc]
        wait_until(lambda: not any(f.recorder_alive() for f in held), what="the runs let go")
        return [e["exit_code"] for e in ended]

    gate, last_gate = tmp_path / "gate", tmp_path / "last"
    held = [hand_over(run_id, [*python(WAITS), str(gate)]) for run_id in (1, 2, 3)]
    last = hand_over(5, [*python(WAITS), str(last_gate)])  # keeps the keeper from leaving
    broken = hand_over(4, python("print('breaks the log')"), max_log_size="not a size")
    with keeper_alone(home) as keeper:
        failed = wait_until(lambda: broken.recorded().get("exit"), timeout=60, what="4's exit")
        assert failed["exit_code"] is None
        assert "could not hold the run" in failed["error"] and "TypeError" in failed["error"]
        wait_until(lambda: all("child" in f.recorded() for f in [*held, last]), what="4 starts")
        assert psutil.Process(keeper.pid).num_threads() == 1
        assert all(f.recorder_alive() for f in held)
        gate.touch()
        assert let_go(held) == [0, 0, 0]
        descriptors = psutil.Process(keeper.pid).num_fds()
        more = [hand_over(run_id, python("print('ran')")) for run_id in (6, 7, 8)]
        assert let_go(more) == [0, 0, 0]
        assert psutil.Process(keeper.pid).num_fds() == descriptors
        last_gate.touch()
        assert let_go([last]) == [0]
        assert keeper.wait(timeout=60) == 0


def test_the_service_sleeps_on_one_pidfd_for_the_keeper_and_lets_ended_runs_go(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service (here in the test's process) whose runs a keeper holds: no pass a second
    while they run, one pidfd for the keeper however many runs it holds, and nothing kept
    of a run once its end is written, though the keeper lives on (for weeks, on a busy
    home: one handle and pidfd per run ever held would run out of descriptors)."""
    monkeypatch.delenv(RECORDER_ENV, raising=False)  # the default way
    owner = Service(home)
    assert owner._take_over()
    owner._retention.apply(owner.store)  # applied at the first pass, next in an hour
    client = Runner(home, start=False)
    try:
        client.register("waits", command=[*python(WAITS), str(tmp_path / "gate")])
        runs = [client.submit("waits") for _ in range(3)]

        def holding() -> bool:
            owner._tick()
            return all(run.status is RunStatus.RUNNING for run in runs) and bool(
                owner._exit_signals
            )

        wait_until(holding, what="the keeper to hold the runs")
        keeper = psutil.Process(pid_in_log(runs[0])).ppid()
        assert list(owner._exit_signals) == [keeper]  # one pidfd for the three runs
        assert not owner._paced() and owner._sleep_s() > SAFETY_PASS_S - 1
        (tmp_path / "gate").touch()

        def ended() -> bool:
            owner._tick()
            return all(run.status is RunStatus.SUCCEEDED for run in runs)

        wait_until(ended, what="the runs to end")
        owner._tick()
        assert owner._recorders == {} and owner._exit_signals == {}
        assert alive(keeper)  # it lives on (until its idle time), but is nothing of ours
    finally:
        client.close()
        owner._close()


def test_a_step_tells_the_service_once_for_all_the_runs_it_moved(
    home: Path, tmp_path: Path
) -> None:
    """Each wake costs both sides a system call and the service a pass: the runs a step
    starts or ends are told in one wake (an end among them: the one that also starts a
    service), and each before the loop sleeps again."""
    told: list[tuple[str, str]] = []
    link = ServiceLink(lambda h: told.append(("wake", h)), lambda h: told.append(("notify", h)))
    holder = Holder(link, own_process=False)  # inside this test's process
    gate = tmp_path / "gate"
    specs = [
        RecorderSpec(
            home=str(home),
            run_id=run_id,
            argv=[*python(WAITS), str(gate)],
            cwd=None,
            env=dict(os.environ),
            log_path=str(tmp_path / f"{run_id}.log"),
            max_log_size=0,
            keep_leftovers=False,
            cores=[],
        )
        for run_id in (1, 2, 3)
    ]
    for spec in specs:
        assert holder.hold(spec)
    assert told == []  # three starts, not yet told: the loop has not stepped
    holder.step(0)
    assert told == [("wake", str(home))]  # once for the three
    gate.touch()
    while holder.runs:
        holder.step(None)
    assert told[-1] == ("notify", str(home)) and len(told) <= 4  # at most once per step
    assert all(RunFiles.of(home, s.run_id).recorded()["exit"]["exit_code"] == 0 for s in specs)


def test_the_runs_a_pass_hands_over_wake_the_keeper_once(home: Path, tmp_path: Path) -> None:
    """A claim hands several runs over: their specs are written one by one, and the keeper
    is woken once, after the last (its pass takes every spec it finds)."""
    runs = home / "runs"
    runs.mkdir(mode=0o700, parents=True)
    lock = platform.take_lock(runs / KEEPER_LOCK)  # this test holds the keeper's place
    keeper = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    keeper.bind(("127.0.0.1", 0))
    keeper.settimeout(0.5)
    try:
        contact.announce(runs / KEEPER_INFO, keeper)
        for run_id in (1, 2, 3):
            spec = RecorderSpec(
                home=str(home), run_id=run_id, argv=["true"], cwd=None, env={},
                log_path=str(tmp_path / f"{run_id}.log"), max_log_size=0,
                keep_leftovers=False, cores=[],
            )  # fmt: skip
            hand_to_keeper(spec)
        assert sorted(p.name for p in runs.glob("*.spec")) == ["1.spec", "2.spec", "3.spec"]
        wake_keepers()
        assert keeper.recv(64) == b"w"
        with pytest.raises(TimeoutError):
            keeper.recv(64)  # one wake for the three
    finally:
        keeper.close()
        os.close(lock)
