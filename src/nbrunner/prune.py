"""Removing old runs, so a home used for months does not fill its disk.

`prune` deletes ended runs older than an age: their records, logs, executed notebooks,
reported metrics and hook logs, and the stored environments and code snapshots no run uses
any more; it vacuums the store when that freed much of it. Active runs, and ended runs a queued run
still waits on (`after`), are never removed. The `retention` setting makes the service do
the same now and then (`Retention`), and `home_usage` says how much disk a home takes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .reporting import metrics_path
from .states import DONE, RunStatus
from .units import parse_age

if TYPE_CHECKING:
    from .models import RunRecord
    from .store import Store

# Ended badly: what --keep-failed keeps for someone to look into.
FAILURES = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.LOST})
# Vacuum when the store's free pages reach this share of it (and are worth the rewrite).
VACUUM_SHARE = 0.25
VACUUM_MIN_BYTES = 1_000_000
RETENTION_EVERY_S = 3600.0
SNAPSHOT_GRACE_S = 3600.0


def run_files(record: RunRecord, hook_logs: Path) -> list[Path]:
    """The files a run leaves behind: its log, executed notebook, metrics and hook log."""
    log = Path(record.log_path)
    return [
        log,
        log.with_suffix(".ipynb"),
        Path(metrics_path(str(log))),
        hook_logs / f"{record.id}.on_done.log",
    ]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@dataclass
class PruneReport:
    """What was (or, in a dry run, would be) removed."""

    runs: list[int] = field(default_factory=list)
    files: int = 0
    bytes_freed: int = 0  # files, plus what vacuuming gave back
    vacuumed: bool = False
    dry_run: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "runs": self.runs,
            "files": self.files,
            "bytes_freed": self.bytes_freed,
            "vacuumed": self.vacuumed,
            "dry_run": self.dry_run,
        }


def prune(
    store: Store, older_than_s: float, *, keep_failed: bool = False, dry_run: bool = False
) -> PruneReport:
    """Remove the runs that ended more than `older_than_s` seconds ago (see the module)."""
    keep = FAILURES if keep_failed else frozenset()
    statuses = sorted(s.value for s in DONE - keep)
    doomed = store.ended_before(time.time() - older_than_s, statuses)
    report = PruneReport(runs=[r.id for r in doomed], dry_run=dry_run)
    files = [p for r in doomed for p in run_files(r, store.logs_dir) if p.exists()]
    report.files = len(files)
    report.bytes_freed = sum(_size(p) for p in files)
    if dry_run:
        return report
    if doomed:
        store.delete_runs(report.runs)  # records first: no record points at a missing log
    for path in files:
        with contextlib.suppress(OSError):  # gone already, or held open on Windows
            path.unlink()
    report.files += _remove_unused_snapshots(store)
    if not doomed:
        return report
    freed = store.free_bytes()
    if freed >= VACUUM_MIN_BYTES and freed >= VACUUM_SHARE * _size(store.path):
        report.vacuumed = store.vacuum()
        report.bytes_freed += freed if report.vacuumed else 0
    return report


def _remove_unused_snapshots(store: Store) -> int:
    """Remove the code snapshots no remaining run uses; how many. A fresh one may belong to
    a submission being written right now, so only those older than an hour go."""
    from . import snapshot

    old = time.time() - SNAPSHOT_GRACE_S
    unused = [p for p in snapshot.unused(store.home, store.mentions) if p.stat().st_mtime < old]
    for path in unused:
        shutil.rmtree(path, ignore_errors=True)
    return len(unused)


class Retention:
    """The `retention` setting, applied by the service when it starts and hourly after."""

    def __init__(self, every_s: float | None = None) -> None:
        from .config import seconds_from_env

        self.every_s = (
            seconds_from_env("NBRUNNER_RETENTION_EVERY_S", RETENTION_EVERY_S)
            if every_s is None
            else every_s
        )
        self._next = 0.0

    @property
    def next_at(self) -> float:
        """When (monotonic) `apply` next has work to do."""
        return self._next

    def apply(self, store: Store) -> PruneReport | None:
        """Prune what the setting says, if it is set and the time has come."""
        now = time.monotonic()
        if now < self._next:
            return None
        self._next = now + self.every_s
        age = store.config().get("retention")
        return prune(store, parse_age(age, "retention")) if age else None


def _tree_size(directory: str) -> int:
    """Bytes of the files under directory (scandir: no Path per file; links not followed)."""
    total = 0
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    total += _tree_size(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    return total


def home_usage(home: Path, logs_dirs: Iterable[Path] = ()) -> int:
    """Bytes a home takes on disk: the home, and log directories kept elsewhere."""
    roots = {home.resolve()}
    for directory in logs_dirs:
        resolved = directory.resolve()
        if not any(resolved.is_relative_to(r) for r in roots):
            roots.add(resolved)
    return sum(_tree_size(str(root)) for root in roots)
