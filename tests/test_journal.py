"""A run's journal (runs/ID.lock): what its holder records, a line at a time, and what the
service reads back, whatever a full disk or a cleanup tool does meanwhile; and the separate
files an earlier release's holder writes instead, read across an upgrade."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.disk import fill, tmpfs
from helpers.procs import python, wait_until

from nbrunner import Runner, RunStatus, contact
from nbrunner.models import RunRecord
from nbrunner.recorder import RecorderSpec, RunFiles, RunJournal, journal_line
from nbrunner.store import Store
from nbrunner.supervisor import LocalWatch

STARTED = {"pid": 41, "marker": "7", "at": 1.5}


def spec_for(home: Path, run_id: int) -> RecorderSpec:
    return RecorderSpec(
        home=str(home), run_id=run_id, argv=["true"], cwd=None, env={"A": "1"},
        log_path=str(home / f"{run_id}.log"), max_log_size=0, keep_leftovers=False, cores=[],
    )  # fmt: skip


def test_a_spec_is_taken_once_and_becomes_the_runs_locked_journal(tmp_path: Path) -> None:
    files = RunFiles.of(tmp_path, 3)
    files.directory.mkdir()
    spec = spec_for(tmp_path, 3)
    files.spec.write_bytes(RunJournal.spec_text(spec))
    journal = RunJournal.take(files.spec, files.lock)
    assert journal is not None and RecorderSpec.from_json(journal.spec()) == spec
    assert not files.spec.exists() and files.recorder_alive()
    assert RunJournal.take(files.spec, files.lock) is None  # taken: no second start
    assert not files.spec.exists()  # and the second look made no empty spec
    assert files.recorded() == {}  # the spec is no record
    journal.append("child", STARTED)
    assert files.recorded() == {"child": STARTED}
    journal.append("exit", {"exit_code": 0})
    journal.close()
    assert files.recorded() == {"child": STARTED, "exit": {"exit_code": 0}}
    assert not files.recorder_alive()


def test_a_line_still_being_written_is_not_read(tmp_path: Path) -> None:
    files = RunFiles.of(tmp_path, 1)
    files.directory.mkdir()
    files.lock.write_bytes(b'\n{"home": "a try that never started %s"}\n' % (b"x" * 200))
    journal = RunJournal.create(files.lock)
    assert journal is not None
    journal.append("child", STARTED)
    ending = b'{"exit": {"exit_code": 0}}'  # a line whose newline is not written yet
    with open(files.lock, "ab") as out:
        out.write(ending)
    assert files.recorded() == {"child": STARTED}
    assert files.lock.read_bytes() == b"\n" + journal_line("child", STARTED) + ending


@pytest.mark.posix
def test_a_line_cut_short_by_a_full_disk_is_cut_off_and_written_whole_once_space_frees(
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "runs", "8k") as runs:  # two pages
        files = RunFiles.of(tmp_path, 1)
        journal = RunJournal.create(files.lock)
        assert journal is not None
        journal.append("child", STARTED | {"pad": "x" * 3900})  # most of the first page
        fill(runs / "filler")  # the second page
        ended = {"exit_code": 0, "error": "y" * 300}  # more than the first page has left
        with pytest.raises(OSError):
            journal.append("exit", ended)
        assert files.lock.stat().st_size == len(journal.content)  # the cut line, cut off
        (runs / "filler").unlink()
        journal.append("exit", ended)
        assert files.recorded()["exit"] == ended
        journal.close()


@pytest.mark.posix  # Windows cannot remove a folder whose files are open
def test_a_journal_whose_folder_was_removed_is_made_again_whole_and_locked(
    tmp_path: Path,
) -> None:
    files = RunFiles.of(tmp_path, 2)
    files.directory.mkdir()
    files.spec.write_bytes(RunJournal.spec_text(spec_for(tmp_path, 2)))
    journal = RunJournal.take(files.spec, files.lock)
    assert journal is not None
    journal.append("child", STARTED)
    shutil.rmtree(files.directory)  # a cleanup tool, under the holder's feet
    journal.append("exit", {"exit_code": 0})
    assert files.recorded() == {"child": STARTED, "exit": {"exit_code": 0}}
    assert files.recorder_alive()
    assert files.lock.read_bytes() == journal.content  # the spec line too
    journal.close()
    assert not files.recorder_alive()


def test_a_watch_reads_a_journal_again_only_once_it_has_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass looks at every run, and most have nothing new: a stat, not a read, each."""
    files = RunFiles.of(tmp_path, 1)
    files.directory.mkdir()
    record = RunRecord(
        id=1, module="m", params={}, status=RunStatus.RUNNING, submitted_at=0.0, log_path=""
    )
    watch = LocalWatch(record, str(tmp_path))
    reads = []
    read = RunFiles.recorded
    monkeypatch.setattr(RunFiles, "recorded", lambda self: reads.append(1) or read(self))
    journal = RunJournal.create(files.lock)
    assert journal is not None
    assert watch.look() is None and watch.look() is None
    assert len(reads) == 2  # an empty journal may be an earlier release's: its files change
    journal.append("child", STARTED)
    assert [watch.look() for _ in range(3)] == [None] * 3 and len(reads) == 3
    assert watch.child == (41, "7")
    journal.append("exit", {"exit_code": 0})
    assert watch.look() == {"exit_code": 0} and len(reads) == 4


# What an earlier release's recorder wrote: an empty lock file it holds, and the child's
# start and its end in files of their own, each replaced whole.
EARLIER_RECORDER = """
import json, os, subprocess, sys, time
from pathlib import Path
from nbrunner import platform
runs, run_id, gate = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
lock = platform.try_lock(runs / f"{run_id}.lock")
waits = f"import os, time\\nwhile not os.path.exists({gate!r}): time.sleep(0.02)\\nraise SystemExit(3)"
child = subprocess.Popen([sys.executable, "-c", waits])
def write(kind, data):
    temporary = runs / f"{run_id}.{kind}.tmp"
    temporary.write_text(json.dumps(data))
    os.replace(temporary, runs / f"{run_id}.{kind}")
write("child", {"pid": child.pid, "marker": platform.start_marker(child.pid), "at": time.time()})
write("exit", {"exit_code": child.wait(), "ended_at": time.time()})
"""


@pytest.mark.posix
def test_a_run_held_by_an_earlier_releases_recorder_is_read_from_its_own_files(
    home: Path, tmp_path: Path
) -> None:
    """A keeper lives across an upgrade, and the service of the new release adopts what it
    holds: the child file and the exit file it writes are read where there is no journal."""
    gate = tmp_path / "gate"
    with Runner(home, start=False) as client:
        client.config("paused", True)  # nothing is claimed but what the test claims
        client.register("count", command=python("pass"))
        run = client.submit("count")
    Store(home).transition(run.id, RunStatus.STARTING, claimed_at=time.time(), claimed_by=1)
    runs = home / "runs"
    runs.mkdir(mode=0o700, exist_ok=True)
    recorder = subprocess.Popen(
        [sys.executable, "-c", EARLIER_RECORDER, str(runs), str(run.id), str(gate)]
    )
    try:
        wait_until((runs / f"{run.id}.child").exists, what="the earlier recorder's child file")
        contact.ensure_running(home)
        store = Store(home)
        running = wait_until(
            lambda: (r := store.get(run.id)).status is RunStatus.RUNNING and r,
            timeout=60,
            what="the run adopted as running",
        )
        assert running.pid == RunFiles.of(home, run.id).recorded()["child"]["pid"]
        gate.touch()
        ended = wait_until(lambda: (r := store.get(run.id)).is_done and r, timeout=60)
        assert (ended.status, ended.exit_code) == (RunStatus.FAILED, 3)
        assert recorder.wait(timeout=60) == 0
    finally:
        gate.touch()
        recorder.wait(timeout=60)
        contact.stop(home)
    named = f"{run.id}."
    wait_until(lambda: not [n for n in os.listdir(runs) if n.startswith(named)], what="its files")
