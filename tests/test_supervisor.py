"""Supervision: true exit codes, cancel and timeout of whole trees, runs apart from clients."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers.procs import alive, python, wait_until
from helpers.recorders import recorder_path  # noqa: F401 (a fixture)

from nbrunner import Runner, contact
from nbrunner.backends import ChildEnded
from nbrunner.errors import InvalidTransition
from nbrunner.service import Service
from nbrunner.states import RunStatus
from nbrunner.store import Store

# Every test here takes every way runs are held: the keeper, forked, an interpreter each.
pytestmark = pytest.mark.usefixtures("recorder_path")

# A child with three grandchildren: one plain, one that ignores SIGTERM, one that left the
# process group with its own session. The child itself ignores SIGTERM too.
TREE = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
sleeper = [sys.executable, "-c", "import time; time.sleep(300)"]
stubborn = [sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"]
kids = [subprocess.Popen(sleeper), subprocess.Popen(stubborn),
        subprocess.Popen(sleeper, start_new_session=True)]
print("pids", *[k.pid for k in kids], flush=True)
time.sleep(300)
"""


def _pids_from_log(run) -> list[int]:
    line = wait_until(
        lambda: next((ln for ln in run.logs().splitlines() if ln.startswith("pids")), None),
        what="pids line",
    )
    return [int(p) for p in line.split()[1:]]


def test_cancel_stops_the_whole_tree_past_its_grace(runner: Runner) -> None:
    """Members that ignore SIGTERM go too: the grace ends in SIGKILL. How soon is timed in
    bench/cancel.py, not here: a loaded machine may take longer than any bound we'd pick."""
    runner.register("tree", command=python(TREE))
    runner.config("grace_period", 1.5)
    run = runner.submit("tree")
    grandchildren = _pids_from_log(run)
    tree = [run.pid, *grandchildren]
    assert all(alive(pid) for pid in tree)
    run.cancel()
    wait_until(
        lambda: not any(alive(pid) for pid in tree), timeout=60, what="the whole tree to be gone"
    )
    record = run.wait(timeout=60)
    assert record.status is RunStatus.CANCELLED
    assert record.reason == "cancelled by request"


@pytest.mark.posix
def test_a_cooperative_child_is_cancelled_without_waiting_for_the_grace(runner: Runner) -> None:
    runner.config("grace_period", 10)
    run = runner.submit("count", {"n": 1000, "delay": 0.05})
    wait_until(lambda: run.status is RunStatus.RUNNING, what="running")
    started = time.monotonic()
    record = (run.cancel(), run.wait(timeout=15))[1]
    assert record.status is RunStatus.CANCELLED
    assert record.exit_code == -signal.SIGTERM
    assert time.monotonic() - started < 5


def test_cancelling_a_queued_run_removes_it_from_the_queue(runner: Runner) -> None:
    runner.config("paused", True)
    run = runner.submit("count", {"n": 1})
    record = run.cancel()
    assert record.status is RunStatus.CANCELLED and record.reason == "cancelled while queued"
    assert record.started_at is None and not Path(record.log_path).exists()
    with pytest.raises(InvalidTransition, match="has already ended \\(cancelled\\)"):
        run.cancel()


@pytest.mark.posix
def test_true_exit_codes_and_reasons_are_recorded(runner: Runner) -> None:
    runner.register("exit3", command=python("import sys; print('bye'); sys.exit(3)"))
    runner.register("selfkill", command=python("import os, signal; os.kill(os.getpid(), 9)"))
    ok = runner.submit("count", {"n": 1, "delay": 0})
    three = runner.submit("exit3")
    killed = runner.submit("selfkill")
    assert ok.wait(30).status is RunStatus.SUCCEEDED and ok.exit_code == 0
    three_record = three.wait(30)
    assert (three_record.status, three_record.exit_code) == (RunStatus.FAILED, 3)
    assert three_record.reason == "exited with code 3: bye"  # its last words
    assert killed.wait(30).reason == "killed by signal SIGKILL"


def test_timeout_stops_the_run_and_says_so(runner: Runner) -> None:
    run = runner.submit("count", {"n": 1000, "delay": 0.05}, timeout=0.5)
    record = run.wait(timeout=20)
    assert record.status is RunStatus.TIMED_OUT
    assert record.reason == "timed out after 0.5 s"
    assert not alive(record.pid)


def test_paused_time_does_not_count_toward_the_timeout(runner: Runner) -> None:
    run = runner.submit("count", {"n": 10, "delay": 0.1}, timeout=3)
    wait_until(lambda: run.status is RunStatus.RUNNING, what="running")
    run.pause()
    wait_until(lambda: run.status is RunStatus.PAUSED, what="paused")
    with pytest.raises(TimeoutError):
        run.wait(timeout=4)  # paused for longer than its whole timeout
    run.resume()
    assert run.wait(timeout=30).status is RunStatus.SUCCEEDED


def test_a_short_busy_run_has_its_true_cpu_time_and_peak_memory(runner: Runner) -> None:
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1: pass"
    runner.register("busy", command=python(busy))
    record = runner.submit("busy").wait(timeout=60)
    assert record.status is RunStatus.SUCCEEDED
    assert record.cpu_time >= 0.5 and record.peak_rss > 1_000_000


def test_a_command_that_cannot_start_fails_with_the_reason_in_record_and_log(
    runner: Runner,
) -> None:
    runner.register("missing", command=["/nonexistent/program", "--flag"])
    record = runner.submit("missing").wait(timeout=20)
    assert record.status is RunStatus.FAILED
    assert record.reason.startswith("could not start /nonexistent/program")
    assert "could not start /nonexistent/program" in Path(record.log_path).read_text()


def test_restart_makes_a_new_run_pointing_at_the_old(runner: Runner) -> None:
    first = runner.submit("count", {"n": 2, "delay": 0, "label": "again"})
    first.wait(timeout=30)
    second = first.restart()
    record = second.wait(timeout=30)
    assert second.id != first.id and record.restart_of == first.id
    assert record.params == first.params and record.status is RunStatus.SUCCEEDED
    assert second.logs() == "again 1/2\nagain 2/2\n"


def test_the_child_sees_unbuffered_utf8_python_and_the_module_env(runner: Runner) -> None:
    show = "import os; e = os.environ; print(e['PYTHONUNBUFFERED'], e['PYTHONIOENCODING'], e['MY_SETTING'])"
    runner.register("envshow", command=python(show), env={"MY_SETTING": "42"})
    record = runner.submit("envshow").wait(timeout=30)
    assert Path(record.log_path).read_text() == "1 utf-8 42\n"


@pytest.mark.posix
def test_runs_and_their_service_are_not_descendants_of_the_submitter(runner: Runner) -> None:
    run = runner.submit("count", {"n": 100, "delay": 0.05})
    wait_until(lambda: run.status is RunStatus.RUNNING, what="running")
    service_pid = int(wait_until(lambda: contact.info(runner.home))["pid"])
    mine = {p.pid for p in psutil.Process().children(recursive=True)}
    assert service_pid not in mine and run.pid not in mine
    assert os.getsid(run.pid) != os.getsid(0) and os.getsid(service_pid) != os.getsid(0)
    run.cancel()
    run.wait(timeout=15)


def test_a_module_can_trade_live_logs_for_buffered_throughput(runner: Runner) -> None:
    show = "import sys; print(int(sys.stdout.write_through))"
    runner.register("live", command=python(show))
    runner.register("buffered", command=python(show), unbuffered=False)
    live, buffered = runner.submit("live").wait(30), runner.submit("buffered").wait(30)
    assert Path(live.log_path).read_text() == "1\n"
    assert Path(buffered.log_path).read_text() == "0\n"


def test_a_draining_queue_runs_one_at_a_time_in_order(runner: Runner) -> None:
    runner.config("max_concurrent", 1)
    runs = [runner.submit("count", {"n": 1, "delay": 0, "label": f"q{i}"}) for i in range(6)]
    records = [run.wait(timeout=60) for run in runs]
    assert [r.status for r in records] == [RunStatus.SUCCEEDED] * 6
    assert [Path(r.log_path).read_text() for r in records] == [f"q{i} 1/1\n" for i in range(6)]
    starts = [r.started_at for r in records]
    assert starts == sorted(starts)
    ends, later_starts = [r.ended_at for r in records[:-1]], starts[1:]
    assert all(end <= start for end, start in zip(ends, later_starts, strict=True))


class StubbornRayJob:
    """A Ray job that never ends and that Ray will not stop."""

    ref = "raysubmit-stubborn"
    started = True

    def wait(self, timeout: float) -> None:
        time.sleep(min(timeout, 0.05))

    def stop(self, grace: float) -> int:
        raise ChildEnded(RunStatus.LOST, f"Ray did not stop job {self.ref} within 5 s")


class QuickRayJob(StubbornRayJob):
    """A Ray job that has succeeded before the service saw it running."""

    def wait(self, timeout: float) -> int:
        return 0


def watched_ray_run(home: Path, monkeypatch: pytest.MonkeyPatch, job: Any) -> tuple[Any, Any]:
    """A Ray run just claimed (starting) and its watch, with `job` standing in for Ray."""
    from nbrunner.backends import ray

    monkeypatch.setattr(ray, "start_ray_job", lambda record, log, env: job)
    with Runner(home) as client:
        client.config("paused", True)
        run = client.submit("count", {"n": 1})
    record = Store(home).transition(run.id, RunStatus.STARTING, backend="ray")
    owner = Service(home)
    owner._watch_ray(record, owner.store.config())
    return owner, owner.watches[run.id]


def advance_until_ended(owner: Any, watch: Any) -> Any:
    deadline = time.monotonic() + 20
    while watch.record.id in owner.watches:
        assert time.monotonic() < deadline, "the run did not end"
        owner._advance_ray(watch)
        time.sleep(0.05)
    return owner.store.get(watch.record.id)


def test_a_ray_job_that_ends_before_it_was_seen_running_is_recorded(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, watch = watched_ray_run(home, monkeypatch, QuickRayJob())
    wait_until(lambda: watch.outcome is not None, what="the job's end")
    ended = advance_until_ended(owner, watch)
    assert (ended.status, ended.exit_code) == (RunStatus.SUCCEEDED, 0)


def test_two_passes_before_the_change_feed_record_a_ray_jobs_start_once(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, watch = watched_ray_run(home, monkeypatch, StubbornRayJob())
    wait_until(lambda: watch.running, what="the job seen running")
    owner._advance_ray(watch)
    owner._advance_ray(watch)  # no change feed read between: the start is not written again
    assert owner.store.get(watch.record.id).status is RunStatus.RUNNING
    owner.store.update(watch.record.id, control="cancel")
    watch.record = owner.store.get(watch.record.id)
    assert advance_until_ended(owner, watch).status is RunStatus.LOST


def test_a_ray_job_that_would_not_stop_keeps_its_lost_status_and_reason(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, watch = watched_ray_run(home, monkeypatch, StubbornRayJob())
    wait_until(lambda: watch.job is not None, what="the job to be submitted")
    owner.store.update(watch.record.id, control="cancel")
    watch.record = owner.store.get(watch.record.id)
    ended = advance_until_ended(owner, watch)
    assert (ended.status, ended.reason) == (
        RunStatus.LOST,
        "Ray did not stop job raysubmit-stubborn within 5 s",
    )


def test_every_stop_escalates_the_same_way_term_then_kill_after_the_grace() -> None:
    from nbrunner.backends.tree import KILL_AGAIN_S, escalate

    sent: list[bool] = []
    kill_at = escalate(sent.append, None, 5.0, now=100.0)
    assert (sent, kill_at) == ([True], 105.0)  # asked to end, killed once the grace is over
    assert escalate(sent.append, kill_at, 5.0, now=104.9) == 105.0 and sent == [True]
    kill_at = escalate(sent.append, kill_at, 5.0, now=105.0)
    assert (sent, kill_at) == ([True, False], 105.0 + KILL_AGAIN_S)
    escalate(sent.append, kill_at, 5.0, now=kill_at)  # and again, for what it started since
    assert sent == [True, False, False]
