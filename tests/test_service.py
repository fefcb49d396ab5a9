"""The home's service under faults: nothing accepted is lost, the queue never stalls.

Each test tries to break one promise from the outside: kill -9 whoever owns a run at the
worst moment, lock the store past its patience, fill the disk, load the machine.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from helpers.cli import cli
from helpers.disk import fill, tmpfs
from helpers.logs import capped, split_capped
from helpers.procs import alive, python, services_of, wait_until
from helpers.recorders import recorder_path  # noqa: F401 (a fixture)

from nbrunner import Runner, contact, platform, service
from nbrunner.recorder import RunFiles, journal_line
from nbrunner.service import Service
from nbrunner.states import RunStatus
from nbrunner.store import Store
from nbrunner.supervisor import LocalWatch, Outcome

# the engine tests that start runs take every way runs are held (keeper; fork; an interpreter)
every_recorder_path = pytest.mark.usefixtures("recorder_path")

HOLD_THE_LOCK = (
    "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
    "c.execute('BEGIN IMMEDIATE'); print('held', flush=True); "
)


def record_of(home: Path, run_id: int):
    """Read a run without a Runner: nothing in the test process keeps the queue moving."""
    return Store(home).get(run_id)


def service_pid(home: Path) -> int:
    found = wait_until(lambda: contact.info(home), what="a living service")
    return int(found["pid"])


def wait_for_end(home: Path, run_id: int, timeout: float = 60):
    return wait_until(
        lambda: (r := record_of(home, run_id)).is_done and r, timeout, what=f"run {run_id} to end"
    )


def gated_run(home: Path, gate: Path, exit_code: int):
    """A running run that exits with exit_code once the gate file exists."""
    code = (
        f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.02)\n"
        f"raise SystemExit({exit_code})"
    )
    with Runner(home) as runner:
        runner.register("gated", command=python(code))
        run = runner.submit("gated")
        wait_until(lambda: run.status is RunStatus.RUNNING, what="running")
    return run


@pytest.fixture
def held_store_lock(home: Path) -> Iterator[threading.Event]:
    """Another process holding the store's write lock until the test sets the event."""
    Store(home)
    release = threading.Event()
    holder = subprocess.Popen(
        [*python(HOLD_THE_LOCK + "sys.stdin.read()"), str(home / "nbrunner.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    threading.Thread(target=lambda: (release.wait(), holder.stdin.close()), daemon=True).start()
    yield release
    release.set()
    holder.wait(timeout=10)


# -- 1. finished runs are never recorded lost, however loaded the machine ------------------
def test_a_predecessors_info_is_never_taken_for_the_living_services(runner: Runner) -> None:
    """Between taking the lock and writing its own, a new service's home holds the file of
    the one before it: that pid is dead (or someone else's), never the service's."""
    contact.ensure_running(runner.home)
    living = service_pid(runner.home)
    info_file = runner.home / contact.INFO_NAME
    written = json.loads(info_file.read_text())
    gone = subprocess.Popen(python("pass"))
    gone.wait()
    info_file.write_text(json.dumps({**written, "pid": gone.pid}))
    assert contact.info(runner.home) is None
    info_file.write_text(json.dumps({**written, "marker": "0"}))  # the pid, reused
    assert contact.info(runner.home) is None
    info_file.write_text(json.dumps(written))
    assert contact.info(runner.home) == written and written["pid"] == living


def test_stop_waits_for_a_starting_service_to_say_who_it_is(home: Path) -> None:
    """Its lock taken, its info not yet written: stop neither says it is gone nor gives up;
    it asks it to exit as soon as it can name it."""
    holds_the_lock = (
        "import sys, time; from pathlib import Path; from nbrunner import platform\n"
        "fd = platform.take_lock(Path(sys.argv[1])); print('held', flush=True)\n"
        "time.sleep(300)"
    )
    holder = subprocess.Popen(
        [*python(holds_the_lock), str(home / contact.LOCK_NAME)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        stopped: list[bool] = []
        stopper = threading.Thread(target=lambda: stopped.append(contact.stop(home, 60)))
        stopper.start()
        stopper.join(1.0)
        assert stopper.is_alive() and stopped == []  # not gone: it holds the lock
        marker = platform.start_marker(holder.pid)
        (home / contact.INFO_NAME).write_text(json.dumps({"pid": holder.pid, "marker": marker}))
        stopper.join(60)
        assert stopped == [True] and holder.wait(10) == -signal.SIGTERM
    finally:
        holder.kill()
        holder.wait()


def test_short_runs_on_a_busy_machine_all_end_as_they_did(runner: Runner, busy_machine) -> None:
    runner.register("brief", command=python("import time, sys; time.sleep(0.3); sys.exit(0)"))
    runner.register("instant", command=python("pass"))
    runs = [runner.submit("brief") for _ in range(25)] + [
        runner.submit("instant") for _ in range(25)
    ]
    records = [run.wait(timeout=180) for run in runs]
    assert {(r.status, r.exit_code) for r in records} == {(RunStatus.SUCCEEDED, 0)}


# -- 2. a store that cannot be written ends no supervision -----------------------------------
def test_a_store_locked_past_its_patience_loses_no_end(
    home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NBRUNNER_STORE_PATIENCE", "1")
    gate = tmp_path / "gate"
    run = gated_run(home, gate, exit_code=7)
    before = service_pid(home)
    holder = subprocess.Popen(
        [*python(HOLD_THE_LOCK + "sys.stdin.read()"), str(home / "nbrunner.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    errors = home / "service.log"
    seen = errors.stat().st_size if errors.exists() else 0
    gate.touch()  # the run ends while the store is locked, past the 1 s patience...
    wait_until(  # ...and the lock stays until the service has met it, however slow it is
        lambda: errors.exists() and b"stayed locked" in errors.read_bytes()[seen:],
        timeout=60,
        what="the service to find the store locked",
    )
    holder.stdin.close()
    holder.wait(timeout=30)
    record = wait_for_end(home, run.id)
    assert (record.status, record.exit_code) == (RunStatus.FAILED, 7)
    assert service_pid(home) == before  # the service lived through it


def test_a_client_facing_a_locked_store_says_so_in_one_line(
    home: Path, held_store_lock: threading.Event
) -> None:
    patience = {"NBRUNNER_STORE_PATIENCE": "1"}
    result = cli(home, "run", "count", "-p", "n=1", env=patience, check=False)
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "stayed locked by another process for 1 s" in result.stderr
    held_store_lock.set()
    assert Store(home).count_history(_everything()) == 0  # nothing was queued


def _everything():
    from nbrunner.store import HistoryFilter

    return HistoryFilter.build()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB filesystem, as root can mount one: the full disk of a runaway logger."""
    with tmpfs(tmp_path / "tiny", "16m") as mount:
        yield mount


@pytest.mark.posix
def test_a_full_disk_keeps_the_run_going_and_its_end_is_written_once_space_frees(
    tiny_disk: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home, gate = tiny_disk / "home", tmp_path / "gate"
    monkeypatch.setenv("NBRUNNER_HOME", str(home))
    code = (
        "import os, time\nprint('before', flush=True)\n"
        f"while not os.path.exists({str(gate)!r}): time.sleep(0.02)\n"
        "print('after the disk filled up' * 10000, flush=True)"
    )
    with Runner(home) as runner:
        runner.register("writer", command=python(code))
        run = runner.submit("writer")
        wait_until(lambda: run.status is RunStatus.RUNNING, what="running")
        log = Path(run.record.log_path)  # its first line is written before the disk fills
        wait_until(lambda: log.read_text().startswith("before\n"), what="the first line")
        filler = tiny_disk / "filler"
        fill(filler)
        gate.touch()
        with pytest.raises(TimeoutError):
            run.wait(timeout=3)  # its end cannot be written yet, but it is kept
        filler.unlink()
        record = run.wait(timeout=60)
    assert (record.status, record.exit_code) == (RunStatus.SUCCEEDED, 0)
    assert record.log_dropped and record.log_dropped > 200_000
    assert Path(record.log_path).read_text().startswith("before\n")
    contact.stop(home)


# -- 3. the queue never stalls -----------------------------------------------------------
@pytest.mark.posix
def test_a_run_whose_submitter_was_killed_at_once_still_ends(home: Path) -> None:
    submit = (
        "import os, signal, sys; from nbrunner import Runner; "
        "run = Runner(sys.argv[1], start=False).submit('count', {'n': 2, 'delay': 0.1}); "
        "print(run.id, flush=True); os.kill(os.getpid(), signal.SIGKILL)"
    )
    result = subprocess.run([*python(submit), str(home)], capture_output=True, text=True)
    assert result.returncode == -signal.SIGKILL
    record = wait_for_end(home, int(result.stdout))
    assert (record.status, record.exit_code) == (RunStatus.SUCCEEDED, 0)


def test_settings_changed_from_the_cli_start_what_waits(home: Path) -> None:
    cli(home, "config", "paused", "true")
    cli(home, "config", "max_concurrent", "1")
    ids = [
        int(cli(home, "run", "count", "-p", "n=2000", "-p", "delay=0.1").stdout) for _ in range(2)
    ]
    assert contact.stop(home)  # nobody is alive: only the next CLI call can move the queue
    cli(home, "config", "paused", "false")
    wait_until(lambda: record_of(home, ids[0]).status is RunStatus.RUNNING, what="first running")
    assert record_of(home, ids[1]).status is RunStatus.QUEUED
    assert contact.stop(home)
    cli(home, "config", "max_concurrent", "2")
    wait_until(lambda: record_of(home, ids[1]).status is RunStatus.RUNNING, what="second running")
    cli(home, "cancel", "--all")
    assert {wait_for_end(home, i).status for i in ids} == {RunStatus.CANCELLED}


def test_a_slow_hook_does_not_hold_the_next_run(runner: Runner, tmp_path: Path) -> None:
    runner.config("max_concurrent", 1)
    marker = tmp_path / "hook-ran"
    hook = python(f"import time; open({str(marker)!r}, 'w').close(); time.sleep(30)")
    runner.register("hooked", command=python("pass"), on_done=hook)
    first, second = runner.submit("hooked"), runner.submit("count", {"n": 1, "delay": 0})
    first.wait(timeout=30)
    wait_until(marker.exists, what="the hook to start")
    assert second.wait(timeout=20).status is RunStatus.SUCCEEDED
    hook_log = Path(first.log_path).with_suffix(".on_done.log")
    assert "exited" not in hook_log.read_text()  # still sleeping: it held nothing
    contact.stop(runner.home)  # waits for the hook, bounded by the stop's own patience


@every_recorder_path
def test_a_killed_service_stops_no_run_and_loses_no_exit_code(home: Path, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    run = gated_run(home, gate, exit_code=5)
    child = record_of(home, run.id).pid
    first = service_pid(home)
    psutil.Process(first).kill()
    wait_until(lambda: not contact.is_running(home), what="the service gone")
    assert alive(child)
    gate.touch()  # ends while no service lives: its recorder keeps the code, starts one
    record = wait_for_end(home, run.id)
    assert (record.status, record.exit_code, record.reason) == (
        RunStatus.FAILED,
        5,
        "exited with code 5",
    )
    assert service_pid(home) != first


def test_a_cli_call_restarts_a_dead_service_that_left_queued_runs(home: Path) -> None:
    cli(home, "config", "paused", "true")
    run_id = int(cli(home, "run", "count", "-p", "n=1", "-p", "delay=0").stdout)
    psutil.Process(service_pid(home)).kill()
    wait_until(lambda: not contact.is_running(home), what="the service gone")
    with sqlite3.connect(home / "nbrunner.db") as db:  # the setting changes behind its back
        db.execute("UPDATE config SET value = 'false' WHERE key = 'paused'")
    cli(home, "ps")  # any client that sees runs waiting starts one
    assert wait_for_end(home, run_id).status is RunStatus.SUCCEEDED


def test_one_service_per_home_however_many_clients_start_it(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NBRUNNER_SERVICE_IDLE_S", "60")  # none leaves for being idle meanwhile
    Store(home)
    starters = [
        subprocess.Popen(
            [
                *python(
                    "import sys; from nbrunner import contact; contact.ensure_running(sys.argv[1])"
                ),
                str(home),
            ]
        )
        for _ in range(4)
    ]
    for starter in starters:
        starter.wait(timeout=30)
    serving = service_pid(home)
    wait_until(lambda: len(services_of(home)) == 1, what="the extra services to leave")
    assert [p.pid for p in services_of(home)] == [serving]


def test_a_burst_of_submissions_starts_one_service_not_one_each(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each submission made while the service was still importing started one more, which
    # found the lock taken and left: a sweep of 300 runs paid 29 interpreters for nothing.
    monkeypatch.setenv("NBRUNNER_SERVICE_IDLE_S", "60")
    with Runner(home) as runner:
        runs = [runner.submit("count", {"n": 1, "delay": 0}) for _ in range(20)]
        for run in runs:
            assert run.wait(timeout=60).status is RunStatus.SUCCEEDED
    wait_until(lambda: len(services_of(home)) == 1, what="the serving service alone")
    log = home / contact.ERR_NAME
    assert "this one leaves" not in (log.read_text() if log.exists() else "")


def test_a_service_that_died_on_its_way_does_not_hold_back_the_next(home: Path) -> None:
    Store(home)
    assert contact.ensure_running(home)
    wait_until(lambda: services_of(home), what="the service started")
    for starting in services_of(home):
        starting.kill()  # most likely before it took the lock: still importing
    with Runner(home) as runner:
        record = runner.submit("count", {"n": 1, "delay": 0}).wait(timeout=30)
    assert record.status is RunStatus.SUCCEEDED


@pytest.mark.timeout(60)
def test_a_home_where_the_starting_note_cannot_be_written_still_starts_its_service(
    home: Path,
) -> None:
    Store(home)
    (home / f"{contact.STARTING_NAME}.tmp").mkdir()  # the note's write fails, every time
    with Runner(home) as runner:
        record = runner.submit("count", {"n": 1, "delay": 0}).wait(timeout=30)
    assert record.status is RunStatus.SUCCEEDED


def test_an_idle_service_exits_and_the_next_submission_starts_another(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NBRUNNER_SERVICE_IDLE_S", "1")
    with Runner(home) as runner:
        runner.submit("count", {"n": 1, "delay": 0}).wait(timeout=30)
        wait_until(lambda: not contact.is_running(home), what="the idle service to leave")
        assert runner.submit("count", {"n": 1, "delay": 0}).wait(timeout=30).exit_code == 0


# -- 4. never signal a process that is not provably the run's -----------------------------
@pytest.mark.posix
def test_a_lost_run_never_signals_a_process_that_is_not_its_own(home: Path) -> None:
    with Runner(home) as runner:
        run = runner.submit("count", {"n": 1000, "delay": 0.05})
        wait_until(lambda: run.status is RunStatus.RUNNING, what="running")
    record = record_of(home, run.id)
    recorder = psutil.Process(record.pid).ppid()
    psutil.Process(service_pid(home)).kill()
    wait_until(lambda: not contact.is_running(home), what="the service gone")
    bystander = subprocess.Popen(python("import time; time.sleep(300)"), start_new_session=True)
    try:
        # The run's pid now names someone else, as after a reboot or a pid wrap.
        journal = RunFiles.of(home, run.id).lock
        started = RunFiles.of(home, run.id).recorded()["child"]
        recorded = journal_line("child", started)
        assert recorded in journal.read_bytes()
        forged = journal_line("child", {**started, "pid": bystander.pid})
        journal.write_bytes(journal.read_bytes().replace(recorded, forged))
        os.kill(recorder, signal.SIGKILL)
        os.kill(record.pid, signal.SIGKILL)
        contact.ensure_running(home)
        lost = wait_for_end(home, run.id)
        assert lost.status is RunStatus.LOST
        assert "recorder" in lost.reason and "ended without recording" in lost.reason
        assert alive(bystander.pid)
    finally:
        bystander.kill()
        bystander.wait()


@every_recorder_path
def test_a_killed_recorder_makes_the_run_lost_and_its_tree_stopped(runner: Runner) -> None:
    run = runner.submit("count", {"n": 1000, "delay": 0.05})
    wait_until(lambda: run.status is RunStatus.RUNNING, what="running")
    child = run.pid
    psutil.Process(psutil.Process(child).ppid()).kill()
    record = run.wait(timeout=30)
    assert record.status is RunStatus.LOST
    wait_until(lambda: not alive(child), what="the orphaned child stopped")
    wait_until(lambda: not contact.is_running(runner.home), what="the service to idle out")


@every_recorder_path
def test_a_new_service_adopts_running_runs_without_disturbing_them(home: Path) -> None:
    with Runner(home) as runner:
        run = runner.submit("count", {"n": 40, "delay": 0.05, "label": "kept"})
        wait_until(lambda: run.status is RunStatus.RUNNING, what="running")
        psutil.Process(service_pid(home)).kill()
        wait_until(lambda: not contact.is_running(home), what="the service gone")
        contact.ensure_running(home)
        record = run.wait(timeout=60)
    assert (record.status, record.exit_code) == (RunStatus.SUCCEEDED, 0)
    assert run.logs().splitlines()[-1] == "kept 40/40"


# -- 5. a run's whole tree ends with the run -----------------------------------------------
LEAVES_A_SLEEPER = "sleep 300 & echo $!; exit 0"


@pytest.mark.posix
@every_recorder_path
def test_a_backgrounded_process_ends_with_its_run(runner: Runner) -> None:
    runner.register("daemonizer", command=["/bin/sh", "-c", LEAVES_A_SLEEPER])
    run = runner.submit("daemonizer")
    assert run.wait(timeout=30).status is RunStatus.SUCCEEDED
    sleeper = int(run.logs().split()[0])
    wait_until(lambda: not alive(sleeper), what="the backgrounded sleep to end")


@pytest.mark.posix
@every_recorder_path
def test_grandchildren_of_a_killed_child_end_with_the_run(runner: Runner) -> None:
    code = (
        "import os, signal, subprocess, sys\n"
        "kid = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'],"
        " start_new_session=True)\n"
        "print(kid.pid, flush=True)\nos.kill(os.getpid(), signal.SIGKILL)"
    )
    runner.register("abandoner", command=python(code))
    run = runner.submit("abandoner")
    assert run.wait(timeout=30).reason == "killed by signal SIGKILL"
    orphan = int(run.logs().split()[0])
    wait_until(lambda: not alive(orphan), what="the orphaned grandchild to end")


@pytest.mark.posix
@every_recorder_path
def test_a_module_may_keep_what_it_leaves_behind(runner: Runner) -> None:
    runner.register("daemon", command=["/bin/sh", "-c", LEAVES_A_SLEEPER], keep_leftovers=True)
    runner.register("daemonizer", command=["/bin/sh", "-c", LEAVES_A_SLEEPER])
    kept, cleaned = runner.submit("daemon"), runner.submit("daemonizer")
    assert [r.wait(timeout=30).status for r in (kept, cleaned)] == [RunStatus.SUCCEEDED] * 2
    sleeper, stopped = (int(r.logs().split()[0]) for r in (kept, cleaned))
    try:
        wait_until(lambda: not alive(stopped), what="the other run's leftover to be stopped")
        assert alive(sleeper)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(sleeper, signal.SIGKILL)


# -- 6. logs are capped, and read in bounded windows ---------------------------------------
@every_recorder_path
def test_a_runaway_log_keeps_its_head_and_newest_tail_under_the_cap(runner: Runner) -> None:
    runner.config("max_log_size", "64KB")
    runner.register("chatty", command=python("for i in range(200000): print(f'line {i:06d}')"))
    record = runner.submit("chatty").wait(timeout=120)
    assert record.status is RunStatus.SUCCEEDED
    output = b"".join(b"line %06d\n" % i for i in range(200000))
    head, tail, _ = split_capped(Path(record.log_path).read_bytes())
    assert (head, tail) == capped(output, 64_000)  # exactly the cap, around its two notes
    assert record.log_dropped == len(output) - 64_000


def test_reading_a_large_log_is_bounded(runner: Runner) -> None:
    runner.register("big", command=python("import sys; sys.stdout.write('x' * 12_000_000)"))
    run = runner.submit("big")
    run.wait(timeout=60)
    text = run.logs()
    assert len(text) < 9 * 1024 * 1024
    assert text.startswith("[nbrunner: the first") and run.log_path in text.splitlines()[0]


# -- 7. private by default ---------------------------------------------------------------
@pytest.mark.posix
def test_the_home_its_store_and_logs_are_private(runner: Runner) -> None:
    record = runner.submit("count", {"n": 1, "delay": 0}).wait(timeout=30)
    home = runner.home

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(home) == mode(home / "logs") == 0o700
    private = [home / "nbrunner.db", home / "modules.toml", Path(record.log_path)]
    private += [p for p in home.glob("nbrunner.db-*")] + [home / "service.log"]
    assert {p.name: mode(p) for p in private} == {p.name: 0o600 for p in private}


def test_no_secret_reaches_any_process_argv(runner: Runner) -> None:
    runner.register(
        "secretive", command=python("import time; time.sleep(30)"), env={"TOKEN": "s3cr3t-v4lue"}
    )
    run = runner.submit("secretive")
    wait_until(lambda: run.status is RunStatus.RUNNING, what="running")
    leaking = [
        p.info["pid"]
        for p in psutil.process_iter(["pid", "cmdline"])
        if any("s3cr3t-v4lue" in part for part in p.info["cmdline"] or ())
    ]
    assert leaking == []
    run.cancel()
    run.wait(timeout=20)


# -- 8. a run's environment is its submitter's ------------------------------------------
def test_a_run_gets_its_submitters_environment_whoever_started_the_service(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    show = "import os; print(os.environ.get('MY_CONTEXT'), os.environ.get('JPY_SESSION_NAME'))"
    runner.register("envshow", command=python(show))
    monkeypatch.setenv("MY_CONTEXT", "first")
    assert runner.submit("envshow").wait(timeout=30).status is RunStatus.SUCCEEDED
    assert contact.is_running(runner.home)  # started with MY_CONTEXT=first
    monkeypatch.setenv("MY_CONTEXT", "second")
    monkeypatch.setenv("JPY_SESSION_NAME", "a kernel's own")  # noise, not the run's
    run = runner.submit("envshow")
    run.wait(timeout=30)
    assert run.logs() == "second None\n"


# -- leaks -----------------------------------------------------------------------------
def test_a_wait_that_times_out_leaves_no_waiter_behind(runner: Runner) -> None:
    run = runner.submit("count", {"n": 100, "delay": 0.1})

    def futures() -> int:  # what a waiter is: a future, held until the run ends
        gc.collect()
        return sum(isinstance(o, concurrent.futures.Future) for o in gc.get_objects())

    with pytest.raises(TimeoutError):
        run.wait(timeout=0.05)
    before = futures()
    for _ in range(50):
        with pytest.raises(TimeoutError):
            run.wait(timeout=0.01)
    assert futures() - before < 10  # one left per timed-out wait would be 50
    run.cancel()
    run.wait(timeout=20)


# -- 9. level-triggered: a step that could not be written is written later ------------------
# The store locked in long bursts with tiny gaps, so every kind of write meets a lock; the
# first burst also takes the queue out of pause, so the runs start while it is locked.
LOCK_IN_BURSTS = (
    "import sqlite3, sys, time\n"
    "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)\n"
    "c.execute('BEGIN IMMEDIATE')\n"
    "c.execute(\"UPDATE config SET value = 'false' WHERE key = 'paused'\")\n"
    "c.execute(\"UPDATE meta SET value = value + 1 WHERE key = 'version'\")\n"  # as all writes
    "c.execute('COMMIT')\n"
    "for burst in range(int(sys.argv[2])):\n"
    "    c.execute('BEGIN IMMEDIATE')\n"
    "    print('held', flush=True)\n"
    "    time.sleep(6)\n"
    "    c.execute('COMMIT')\n"
    "    time.sleep(0.03)\n"
)


@every_recorder_path
def test_runs_end_at_their_timeout_while_the_store_is_locked_in_long_bursts(home: Path) -> None:
    with Runner(home) as runner:
        runner.config("paused", True)
        runner.register("overrun", command=python("import time; time.sleep(40)"), timeout=3)
        runs = [runner.submit("overrun") for _ in range(4)]
    locker = subprocess.Popen(
        [*python(LOCK_IN_BURSTS), str(home / "nbrunner.db"), "3"], stdout=subprocess.PIPE
    )
    try:
        contact.wake(home)
        assert locker.wait(timeout=120) == 0
    finally:
        locker.kill()
    for run in runs:
        record = wait_for_end(home, run.id)
        assert (record.status, record.reason) == (RunStatus.TIMED_OUT, "timed out after 3 s")
        assert record.started_at is not None and record.ended_at - record.started_at < 30


@pytest.mark.posix  # Windows cannot remove a folder whose files are open
@pytest.mark.parametrize("replaced", [False, True], ids=["removed", "replaced"])
def test_a_removed_or_replaced_home_ends_its_service(
    home: Path, monkeypatch: pytest.MonkeyPatch, replaced: bool
) -> None:
    monkeypatch.setenv("NBRUNNER_SERVICE_IDLE_S", "600")  # it would not leave for being idle
    Store(home)
    contact.ensure_running(home)
    serving = psutil.Process(service_pid(home))
    shutil.rmtree(home)
    if replaced:
        home.mkdir()  # a new home at the same path is not the one it served
    wait_until(lambda: not alive(serving.pid), timeout=30, what="the service to leave")


@pytest.mark.posix
def test_a_stalled_service_cannot_let_a_run_overrun_its_timeout(home: Path) -> None:
    with Runner(home) as runner:
        runner.register("overrun", command=python("import time; time.sleep(60)"), timeout=2)
        run = runner.submit("overrun")
        wait_until(lambda: run.status is RunStatus.RUNNING, what="running")
    child, stalled = record_of(home, run.id).pid, service_pid(home)
    os.kill(stalled, signal.SIGSTOP)
    try:
        wait_until(lambda: not alive(child), timeout=30, what="the run stopped at its deadline")
    finally:
        os.kill(stalled, signal.SIGCONT)
    record = wait_for_end(home, run.id)
    assert (record.status, record.reason) == (RunStatus.TIMED_OUT, "timed out after 2 s")


@pytest.fixture
def full_runs_folder(home: Path) -> Iterator[Path]:
    """The home's runs/ folder on a tiny filesystem, filled up; returns the filler."""
    with tmpfs(home / "runs", "64k") as runs:
        filler = runs / "filler"
        fill(filler)
        yield filler
        contact.stop(home)


@pytest.mark.posix
@every_recorder_path
def test_a_run_whose_start_cannot_be_recorded_is_stopped_and_ends_recorded(
    home: Path,
    full_runs_folder: Path,
    recorder_path: str,  # noqa: F811 (the fixture)
) -> None:
    chatty = (
        "import os, sys, time\nprint(os.getpid(), flush=True)\n"
        "sys.stdout.write('x' * 1_000_000 + '\\n'); sys.stdout.flush()\ntime.sleep(300)"
    )
    with Runner(home) as runner:
        runner.register("chatty", command=python(chatty))
        run = runner.submit("chatty")
        log = Path(run.log_path)
        if recorder_path in ("keeper", "threads"):  # it cannot even be handed over: never starts
            record = run.wait(timeout=60)
            assert record.status is RunStatus.FAILED and record.pid is None
            assert "could not start the run's recorder" in record.reason
            assert "No space left on device" in record.reason
            return
        wait_until(
            lambda: log.exists() and "could not record the run's start" in log.read_text(),
            timeout=30,
            what="its output read and the recorder's note",
        )
        child = int(log.read_text().split()[0])
        wait_until(lambda: not alive(child), what="the child no one could cancel stopped")
        full_runs_folder.unlink()  # space again: the end can be written
        record = run.wait(timeout=60)
    assert record.status is RunStatus.FAILED
    assert "could not record the run's start" in record.reason
    assert len(log.read_text()) > 1_000_000  # the pump read it all: nothing blocked on it


@pytest.mark.posix
@every_recorder_path
def test_a_kept_leftover_that_writes_to_its_output_lives_on(runner: Runner, tmp_path: Path) -> None:
    pid_file = tmp_path / "leftover.pid"  # not the log: the leftover may tick before the echo
    chatty = f"(while true; do echo tick; sleep 0.05; done) & echo $! > '{pid_file}'; exit 0"
    runner.register("chatty", command=["/bin/sh", "-c", chatty], keep_leftovers=True)
    run = runner.submit("chatty")
    assert run.wait(timeout=30).status is RunStatus.SUCCEEDED
    leftover = int(pid_file.read_text())
    try:
        ticks = run.logs().count("tick")
        # past the recorder's own end: a leftover writing to a closed pipe dies of SIGPIPE
        wait_until(lambda: run.logs().count("tick") > ticks + 60, what="the leftover going on")
        assert alive(leftover)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(leftover, signal.SIGKILL)


def test_every_end_runs_its_hook_queued_and_dependency_cancels_too(
    runner: Runner, tmp_path: Path
) -> None:
    hook = [*python("import pathlib, sys; pathlib.Path(sys.argv[1]).touch()")]
    hook.append(str(tmp_path / "{id}-{status}"))
    runner.register("failing", command=python("raise SystemExit(1)"), on_done=hook)
    runner.register("hooked", command=python("pass"), on_done=hook)
    runner.config("paused", True)
    queued = runner.submit("hooked")
    assert runner.cancel(queued.id).status is RunStatus.CANCELLED
    first = runner.submit("failing")
    dependent = runner.submit("hooked", after=[first])
    runner.config("paused", False)
    assert dependent.wait(timeout=30).status is RunStatus.CANCELLED
    for run_id, status in ((queued.id, "cancelled"), (first.id, "failed")):
        wait_until((tmp_path / f"{run_id}-{status}").exists, what=f"run {run_id}'s hook")
    wait_until((tmp_path / f"{dependent.id}-cancelled").exists, what="the dependent's hook")


def test_a_claim_is_requeued_by_how_long_the_service_saw_it_not_by_the_wall_clock(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Runner(home, start=False) as client:
        client.config("paused", True)
        run = client.submit("count", {"n": 1})
    # claimed by a service that died before its recorder came; the wall clock has since
    # been stepped an hour ahead
    stepped = time.time() - 3600
    Store(home).transition(run.id, RunStatus.STARTING, claimed_at=stepped, claimed_by=1)
    owner = Service(home)
    owner._refresh_all()
    owner._adopt()
    assert record_of(home, run.id).status is RunStatus.STARTING  # a slow start, not a dead one
    monkeypatch.setattr(service, "UNLAUNCHED_CLAIM_S", 0.0)  # seen long enough now
    owner._next_adopt = 0.0
    owner._adopt()
    assert record_of(home, run.id).status is RunStatus.QUEUED
    with Runner(home, start=False) as client:  # leave nothing queued for the home's service
        assert client.cancel(run.id).status is RunStatus.CANCELLED


@every_recorder_path
def test_a_runs_folder_removed_under_a_living_service_is_made_again(runner: Runner) -> None:
    assert runner.submit("count", {"n": 1, "delay": 0}).wait(timeout=30).exit_code == 0
    shutil.rmtree(runner.home / "runs")  # a cleanup tool, under the service's feet
    record = runner.submit("count", {"n": 1, "delay": 0}).wait(timeout=30)
    assert (record.status, record.exit_code) == (RunStatus.SUCCEEDED, 0)


@pytest.mark.posix  # Windows cannot remove a folder whose files are open
@every_recorder_path
def test_a_run_that_outlives_its_removed_home_leaves_no_recorder_behind(
    home: Path, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    run = gated_run(home, gate, exit_code=0)
    child = record_of(home, run.id).pid
    recorder = psutil.Process(child).ppid()
    shutil.rmtree(home)
    gate.touch()  # it ends with no home to write its end to, and no one to read it
    wait_until(lambda: not alive(child) and not alive(recorder), what="the run and its recorder")


def test_the_service_reads_back_none_of_its_own_writes_and_all_of_anyone_elses(
    home: Path,
) -> None:
    """Its own writes are learnt from the transaction, and the change feed then starts
    after them, but only while nothing else was written in between: a client's cancel
    between two of its writes is still read."""
    owner = Service(home)
    first, second = owner.store.insert_runs(
        [{"module": "m", "params": {}, "argv": ["true"], "env": {}} for _ in range(2)]
    )
    owner._refresh_all()
    with owner._writing() as tx:
        tx.transition(first, RunStatus.STARTING)
    assert owner.version == owner.store.version()  # nothing left to read back
    assert owner.active[first].status is RunStatus.STARTING
    Store(home).update(second, control="cancel")  # a client, in between
    with owner._writing() as tx:
        tx.transition(first, RunStatus.RUNNING, started_at=1.0)
    assert owner.version < owner.store.version()  # the client's write is still ahead
    owner._read_changes()
    assert owner.active[second].control == "cancel"
    assert owner.active[first].status is RunStatus.RUNNING
    assert owner.version == owner.store.version()


def test_the_ends_a_pass_found_are_written_at_once_and_one_that_cannot_be_holds_none_back(
    home: Path,
) -> None:
    """A pass writes every end it found in one transaction; if that fails for one run,
    the others are still written (each alone), and that one stays watched for the next."""
    owner = Service(home)
    rows = [{"module": "m", "params": {}, "argv": ["true"], "env": {}} for _ in range(6)]
    ids = owner.store.insert_runs(rows)
    for run_id in ids:
        owner.store.transition(run_id, RunStatus.STARTING)
    owner._refresh_all()

    def ends(run_ids: list[int]) -> list[service.End]:
        for run_id in run_ids:
            owner.watches[run_id] = LocalWatch(owner.active[run_id], str(home))
        return [service.End(owner.watches[i], Outcome(0), {"ended_at": 1.0}) for i in run_ids]

    before = owner.store.version()
    owner._finish_all(ends(ids[:3]))
    assert owner.store.version() == before + 1  # one transaction for the three
    assert {record_of(home, i).status for i in ids[:3]} == {RunStatus.SUCCEEDED}
    assert not set(ids[:3]) & set(owner.watches)

    gone = ids[4]  # its row removed: its end cannot be written
    with sqlite3.connect(home / "nbrunner.db") as conn:
        conn.execute("DELETE FROM runs WHERE id = ?", (gone,))
    owner._finish_all(ends(ids[3:]))
    assert [record_of(home, i).status for i in (ids[3], ids[5])] == [RunStatus.SUCCEEDED] * 2
    assert set(owner.watches) == {gone}  # tried again next pass
