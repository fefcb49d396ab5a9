"""What a run's holder and the service share: the spec a run is held by, the small files
through which whoever holds it speaks to whichever service is alive, its capped log, and
the limits enforced where its child is held.

A run is held by the home's keeper (nbrunner.keeper) or by a recorder of its own (forked
from the service, or an interpreter spawned per run: Windows, until its CI job has run the
keeper), with the same code (nbrunner.holding). Its holder outlives the service: the service
may be killed at any moment and a later one adopts the run, so everything the holder learns
goes to files beside the store, written atomically:

    runs/ID.lock   held while the run is held: the proof that its holder is alive
    runs/ID.child  the child's pid and start marker, once it is started
    runs/ID.exit   the exit code, CPU time and peak memory (from the OS's own accounts) and
                   why it was stopped (or why the child could not start), once it has ended
    runs/ID.pause  written by the service as it pauses and resumes the run (paused time)
    runs/ID.spec   the run handed to the keeper, until the keeper takes it

The holder enforces what must hold whatever happens to the service, where the child is held:
the run's timeout (paused time excluded) and its memory limit (Guard). Cancels, pauses, GPU
shares and the store are the service's.
"""

from __future__ import annotations

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

    # Made once per run (the service looks at its exit file on every pass)
    @cached_property
    def lock(self) -> Path:
        return self.directory / f"{self.run_id}.lock"

    @cached_property
    def child(self) -> Path:
        return self.directory / f"{self.run_id}.child"

    @cached_property
    def exit(self) -> Path:
        return self.directory / f"{self.run_id}.exit"

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

    def recorder_alive(self) -> bool:
        return platform.is_locked(self.lock)

    def remove(self) -> None:
        for path in (self.spec, self.child, self.exit, self.pause, self.lock):
            with suppress(OSError):
                os.unlink(path)


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


def write_atomically(path: Path, data: dict[str, Any], patience: float | None = None) -> None:
    """Readers see the whole file or none of it. Retried (a full disk frees, a removed
    folder is made again) for `patience` seconds, then the last OSError is raised; for good
    when patience is None."""
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


def try_write_atomically(path: Path, data: dict[str, Any]) -> None:
    """One try at write_atomically; a removed folder is made again for the next."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(data))  # one write; json.dump encodes in pure Python
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
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
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
    then SIGKILL after the grace period; how it was meant to end goes to the exit file."""

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
