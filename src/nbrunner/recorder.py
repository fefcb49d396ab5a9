"""What a run's holder and the service share: the spec a run is held by, the small files
through which whoever holds it speaks to whichever service is alive, its capped log, and
the limits enforced where its child is held.

A run is held by the home's keeper (nbrunner.keeper) or by a recorder of its own (forked
from the service, or an interpreter spawned per run: Windows, until its CI job has run the
keeper), with the same code (nbrunner.holding). Its holder outlives the service: the service
may be killed at any moment and a later one adopts the run, so everything the holder learns
goes to files beside the store:

    runs/ID.spec   the run handed to the keeper, written atomically, until the keeper takes it
    runs/ID.lock   the run's journal, locked while the run is held: the proof that its holder
                   is alive. The keeper takes a spec by renaming it to this name; then the
                   holder appends a line once the child is started (its pid and start
                   marker) and one once it has ended (the exit code, CPU time and peak
                   memory from the OS's own accounts, and why it was stopped or could not
                   start)
    runs/ID.pause  written by the service as it pauses and resumes the run (paused time)

A journal is appended to, never rewritten: making a file can cost more than anything else a
run does in its holder (18–340 µs of CPU on ext4 here, by directory; more with an antivirus
on NTFS), and its three files (lock, child, exit) were three made per run. Each line is whole
when it ends in a newline; a line cut short by a full disk is cut off before the next try.
The first byte is a newline of its own: Windows' lock on byte 0 keeps other processes from
reading that byte, and readers start after it. Earlier releases wrote runs/ID.child and
runs/ID.exit instead: a keeper of such a release may hold runs across an upgrade, so those
files are read too.

The holder enforces what must hold whatever happens to the service, where the child is held:
the run's timeout (paused time excluded) and its memory limit (Guard). Cancels, pauses, GPU
shares and the store are the service's.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from collections.abc import Callable, Collection
from contextlib import suppress
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from . import platform

PUMP_CHUNK = 64 * 1024
LEFTOVER_GRACE_S = 2.0  # what a leftover gets to exit on SIGTERM before SIGKILL
KEPT_LEFTOVER_DRAIN_S = 1.0  # a kept daemon may hold the output pipe open for good
FIRST_RETRY_S = 0.05
WRITE_RETRY_MAX_S = 5.0
PAUSED_CHECK_S = 1.0  # how often a paused run's timeout looks whether it was resumed
MEMORY_CHECK_S = 1.0
# "spawn": the Windows path (an interpreter per recorder) on POSIX, for tests; "keeper": one
# process per home holds every run (nbrunner.keeper), the model that replaces both.
RECORDER_ENV = "NBRUNNER_RECORDER"
KEEPER_LOCK, KEEPER_INFO, KEEPER_LOG = "keeper.lock", "keeper.json", "keeper.log"
KEEPER_START_S = 30.0  # a keeper just started takes its lock within this


@dataclass(frozen=True)
class RecorderSpec:
    """All a recorder needs, so it never reads the store."""

    home: str
    run_id: int
    argv: list[str]
    cwd: str | None
    env: dict[str, str]
    log_path: str
    max_log_size: int
    keep_leftovers: bool
    cores: list[int]
    memory_limit: int = 0  # bytes; a Windows job's own limit backs the recorder's
    timeout: float | None = None  # seconds of running time (paused time does not count)
    grace: float = 10.0  # SIGTERM, then this long, then SIGKILL

    def as_json(self) -> dict[str, Any]:
        """Its fields as they are (all JSON already): asdict() would deep-copy the env."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, found: dict[str, Any]) -> RecorderSpec:
        """A spec as written by this or a newer nbrunner: fields added since are left out
        (a keeper started before an upgrade holds the newer service's runs too); one this
        version needs and does not find is a TypeError."""
        return cls(**{key: value for key, value in found.items() if key in _SPEC_FIELDS})


_SPEC_FIELDS = frozenset(f.name for f in fields(RecorderSpec))


@dataclass(frozen=True)
class RunFiles:
    """The files through which a run's recorder speaks to whichever service is alive."""

    directory: Path
    run_id: int

    @classmethod
    def of(cls, home: str | Path, run_id: int) -> RunFiles:
        return cls(Path(home) / "runs", run_id)

    # Made once per run (the service reads its journal on every pass)
    @cached_property
    def lock(self) -> Path:
        return self.directory / f"{self.run_id}.lock"

    @cached_property
    def pause(self) -> Path:
        return self.directory / f"{self.run_id}.pause"

    @cached_property
    def spec(self) -> Path:
        """The run handed to the home's keeper (NBRUNNER_RECORDER=keeper), until it is taken."""
        return self.directory / f"{self.run_id}.spec"

    def read(self, path: Path) -> dict[str, Any] | None:
        try:
            with open(path, "rb") as found:
                return json.loads(found.read())
        except (OSError, ValueError):
            return None

    def recorded(self) -> dict[str, dict[str, Any]]:
        """What the run's holder has recorded so far: "child" once its child is started,
        "exit" once it has ended. One read of the journal; where it is empty or missing
        (an earlier release's holder keeps an empty lock file), that holder's own files."""
        found = read_journal(self.lock)
        if found is None:
            legacy = ((kind, self.read(self._legacy(kind))) for kind in JOURNAL_KINDS)
            found = {kind: record for kind, record in legacy if record is not None}
        return found

    def _legacy(self, kind: str) -> Path:
        """Where an earlier release's holder wrote the record of this kind."""
        return self.directory / f"{self.run_id}.{kind}"

    def journal_state(self) -> tuple[int, int] | None:
        """What tells one state of the journal from the next (inode, size: lines are only
        appended, or cut back to a whole line), None while it does not exist."""
        try:
            found = os.stat(self.lock)
        except OSError:
            return None
        return found.st_ino, found.st_size

    def recorder_alive(self) -> bool:
        return platform.is_locked(self.lock)

    def remove(self, spec: bool = True, pause: bool = True, legacy: bool = True) -> None:
        """Remove the journal, and those of the other files that may be there (each look
        for a missing one costs a failed system call: the caller says which may be)."""
        maybe = (
            *([self.spec] if spec else []),
            *([self.pause] if pause else []),
            *(self._legacy(kind) for kind in JOURNAL_KINDS if legacy),
        )
        for path in (self.lock, *maybe):
            with suppress(OSError):
                os.unlink(path)


JOURNAL_KINDS = ("child", "exit")
_RECORD_STARTS = tuple(b'{"%s":' % kind.encode() for kind in JOURNAL_KINDS)


def journal_line(kind: str, record: dict[str, Any]) -> bytes:
    return json.dumps({kind: record}).encode() + b"\n"


def read_journal(path: Path) -> dict[str, dict[str, Any]] | None:
    """The records of a journal by kind, None if it is missing or empty; a line still being
    written (no newline yet) and the spec line (never parsed here: it is the biggest) are
    left out."""
    try:
        with open(path, "rb") as journal:
            journal.seek(1)  # byte 0 is Windows' lock
            content = journal.read()
    except OSError:
        return None
    if not content:
        return None
    lines = content.split(b"\n")[:-1]
    found: dict[str, dict[str, Any]] = {}
    for line in lines:
        if line.startswith(_RECORD_STARTS):
            with suppress(ValueError):
                found.update(json.loads(line))
    return found


class RunJournal:
    """The run's journal as its holder writes it: locked from the moment it is taken until
    it is closed, appended to a line at a time."""

    def __init__(self, path: Path, fd: int, content: bytes) -> None:
        self.path, self.fd, self.content = path, fd, content

    @classmethod
    def create(cls, path: Path) -> RunJournal | None:
        """A recorder's own run: its journal made and locked; None if another holds it.
        What an earlier try at the run left in it (one that never started) is cleared."""
        fd = platform.take_lock(path)
        if fd is None:
            return None
        os.ftruncate(fd, 0)
        return cls(path, fd, b"")

    @classmethod
    def take(cls, spec: Path, path: Path) -> RunJournal | None:
        """A run handed to the keeper: its spec renamed to be its journal (so it is taken
        once, whatever happens to the keeper after), then locked; None if it is gone.
        Renamed first: Windows renames no open file."""
        try:
            os.replace(spec, path)
        except OSError:
            return None
        fd = platform.take_lock(path, create=False)
        if fd is None:
            return None
        try:
            content = os.read(fd, os.fstat(fd).st_size)
        except OSError:
            os.close(fd)
            return None
        return cls(path, fd, content)

    def spec(self) -> dict[str, Any]:
        """The spec it was taken from (ValueError if it is not one)."""
        found = json.loads(self.content)
        if not isinstance(found, dict):
            raise ValueError(f"a spec is a JSON object, not {type(found).__name__}")
        return found

    @staticmethod
    def spec_text(spec: RecorderSpec) -> bytes:
        """A spec as the service writes it: byte 0 is kept for Windows' lock."""
        return b"\n" + json.dumps(spec.as_json()).encode() + b"\n"

    def append(self, kind: str, record: dict[str, Any]) -> None:
        """One line, whole or not at all (OSError: the caller tries again later). A
        journal whose folder was removed (a cleanup tool) is made again first."""
        if os.fstat(self.fd).st_nlink == 0:
            self._make_again()
        line = journal_line(kind, record)
        if not self.content.endswith(b"\n"):
            line = b"\n" + line  # the first line, or a spec of an earlier release
        try:
            os.lseek(self.fd, len(self.content), os.SEEK_SET)
            _write_whole(self.fd, line)
        except OSError:
            with suppress(OSError):
                os.ftruncate(self.fd, len(self.content))
            raise
        self.content += line

    def _make_again(self) -> None:
        with suppress(OSError):
            self.path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = platform.try_lock(self.path)
        if fd is None:
            raise OSError(errno.EEXIST, f"{self.path} is held by another process")
        try:
            _write_whole(fd, self.content)
        except OSError:
            os.close(fd)
            with suppress(OSError):
                os.unlink(self.path)
            raise
        os.close(self.fd)
        self.fd = fd

    def close(self) -> None:
        """Lets go of the lock: the run is no longer held."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _write_whole(fd: int, data: bytes) -> None:
    """One write of all of data, or an OSError (a nearly full disk takes part of it)."""
    if os.write(fd, data) != len(data):
        raise OSError(errno.ENOSPC, "the disk took only part of the write")


def sweep_run_files(home: str | Path, active: Collection[int]) -> None:
    """Remove the files of runs that are over. `RunFiles.remove` cannot delete a file that
    is still open on Windows (a recorder holds its lock file until it exits), so what it
    left is cleared here, with the temporary files of interrupted writes."""
    for path in (Path(home) / "runs").glob("*"):
        run_id = path.name.split(".", 1)[0]
        if not run_id.isdigit() or int(run_id) in active:
            continue
        if path.suffix == ".lock" and platform.is_locked(path):
            continue  # its recorder is still on its way out
        with suppress(OSError):
            path.unlink()


def write_atomically(
    path: Path, data: dict[str, Any] | bytes, patience: float | None = None
) -> None:
    """Readers see the whole file or none of it (a dict as JSON, bytes as they are).
    Retried (a full disk frees, a removed folder is made again) for `patience` seconds,
    then the last OSError is raised; for good when patience is None."""
    deadline = None if patience is None else time.monotonic() + patience
    retry = Backoff()
    while True:
        try:
            return try_write_atomically(path, data)
        except OSError:
            if deadline is not None and time.monotonic() >= deadline:
                raise
        time.sleep(retry.next())


class Backoff:
    """How long to wait before each next try of a write: doubling, up to WRITE_RETRY_MAX_S."""

    def __init__(self) -> None:
        self.delay = FIRST_RETRY_S

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, WRITE_RETRY_MAX_S)
        return delay


def try_write_atomically(path: Path, data: dict[str, Any] | bytes) -> None:
    """One try at write_atomically; a removed folder is made again for the next."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | platform.O_BINARY, 0o600)
        with os.fdopen(fd, "wb") as out:
            # one write; json.dump encodes in pure Python
            out.write(data if isinstance(data, bytes) else json.dumps(data).encode())
        os.replace(temporary, path)
    except FileNotFoundError:
        with suppress(OSError):
            path.parent.mkdir(mode=0o700, exist_ok=True)
        raise


def paused_for(files: RunFiles, now: float) -> tuple[float, bool]:
    """How long (monotonic seconds) the run has been paused in all, and whether it is now."""
    found = files.read(files.pause) or {}
    since = found.get("since")
    total = float(found.get("paused_s") or 0.0)
    return (total + now - float(since), True) if since is not None else (total, False)


def mark_paused(files: RunFiles, paused: bool) -> None:
    """Written by the service as it pauses or resumes the run, so the recorder's timeout
    stops while the run is paused; one try (OSError: the caller tries again later)."""
    now = time.monotonic()
    total, was_paused = paused_for(files, now)
    if was_paused != paused:
        write_atomically(files.pause, {"paused_s": total, "since": now if paused else None}, 0)


def timeout_reason(timeout: float) -> str:
    return f"timed out after {timeout:g} s"


def memory_verdict(rss: int, peak: int, limit: int) -> str | None:
    """Why a run using rss bytes must stop, if it is over its memory limit."""
    if not limit or rss <= limit:
        return None
    from .units import format_size

    return (
        f"used {format_size(rss)} of memory, over its limit of {format_size(limit)} "
        f"(peak {format_size(peak)}); stopped"
    )


class CappedLog:
    """The run's log, kept under `cap` bytes: past it, the head and the newest tail stay.

    The file may grow a quarter past the cap between compactions, so a compaction (read
    the tail, cut the file after the head, write the tail back) is paid once per that
    much output, not per write. A write the disk refuses is counted, never raised.
    """

    NOTE = b"\n[nbrunner: output dropped here; this log keeps its first and last %s]\n"

    def __init__(self, path: str, cap: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | platform.O_BINARY, 0o600)
        self.path = path
        self._file = os.fdopen(fd, "ab", buffering=0)
        self.size = self._file.seek(0, os.SEEK_END)
        self.cap = cap
        self.dropped = 0
        self._prefix_end: int | None = None  # head plus the note, once compaction began

    def write(self, data: bytes) -> None:
        left = memoryview(data)
        try:
            while left:  # a nearly full disk takes part of a write, then refuses the rest
                written = self._file.write(left) or 0
                if not written:
                    raise OSError("nothing written")
                self.size += written
                left = left[written:]
        except OSError:
            self.dropped += len(left)
            return
        if self.cap > 0 and self.size > self.cap + self.cap // 4:
            self._compact()

    def _compact(self) -> None:
        from .units import format_size

        keep_tail = self.cap - self.cap // 2
        if self._prefix_end is None:
            note = self.NOTE % format_size(self.cap // 2).encode()
            self._prefix_end = self.cap // 2 + len(note)
            head_note = note
        else:
            head_note = b""
        try:
            with open(self.path, "rb") as reader:
                reader.seek(max(self.size - keep_tail, 0))
                tail = reader.read()
            cut_at = self._prefix_end - len(head_note)
            self.dropped += self.size - cut_at - len(tail)
            self._file.truncate(cut_at)
            self._file.write(head_note + tail)
            self.size = cut_at + len(head_note) + len(tail)
        except OSError:
            pass  # a full disk: the next compaction tries again

    def close(self) -> None:
        if self.cap > 0 and self.size > self.cap:
            self._compact()  # the log ends within its cap, not a quarter past it
        if self.dropped:
            from .units import format_size

            note = (
                f"\n[nbrunner: {format_size(self.dropped)} of output were dropped from this "
                f"log (max_log_size = {format_size(self.cap)})]\n"
            )
            with suppress(OSError):
                self._file.write(note.encode())
        with suppress(OSError):
            self._file.close()


@dataclass(frozen=True)
class ServiceLink:
    """How a recorder reaches its home's service: handed in by the service (its `wake` and
    `notify`), so this module, which the service imports, never imports the service."""

    wake: Callable[[str], None]
    notify: Callable[[str], None]  # starts a service first when none lives

    def tell(self, home: str, started: bool) -> None:
        """Wake the service; at the end, start one if none lives (it was killed meanwhile),
        so the exit code is recorded with nothing else alive. A home that is gone has no
        one to tell."""
        with suppress(OSError, subprocess.SubprocessError):
            (self.wake if started else self.notify)(home)


class Guard:
    """What the recorder enforces itself, where the child is held, so that no stalled,
    killed or busy service can let a run overrun: its timeout (paused time excluded, as the
    service writes it in runs/ID.pause) and its memory limit. A stop is SIGTERM to the tree,
    then SIGKILL after the grace period; how it was meant to end goes to the exit record."""

    def __init__(self, spec: RecorderSpec, files: RunFiles, child_pid: int) -> None:
        self.spec, self.files, self.child_pid = spec, files, child_pid
        self.started = time.monotonic()
        self.next_memory_check = self.started + MEMORY_CHECK_S
        self.ending: dict[str, str] | None = None
        self.kill_at: float | None = None
        self.peak = 0
        self._tree: Any = None

    def wait_s(self) -> float | None:
        """How long the recorder may sleep on its child before the next check; None: for
        good (nothing to enforce: the common case costs no wake-up at all)."""
        now = time.monotonic()
        if self.kill_at is not None:
            wakes = [self.kill_at]
        elif self.ending is not None:
            return None
        else:
            wakes = [self._deadline(now)] if self.spec.timeout is not None else []
            wakes += [self.next_memory_check] if self.spec.memory_limit else []
        return max(min(wakes) - now, 0.0) if wakes else None

    def _deadline(self, now: float) -> float:
        paused_s, paused = paused_for(self.files, now)
        if paused:
            return now + PAUSED_CHECK_S
        return self.started + float(self.spec.timeout or 0) + paused_s

    def check(self) -> None:
        now = time.monotonic()
        if self.kill_at is not None:
            self.kill_at = self._escalate(now)
            return
        if self.spec.timeout is not None and now >= self._deadline(now):
            self._stop("timed_out", timeout_reason(self.spec.timeout))
        elif self.spec.memory_limit and now >= self.next_memory_check:
            self.next_memory_check = now + MEMORY_CHECK_S
            over = self._memory_verdict()
            if over is not None:
                self._stop("failed", over)

    def _memory_verdict(self) -> str | None:
        tree = self._process_tree()
        usage = tree.sample() if tree is not None else None
        if usage is None:
            return None
        self.peak = max(self.peak, usage.rss)
        return memory_verdict(usage.rss, self.peak, self.spec.memory_limit)

    def _stop(self, status: str, reason: str) -> None:
        self.ending = {"status": status, "reason": reason}
        self.kill_at = self._escalate(time.monotonic())

    def _escalate(self, now: float) -> float:
        from .backends.tree import escalate, stop_signal

        signal = stop_signal(self.child_pid, self._members)
        return escalate(signal, self.kill_at, self.spec.grace, now)

    def _members(self) -> list[Any]:
        tree = self._process_tree()
        return tree.members(rescan=True) if tree is not None else []

    def _process_tree(self) -> Any:
        if self._tree is None:
            from .backends.tree import ProcessTree

            self._tree = ProcessTree.of(self.child_pid)
        return self._tree
