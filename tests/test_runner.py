"""The Python API a notebook uses: submit, wait (sync and async), listings, registration."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import stop_everything
from helpers.procs import wait_until

import nbrunner
from nbrunner import Runner, wakes
from nbrunner.errors import BadInput, InvalidParameter, UnknownModule, UnknownRun
from nbrunner.states import RunStatus

PUBLIC_API = {
    "BadInput",
    "InvalidConfig",
    "InvalidParameter",
    "InvalidTransition",
    "ModuleSpec",
    "ModulesFileError",
    "NbrunnerError",
    "OperationFailed",
    "ParamSpec",
    "ResourceRequestError",
    "Resources",
    "Run",
    "RunRecord",
    "RunStatus",
    "Runner",
    "UnknownModule",
    "UnknownRun",
    "__version__",
    "report",
}


def test_the_public_api_is_exactly_this() -> None:
    assert set(nbrunner.__all__) == PUBLIC_API
    for name in PUBLIC_API:
        assert getattr(nbrunner, name) is not None


def test_the_service_stays_small_it_loads_no_client_libraries() -> None:
    """Every recorder is forked from the service: what it loads, each run's pages share."""
    import subprocess
    import sys

    heavy = ("pandas", "ipywidgets", "asyncio", "jupyter_client", "pynvml", "ray", "numpy")
    code = (
        f"import sys, nbrunner.service, nbrunner.scheduler, nbrunner.resources; "
        f"print([m for m in {heavy} if m in sys.modules])"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"


def test_wait_async_from_a_running_loop_does_not_block_it(runner: Runner) -> None:
    run = runner.submit("count", {"n": 3, "delay": 0.1})

    async def main() -> tuple[RunStatus, int]:
        ticks = 0

        async def heartbeat() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        beat = asyncio.ensure_future(heartbeat())
        record = await run.wait_async(timeout=30)
        beat.cancel()
        return record.status, ticks

    status, ticks = asyncio.run(main())
    assert status is RunStatus.SUCCEEDED and ticks > 5


def test_wait_times_out_with_a_clear_error(runner: Runner) -> None:
    run = runner.submit("count", {"n": 100, "delay": 0.1})
    with pytest.raises(TimeoutError, match=f"run {run.id} still not ended after 0.2 s"):
        run.wait(timeout=0.2)
    # many runs: the time given for them all, not the float left of it for the one late
    with pytest.raises(TimeoutError, match=rf"^run {run.id} still not ended after 0.2 s$"):
        runner.wait([run, run], timeout=0.2)
    run.cancel()


def test_many_waiters_in_threads_all_wake(runner: Runner) -> None:
    run = runner.submit("count", {"n": 2, "delay": 0.1})
    results: list[RunStatus] = []
    threads = [
        threading.Thread(target=lambda: results.append(run.wait(30).status)) for _ in range(5)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [RunStatus.SUCCEEDED] * 5


def test_snapshot_and_subscribe_follow_the_change_feed(runner: Runner) -> None:
    seen: list[tuple[int, str]] = []
    unsubscribe = runner.subscribe(
        lambda changes: seen.extend((r.id, r.status.value) for r in changes)
    )
    run = runner.submit("count", {"n": 5, "delay": 0.1})
    wait_until(lambda: any(r.id == run.id for r in runner.snapshot()), what="in snapshot")
    run.wait(timeout=30)
    wait_until(lambda: (run.id, "succeeded") in seen, what="succeeded event")
    assert all(r.id != run.id for r in runner.snapshot())
    assert (run.id, "running") in seen
    unsubscribe()


def test_history_and_active_are_dataframes(runner: Runner) -> None:
    runs = [runner.submit("count", {"n": 1, "delay": 0, "label": f"h{i}"}) for i in range(3)]
    for run in runs:
        run.wait(timeout=30)
    frame = runner.history(module="count", limit=2)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame["id"]) == [runs[2].id, runs[1].id]
    assert str(frame["submitted_at"].dtype).startswith("datetime64")
    assert runner.count(module="count") == 3
    assert runner.history(text="h1")["id"].tolist() == [runs[1].id]
    assert runner.active().empty


def test_copies_and_submit_many(runner: Runner) -> None:
    runner.config("paused", True)
    first = runner.submit("count", {"n": 1}, copies=3)
    many = runner.submit_many("count", [{"n": 1}, {"n": 2}])
    assert runner.count(status="queued") == 5 and first.id + 3 == many[0].id
    with pytest.raises(InvalidParameter, match="copies must be a whole number ≥ 1, got 0"):
        runner.submit("count", copies=0)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda r: r.submit("nope"), UnknownModule, "unknown module 'nope'"),
        (lambda r: r.submit("count", {"n": "x"}), InvalidParameter, "must be an int"),
        (
            lambda r: r.submit("count", priority="high"),
            InvalidParameter,
            "priority must be a whole",
        ),
        (lambda r: r.submit("count", timeout=0), InvalidParameter, "timeout must be a positive"),
        (lambda r: r.submit("count", after=[999]), UnknownRun, "unknown run id 999"),
        (lambda r: r.submit("count", backend="k8s"), BadInput, "unknown backend 'k8s'"),
        (lambda r: r.submit_many("count", [{"n": 1}, {"n": -1}]), InvalidParameter, "got -1"),
        (lambda r: r.get("x1"), BadInput, "run ids are whole numbers"),
    ],
)
def test_bad_submissions_queue_nothing(runner: Runner, call, error, message) -> None:
    with pytest.raises(error, match=message):
        call(runner)
    assert runner.count() == 0


def test_registered_modules_are_seen_by_every_runner_of_the_home(
    runner: Runner, home: Path
) -> None:
    runner.register(
        "hello", command=["echo", "hi"], params={"who": {"type": "str", "default": "you"}}
    )
    with Runner(home, start=False) as other:
        assert other.modules()["hello"].argv({"who": "me"}) == ["echo", "hi", "--who", "me"]
        record = other.submit("hello").wait(timeout=30)
    assert Path(record.log_path).read_text() == "hi --who you\n"
    assert runner.unregister("hello") and "hello" not in runner.modules()


def test_a_modules_file_edit_is_picked_up(runner: Runner) -> None:
    path = runner.modules_file
    path.write_text(path.read_text() + '\n[modules.extra]\ncommand = ["true"]\n')
    assert "extra" in runner.modules()


def test_the_modules_file_can_come_from_the_environment(
    home: Path, tmp_path: Path, monkeypatch
) -> None:
    custom = tmp_path / "mine.toml"
    custom.write_text('[modules.only]\ncommand = ["true"]\n')
    monkeypatch.setenv("NBRUNNER_MODULES", str(custom))
    with Runner(home, start=False) as r:
        assert list(r.modules()) == ["only"]


def test_run_repr_says_the_state_in_words(runner: Runner) -> None:
    runner.config("paused", True)
    run = runner.submit("count", priority=2)
    assert repr(run) == f"<Run {run.id} count queued, priority 2>"
    run.cancel()
    assert "cancelled" in repr(run)


def test_wait_takes_many_runs_and_a_sweep_waits_for_all(runner: Runner) -> None:
    quick = runner.submit("count", {"n": 1, "delay": 0})
    slower = runner.submit("count", {"n": 3, "delay": 0.05})
    records = runner.wait([slower, quick.id, str(quick.id)], timeout=60)
    assert [r.id for r in records] == [slower.id, quick.id, quick.id]
    assert all(r.status is RunStatus.SUCCEEDED for r in records)
    sweep = runner.sweep("count", grid={"n": [1, 2]}, params={"delay": 0})
    ended = sweep.wait(timeout=60)
    assert [r.id for r in ended] == sweep.ids and all(r.is_done for r in ended)
    held = runner.submit("count", {"n": 1000, "delay": 0.05})
    with pytest.raises(TimeoutError):
        runner.wait([quick, held], timeout=0.5)
    held.cancel()


def test_a_session_only_module_stays_in_its_runner(runner: Runner, home: Path) -> None:
    runner.register("scratch", command=["echo", "scratch"], persist=False)
    assert "scratch" not in runner.store.registered_modules()
    with Runner(home, start=False) as other:
        assert "scratch" not in other.modules()
    record = runner.submit("scratch").wait(timeout=30)
    assert record.status is RunStatus.SUCCEEDED
    assert Path(record.log_path).read_text() == "scratch\n"
    assert runner.unregister("scratch") and "scratch" not in runner.modules()


# -- hearing changes: rung by every commit while something waits, not polled ----------------------
def listeners_of(home: Path) -> list[str]:
    folder = home / wakes.LISTENERS
    return sorted(os.listdir(folder)) if folder.exists() else []


def test_a_subscriber_hears_another_process_commit_without_polling(home: Path) -> None:
    with Runner(home, tick=3600) as runner:  # its own reads: at start, then hourly
        runner.config("paused", True)
        run = runner.submit("count", {"n": 1})
        heard: list[int] = []
        runner.subscribe(lambda changes: heard.extend(r.priority for r in changes))
        wait_until(lambda: listeners_of(home), what="the runner announced as a listener")
        code = (
            f"from nbrunner.store import Store; Store({str(home)!r}).update({run.id}, priority=7)"
        )
        subprocess.run([sys.executable, "-c", code], check=True)
        wait_until(lambda: 7 in heard, timeout=30, what="the other process's commit heard")
        stop_everything(runner)
    assert listeners_of(home) == []  # closed while subscribed: withdrawn


def test_a_wait_is_rung_by_the_services_commits(home: Path) -> None:
    with Runner(home, tick=3600) as runner:
        run = runner.submit("count", {"n": 1, "delay": 0})
        assert run.wait(timeout=60).status is RunStatus.SUCCEEDED


def test_a_runner_listens_only_while_something_waits_on_its_changes(home: Path) -> None:
    with Runner(home, tick=0.05) as runner:
        runner.config("paused", True)
        run = runner.submit("count", {"n": 1})
        # a tick has read the run: it listened only if something waited (a batch is not rung)
        wait_until(runner.snapshot, what="a tick since the submit")
        assert listeners_of(home) == []
        unsubscribe = runner.subscribe(lambda changes: None)
        (entry,) = wait_until(lambda: listeners_of(home), what="a subscriber's listener")
        assert entry.startswith(f"{os.getpid()}-")
        unsubscribe()
        wait_until(lambda: not listeners_of(home), what="the listener withdrawn")
        waiting = threading.Thread(target=run.wait, kwargs={"timeout": 60})
        waiting.start()
        wait_until(lambda: listeners_of(home), what="a wait's listener")
        runner.config("paused", False)
        waiting.join(timeout=90)
        wait_until(lambda: not listeners_of(home), what="the listener withdrawn after the wait")
    assert listeners_of(home) == []


def test_listeners_left_by_dead_processes_are_swept_when_another_announces(home: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    folder = home / wakes.LISTENERS
    folder.mkdir()
    (folder / f"{gone.stdout.strip()}-40000").touch()
    (folder / "notes.txt").touch()  # not a listener: neither rung nor removed
    assert wakes.listener_ports(folder) == (40000,)
    with Runner(home) as runner:
        runner.subscribe(lambda changes: None)
        wait_until(lambda: others_than_ours(home) == ["notes.txt"], what="the dead one swept")


def others_than_ours(home: Path) -> list[str] | None:
    """The listeners folder's entries but this process's one; None until it is there."""
    names = listeners_of(home)
    ours = [n for n in names if n.startswith(f"{os.getpid()}-")]
    return [n for n in names if n not in ours] if ours else None


def test_a_listener_added_within_the_folders_clock_step_is_rung(tmp_path: Path) -> None:
    folder = tmp_path / wakes.LISTENERS
    folder.mkdir()
    (folder / "1-40001").touch()
    step = time.time_ns()  # the coarse clock: both changes in one step leave the same mtime
    os.utime(folder, ns=(step, step))
    assert wakes.listener_ports(folder) == (40001,)
    (folder / "2-40002").touch()
    os.utime(folder, ns=(step, step))
    assert sorted(wakes.listener_ports(folder)) == [40001, 40002]


@pytest.mark.posix
def test_a_forked_child_rings_from_a_socket_of_its_own(tmp_path: Path) -> None:
    """A service that rang forks a recorder, which closes every file it inherited: its
    rings and wakes must not go to whatever file then takes the parent socket's number."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(30)
    port = receiver.getsockname()[1]
    wakes.send(port)
    inherited = wakes._sender.fileno()  # type: ignore[union-attr]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's verdict is its exit status
        status = 1
        try:
            os.close(inherited)  # as a forked recorder does with what it inherited
            taker = os.open(tmp_path / "takes-the-number", os.O_CREAT | os.O_WRONLY, 0o600)
            wakes.send(port)
            os.fstat(taker)  # still open: the send neither wrote to it nor closed it
            status = 0 if os.path.getsize(tmp_path / "takes-the-number") == 0 else 2
        finally:
            os._exit(status)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert [receiver.recv(8), receiver.recv(8)] == [b"w", b"w"]  # the parent's, the child's
    wakes.send(port)  # the parent's socket is still the parent's
    assert receiver.recv(8) == b"w"
    receiver.close()


def test_nonsense_in_the_listeners_folder_never_fails_a_write(home: Path) -> None:
    folder = home / wakes.LISTENERS
    folder.mkdir()
    for name in ("1-99999", "1-0", "x-1", "1-", "-5", "12", "1-2-3"):
        (folder / name).touch()
    (folder / "2-40003").mkdir()  # a folder where a listener's file would be: still rung
    assert wakes.listener_ports(folder) == (40003,)
    with Runner(home, start=False) as runner:
        runner.config("max_concurrent", 3)  # a commit, rung to the one sane port
        assert runner.config("max_concurrent") == 3
