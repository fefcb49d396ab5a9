"""SQLite store: runs, config and registered modules, the single truth for every process.

Every write is one IMMEDIATE transaction that bumps a global version and stamps it on the
rows it changed, so any reader gets "everything changed since version v" in one indexed
query. Writers are serialized by SQLite across processes, which is what lets a claim check
the limits and take the slot atomically.

SQLite's busy timeout only bounds one wait; a lock held longer (a backup tool, a process
stuck in a transaction) makes the write fail. So taking the write lock is retried with
backoff for the store's `patience`, then fails with one line (StoreUnavailable). The home
is private: the store holds module env (tokens), the logs whatever runs print.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from . import checks, wakes
from . import config as config_mod
from .errors import (
    BadInput,
    CorruptStore,
    InvalidHome,
    OperationFailed,
    StoreUnavailable,
    UnknownRun,
)
from .models import JSON_FIELDS, RunRecord, SlotHolder
from .notebook import argv_for_run
from .states import ACTIVE, HOLDS_SLOT, SOURCES, RunStatus, check_transition

DB_NAME = "nbrunner.db"
BUSY_TIMEOUT_MS = 1000  # one wait for the write lock; retried up to the store's patience
DEFAULT_PATIENCE_S = 30.0
_FIELD_TO_COLUMN = {"group": "grp"}
_STATUS_COUNTS = "SELECT status, count(*) AS n FROM runs GROUP BY status"

MIGRATIONS: Sequence[str] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta VALUES ('version', 0);
    CREATE TABLE config (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE modules (name TEXT PRIMARY KEY, spec TEXT NOT NULL, registered_at REAL);
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        module TEXT NOT NULL,
        params TEXT NOT NULL,
        argv TEXT NOT NULL,
        env TEXT NOT NULL,
        cwd TEXT,
        status TEXT NOT NULL,
        exit_code INTEGER,
        reason TEXT,
        pid INTEGER,
        supervisor_pid INTEGER,
        priority INTEGER NOT NULL DEFAULT 0,
        submitted_at REAL NOT NULL,
        claimed_at REAL,
        claimed_by INTEGER,
        started_at REAL,
        ended_at REAL,
        timeout REAL,
        log_path TEXT NOT NULL,
        restart_of INTEGER,
        gpus TEXT,
        cores TEXT,
        on_done TEXT,
        resources TEXT,
        grp TEXT,
        after TEXT,
        backend TEXT NOT NULL DEFAULT 'local',
        backend_ref TEXT,
        control TEXT,
        cpu_time REAL,
        peak_rss INTEGER,
        cpu_percent REAL,
        rss INTEGER,
        gpu_memory INTEGER,
        warning TEXT,
        version INTEGER NOT NULL
    );
    CREATE INDEX runs_version ON runs(version);
    CREATE INDEX runs_queue ON runs(status, priority DESC, id);
    CREATE INDEX runs_module ON runs(module, id);
    CREATE INDEX runs_status ON runs(status, id);
    """,
    # the cluster a Ray run went to, so its watch, a restart and the record agree
    "ALTER TABLE runs ADD COLUMN backend_address TEXT",
    # when the per-run supervisor took the run over (dropped below, with the supervisor)
    "ALTER TABLE runs ADD COLUMN taken_at REAL",
    # the submitter's environment, captured at submit and shared by the runs that have it;
    # how the service is stopping a run (so a later service finishes the job); the log cap;
    # a module's choice to leave its leftover processes running
    """
    CREATE TABLE environments (id INTEGER PRIMARY KEY, digest TEXT UNIQUE NOT NULL,
                               env TEXT NOT NULL);
    ALTER TABLE runs ADD COLUMN env_id INTEGER;
    ALTER TABLE runs ADD COLUMN ending TEXT;
    ALTER TABLE runs ADD COLUMN log_dropped INTEGER;
    ALTER TABLE runs ADD COLUMN keep_leftovers INTEGER NOT NULL DEFAULT 0
    """,
    # the sweep a run belongs to: a tag of its own, so a sweep's runs can still share a
    # queue group (and its limit) with other runs
    """
    ALTER TABLE runs ADD COLUMN sweep TEXT;
    CREATE INDEX runs_sweep ON runs(sweep, id)
    """,
    # how a run's sweep prunes it (nbrunner.pruning); the code it ran, captured as it
    # started (nbrunner.provenance)
    """
    ALTER TABLE runs ADD COLUMN prune TEXT;
    ALTER TABLE runs ADD COLUMN provenance TEXT
    """,
    # how many more times a run lost to a reboot (or a lost recorder) is queued again; the
    # service looks for such runs every pass: indexed, that costs 0.01 ms, not 2.5 ms
    # among 1,000 lost runs
    """
    ALTER TABLE runs ADD COLUMN retry_lost INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX runs_status_retry ON runs(status, retry_lost)
    """,
    # left by the per-run supervisors the service replaced: nothing writes or reads them
    # (DROP COLUMN needs SQLite 3.35, 2021)
    """
    ALTER TABLE runs DROP COLUMN supervisor_pid;
    ALTER TABLE runs DROP COLUMN taken_at
    """,
)


class NewerStore(OperationFailed):
    """The store's schema is newer than this nbrunner knows: refused, never written."""


def encode_column(column: str, value: Any) -> Any:
    """A field's value as the store keeps it (JSON text for lists and mappings)."""
    if column in JSON_FIELDS and value is not None:
        return json.dumps(value)
    if isinstance(value, RunStatus):
        return value.value
    return value


def _assignments(values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The SET list of an UPDATE of these fields, and their values by column as stored."""
    encoded = {}
    for key, value in values.items():
        column = _FIELD_TO_COLUMN.get(key, key)
        encoded[column] = encode_column(column, value)
    return ", ".join(f"{column} = ?" for column in encoded), encoded


class Transaction:
    """One IMMEDIATE transaction; the version is bumped once, on the first write.

    It keeps what it wrote as decoded rows (`written`, from its transitions), unless it
    wrote anything it did not decode (`undecoded`): a reader of the change feed that had
    read up to `prior` knows all there is to know at `version` without reading it back.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.version: int | None = None
        self.written: dict[int, RunRecord] = {}
        self.undecoded = False

    @property
    def prior(self) -> int | None:
        """The version before this transaction's first write (None: it wrote nothing)."""
        return None if self.version is None else self.version - 1

    def stamp(self) -> int:
        """This transaction's version, for a write that is not a transition."""
        self.undecoded = True
        return self._stamp()

    def _stamp(self) -> int:
        """Bump the global version on first use."""
        if self.version is None:
            row = self.conn.execute(
                "UPDATE meta SET value = value + 1 WHERE key = 'version' RETURNING value"
            ).fetchone()
            self.version = int(row[0])
        return self.version

    def get(self, run_id: int) -> RunRecord:
        row = self.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise UnknownRun(run_id)
        return RunRecord.from_row(row)

    def status(self, run_id: int) -> RunStatus:
        """The run's state alone: decoding a whole row costs ten times its read."""
        row = self.conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise UnknownRun(run_id)
        return RunStatus(row[0])

    def update(self, run_id: int, **values: Any) -> None:
        self.undecoded = True
        self._write(run_id, values)

    def fresh(self, known: RunRecord) -> RunRecord:
        """The run as it is now: `known` itself while no one wrote it since (one read of
        its version; the service's own record of a run usually is), else read anew."""
        row = self.conn.execute("SELECT version FROM runs WHERE id = ?", (known.id,)).fetchone()
        return known if row is not None and row[0] == known.version else self.get(known.id)

    def transition(
        self, run_id: int, target: RunStatus, known: RunRecord | None = None, **values: Any
    ) -> RunRecord:
        """Move the run to `target`, in one statement that matches only a state `target`
        may follow; else the error says what the run is and what it may become. Given the
        run as `known` (its last version), the new record is made from it where the row is
        still that version, rather than read back."""
        changes = {"status": target, **values}
        if known is not None and known.id == run_id and known.status in SOURCES[target]:
            record = self._write_over(known, changes)
            if record is not None:
                return record
        rows = self._write(run_id, changes, SOURCES[target])
        if not rows:
            check_transition(run_id, self.get(run_id).status, target)  # raises: it says why
            raise AssertionError(f"run {run_id} changed while becoming {target.value}")
        record = RunRecord.from_row(rows[0])
        self.written[run_id] = record
        return record

    def _write_over(self, known: RunRecord, values: dict[str, Any]) -> RunRecord | None:
        """Write `values` where the run is still `known`: the record it is now, or None."""
        assignments, encoded = _assignments(values)
        row = self.conn.execute(
            f"UPDATE runs SET {assignments}, version = ? WHERE id = ? AND version = ? "
            "RETURNING version",
            (*encoded.values(), self._stamp(), known.id, known.version),
        ).fetchone()
        if row is None:
            return None
        record = known.updated(encoded | {"version": row[0]})
        self.written[known.id] = record
        return record

    def _write(
        self, run_id: int, values: dict[str, Any], sources: frozenset[RunStatus] | None = None
    ) -> list[Any]:
        assignments, encoded = _assignments(values)
        where, guard = "id = ?", [s.value for s in sources or ()]
        if sources is not None:
            where += f" AND status IN ({', '.join('?' * len(guard))})"
        return self.conn.execute(
            f"UPDATE runs SET {assignments}, version = ? WHERE {where} RETURNING *",
            (*encoded.values(), self._stamp(), run_id, *guard),
        ).fetchall()

    def select(self, where: str, params: Iterable[Any] = (), tail: str = "") -> list[RunRecord]:
        sql = f"SELECT * FROM runs WHERE {where} {tail}"
        return [RunRecord.from_row(r) for r in self.conn.execute(sql, tuple(params))]

    def holding_slot(self) -> list[RunRecord]:
        return self.select(_status_in(HOLDS_SLOT))

    def slot_holders(self) -> list[SlotHolder]:
        rows = self.conn.execute(
            f"SELECT {SlotHolder.COLUMNS} FROM runs WHERE {_status_in(HOLDS_SLOT)}"
        )
        return [SlotHolder.from_columns(row) for row in rows]

    def statuses(self, run_ids: Iterable[int]) -> dict[int, RunStatus]:
        ids = list(run_ids)
        rows = self.conn.execute(
            f"SELECT id, status FROM runs WHERE id IN ({', '.join('?' * len(ids))})", ids
        )
        return {run_id: RunStatus(status) for run_id, status in rows}

    def config(self) -> dict[str, Any]:
        values = dict(config_mod.DEFAULTS)
        for key, text in self.conn.execute("SELECT key, value FROM config"):
            values[key] = config_mod.decode(text)
        return values


def _header_schema(path: Path) -> int:
    """The schema version a store file says it has, read without writing anything (no
    -wal or -shm file is made); 0 for a missing or unreadable file. Read through SQLite:
    closing a plain descriptor of the file would drop every POSIX lock this process's
    SQLite connections hold on it."""
    if not path.is_file():
        return 0
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro&immutable=1", uri=True)
        try:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0  # the real open says what is wrong with it


def _refuse_newer(path: Path, schema: int) -> None:
    """A store written by a newer nbrunner is left alone: this code would misread it."""
    if schema > len(MIGRATIONS):
        from . import __version__

        raise NewerStore(
            f"the store {path} was written by a newer nbrunner (schema {schema}; nbrunner "
            f"{__version__} knows up to {len(MIGRATIONS)}); upgrade nbrunner "
            "(pip install -U nbrunner) or use another home; nothing was changed"
        )


def _status_in(statuses: Iterable[RunStatus]) -> str:
    names = ", ".join(f"'{s.value}'" for s in sorted(statuses))
    return f"status IN ({names})"


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # not ours, or a platform without modes
        os.chmod(path, 0o700)


def _private_file(path: Path) -> None:
    """Create path readable by its owner only. An existing store is only chmod-ed: closing
    a descriptor of a file would drop every POSIX lock this process's SQLite holds on it."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        with contextlib.suppress(OSError):
            os.chmod(path, 0o600)


def default_patience() -> float:
    """How long a write waits for the lock: NBRUNNER_STORE_PATIENCE seconds, else 30."""
    return config_mod.seconds_from_env("NBRUNNER_STORE_PATIENCE", DEFAULT_PATIENCE_S)


class Store:
    """Thread-safe: each thread gets its own connection to the same file."""

    def __init__(self, home: Path | str, patience: float | None = None) -> None:
        self.home = Path(home)
        self.logs_dir = self.home / "logs"
        self.runs_dir = self.home / "runs"
        self.path = self.home / DB_NAME
        self.listeners = self.home / wakes.LISTENERS
        _refuse_newer(self.path, _header_schema(self.path))  # before anything is written
        try:
            for directory in (self.logs_dir, self.runs_dir, self.home):
                _private_dir(directory)
        except OSError as exc:  # a file in the way, or no permission
            raise InvalidHome(
                f"home {self.home} cannot be used ({exc.strerror}); give a directory "
                f"(a missing one is created) with --home or NBRUNNER_HOME"
            ) from None
        _private_file(self.path)  # SQLite gives its -wal and -shm files the same mode
        self.patience = default_patience() if patience is None else patience
        self._local = threading.local()
        try:
            self._migrate()
        except sqlite3.OperationalError as exc:  # locked or unreachable: not the file's fault
            raise self._unavailable(exc) from None
        except sqlite3.DatabaseError as exc:  # "file is not a database", "... malformed"
            raise CorruptStore(self.path, exc) from None

    # -- connections and transactions ------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def write(self) -> Iterator[Transaction]:
        """One IMMEDIATE transaction; StoreUnavailable if it cannot be had or kept. Once
        committed, the clients listening for changes are rung."""
        conn = self._conn()
        self._begin(conn)
        try:
            yield Transaction(conn)
            conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise self._unavailable(exc) from None
            raise
        wakes.ring(self.listeners)

    def _begin(self, conn: sqlite3.Connection) -> None:
        """Take the write lock, retrying with backoff for the store's patience."""
        deadline = time.monotonic() + self.patience
        delay = 0.01
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if time.monotonic() >= deadline:
                    raise self._unavailable(exc) from None
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _unavailable(self, exc: sqlite3.Error) -> StoreUnavailable:
        what = str(exc)
        if "locked" in what or "busy" in what:
            return StoreUnavailable(
                f"the store {self.path} stayed locked by another process for "
                f"{self.patience:g} s; try again, or find what holds it (a backup tool, a "
                "hung process)"
            )
        return StoreUnavailable(f"the store {self.path} could not be written ({what})")

    def _migrate(self) -> None:
        conn = self._conn()
        if self.schema_version == len(MIGRATIONS):
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            _refuse_newer(self.path, current)
            for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
                for statement in filter(str.strip, script.split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @property
    def schema_version(self) -> int:
        return int(self._conn().execute("PRAGMA user_version").fetchone()[0])

    # -- runs --------------------------------------------------------------------------------
    def insert_runs(
        self,
        runs: Sequence[dict[str, Any]],
        environment: dict[str, str] | None = None,
        *,
        also: Callable[[Transaction], None] | None = None,
    ) -> list[int]:
        """Queue runs in one transaction, with the submitter's environment; their ids.
        `also` writes more in the same transaction (what the new runs replace)."""
        ids: list[int] = []
        now = time.time()
        with self.write() as tx:
            env_id = _environment_id(tx, environment) if environment is not None else None
            logs_dir = self.run_logs_dir(tx.config())
            for values in runs:
                values = {"env_id": env_id, **values}
                row = {"status": RunStatus.QUEUED, "submitted_at": now, "log_path": "", **values}
                columns = [_FIELD_TO_COLUMN.get(k, k) for k in row]
                cursor = tx.conn.execute(
                    f"INSERT INTO runs ({', '.join(columns)}, version) "
                    f"VALUES ({', '.join('?' * len(columns))}, ?)",
                    (
                        *(encode_column(c, v) for c, v in zip(columns, row.values(), strict=True)),
                        tx.stamp(),
                    ),
                )
                run_id = int(cursor.lastrowid or 0)
                tx.conn.execute(
                    "UPDATE runs SET log_path = ? WHERE id = ?",
                    (str(logs_dir / f"{run_id}.log"), run_id),
                )
                notebook_argv = argv_for_run(row.get("argv", []), logs_dir / f"{run_id}.log")
                if notebook_argv is not None:  # its executed notebook beside its log
                    tx.update(run_id, argv=notebook_argv)
                ids.append(run_id)
            if also is not None:
                also(tx)
        return ids

    def get(self, run_id: int) -> RunRecord:
        return Transaction(self._conn()).get(run_id)

    def select(self, where: str, params: Iterable[Any] = ()) -> list[RunRecord]:
        """Runs matching a WHERE clause, read without taking the write lock."""
        return Transaction(self._conn()).select(where, params)

    def run_logs_dir(self, settings: dict[str, Any]) -> Path:
        """Where new runs' logs go: the `logs_dir` setting (another disk), else HOME/logs.
        Runs keep the log_path they were given, so changing it moves no old log."""
        if not settings.get("logs_dir"):
            return self.logs_dir
        directory = Path(settings["logs_dir"])
        try:
            _private_dir(directory)
        except OSError as exc:  # unplugged, or no permission
            raise InvalidHome(
                f"logs_dir {directory} cannot be used ({exc.strerror}); plug its disk in, or "
                "set another with `nbrunner config logs_dir DIR` (an empty value: HOME/logs)"
            ) from None
        return directory

    def environment(self, env_id: int | None) -> dict[str, str] | None:
        """A stored submitter's environment (None for runs from before they were kept)."""
        if env_id is None:
            return None
        row = self._conn().execute("SELECT env FROM environments WHERE id = ?", (env_id,))
        found = row.fetchone()
        return json.loads(found[0]) if found else None

    def transition(self, run_id: int, target: RunStatus, **values: Any) -> RunRecord:
        with self.write() as tx:
            return tx.transition(run_id, target, **values)

    def update(self, run_id: int, **values: Any) -> None:
        with self.write() as tx:
            tx.update(run_id, **values)

    def version(self) -> int:
        row = self._conn().execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        return int(row[0])

    def changes_since(self, version: int) -> tuple[list[RunRecord], int]:
        """Runs written after `version`, and the version to ask from next time: the
        store's own, which a write that changed no run (a setting) moves too."""
        # one statement, one snapshot: the store's version, beside each run changed since
        # (a single row of NULLs where none was); a dashboard's tick is this one query
        rows = (
            self._conn()
            .execute(
                "SELECT meta.value AS store_version, runs.* FROM meta "
                "LEFT JOIN runs ON runs.version > ? WHERE meta.key = 'version' "
                "ORDER BY runs.version",
                (version,),
            )
            .fetchall()
        )
        records = [RunRecord.from_row(r) for r in rows if r["id"] is not None]
        return records, int(rows[0]["store_version"])

    def active(self) -> list[RunRecord]:
        rows = (
            self._conn()
            .execute(f"SELECT * FROM runs WHERE {_status_in(ACTIVE)} ORDER BY id")
            .fetchall()
        )
        return [RunRecord.from_row(r) for r in rows]

    def holding_slot(self) -> list[RunRecord]:
        return Transaction(self._conn()).holding_slot()

    def history(self, query: HistoryFilter, limit: int = 50, offset: int = 0) -> list[RunRecord]:
        """One page, newest first; LIMIT/OFFSET in SQL, so a page costs the same at any size."""
        for name, value in (("limit", limit), ("offset", offset)):
            checks.whole_number(value, name, 0, checks.SQLITE_INT_MAX)
        where, params = query.where()
        rows = self._conn().execute(
            f"SELECT * FROM runs WHERE {where} ORDER BY id DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [RunRecord.from_row(r) for r in rows]

    def count_history(self, query: HistoryFilter) -> int:
        where, params = query.where()
        return int(
            self._conn().execute(f"SELECT count(*) FROM runs WHERE {where}", params).fetchone()[0]
        )

    def overview(self, recent: int) -> tuple[dict[str, int], list[tuple[Any, ...]]]:
        """Runs by status, and the newest runs' (id, module, status, duration): one statement,
        so a dashboard refresh stays one store round trip."""
        counts: dict[str, int] = {}
        runs: list[tuple[Any, ...]] = []
        for kind, run_id, module, status, value in self._conn().execute(
            f"SELECT 'count', NULL, NULL, status, n FROM ({_STATUS_COUNTS}) "
            "UNION ALL SELECT * FROM (SELECT 'run', id, module, status, ended_at - started_at "
            "FROM runs ORDER BY id DESC LIMIT ?)",
            (recent,),
        ):
            if kind == "count":
                counts[status] = value
            else:
                runs.append((run_id, module, status, value))
        return counts, runs

    def metrics(self) -> dict[str, Any]:
        """Counters over the whole history, in two aggregate queries."""
        conn = self._conn()
        by_status = {s.value: 0 for s in RunStatus}
        by_status.update(dict(conn.execute(_STATUS_COUNTS)))
        modules = {
            module: {"runs": runs, "mean_wait_s": wait, "mean_run_s": run_time}
            for module, runs, wait, run_time in conn.execute(
                "SELECT module, count(*), avg(started_at - submitted_at), "
                "avg(ended_at - started_at) FROM runs GROUP BY module ORDER BY module"
            )
        }
        return {
            "runs_by_status": by_status,
            "queued": by_status["queued"],
            "running": sum(by_status[s.value] for s in HOLDS_SLOT),
            "total": sum(by_status.values()),
            "modules": modules,
        }

    # -- removing old runs (see nbrunner.prune) ---------------------------------------------
    def ended_before(self, cutoff: float, statuses: Sequence[str]) -> list[RunRecord]:
        """Runs in `statuses` that ended before `cutoff`, except those an active run still
        waits on (its `after`)."""
        marks = ", ".join("?" * len(statuses))
        rows = self._conn().execute(
            f"SELECT * FROM runs WHERE status IN ({marks}) "
            "AND coalesce(ended_at, submitted_at) < ? AND id NOT IN (SELECT w.value FROM runs "
            f"AS a, json_each(a.after) AS w WHERE a.{_status_in(ACTIVE)}) ORDER BY id",
            (*statuses, cutoff),
        )
        return [RunRecord.from_row(r) for r in rows]

    def delete_runs(self, run_ids: Sequence[int]) -> None:
        """Delete ended runs, and the stored environments no run uses any more. A run that
        is active again (restarted in between) is kept."""
        with self.write() as tx:
            for start in range(0, len(run_ids), 500):  # SQLite bounds a statement's variables
                chunk = run_ids[start : start + 500]
                tx.conn.execute(
                    f"DELETE FROM runs WHERE id IN ({', '.join('?' * len(chunk))}) "
                    f"AND NOT {_status_in(ACTIVE)}",
                    chunk,
                )
            tx.conn.execute(
                "DELETE FROM environments WHERE id NOT IN "
                "(SELECT env_id FROM runs WHERE env_id IS NOT NULL)"
            )
            tx.stamp()  # readers of the change feed look again

    def mentions(self, text: str) -> bool:
        """Whether any run's argv or env contains `text` (a snapshot's unique name)."""
        found = self._conn().execute(
            "SELECT 1 FROM runs WHERE instr(argv, ?) > 0 OR instr(env, ?) > 0 LIMIT 1",
            (text, text),
        )
        return found.fetchone() is not None

    def free_bytes(self) -> int:
        """Bytes of free pages in the store, which VACUUM would give back to the disk."""
        conn = self._conn()
        pages = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages) * int(conn.execute("PRAGMA page_size").fetchone()[0])

    def vacuum(self) -> bool:
        """Rewrite the store without its free pages; False if another process was using
        it (it is tried again at the next prune)."""
        try:
            self._conn().execute("VACUUM")
            self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError:
            return False
        return True

    # -- config ------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return Transaction(self._conn()).config()

    def set_config(self, key: str, value: Any) -> Any:
        parsed = config_mod.parse_value(key, value)
        with self.write() as tx:
            tx.conn.execute(
                "INSERT INTO config VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, config_mod.encode(parsed)),
            )
            tx.stamp()  # a config change wakes every reader of the change feed
        return parsed

    # -- registered modules -----------------------------------------------------------------
    def save_module(self, name: str, spec: dict[str, Any]) -> None:
        with self.write() as tx:
            tx.conn.execute(
                "INSERT INTO modules VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE "
                "SET spec = excluded.spec, registered_at = excluded.registered_at",
                (name, json.dumps(spec), time.time()),
            )

    def delete_module(self, name: str) -> bool:
        with self.write() as tx:
            return tx.conn.execute("DELETE FROM modules WHERE name = ?", (name,)).rowcount > 0

    def sweeps(self, limit: int = 50) -> list[tuple[str, str, int]]:
        """The newest sweeps: (id, module, runs), newest first."""
        rows = self._conn().execute(
            "SELECT sweep, min(module), count(*) FROM runs WHERE sweep IS NOT NULL "
            "GROUP BY sweep ORDER BY max(id) DESC LIMIT ?",
            (limit,),
        )
        return [(sweep, module, int(n)) for sweep, module, n in rows]

    def registered_modules(self) -> dict[str, str]:
        """The modules registered in code: each one's spec as JSON text, which a reader that
        keeps what it made of a text need not decode again."""
        rows = self._conn().execute("SELECT name, spec FROM modules ORDER BY name")
        return dict(rows.fetchall())


@dataclass(frozen=True)
class HistoryFilter:
    """Filters for history pages, turned into one parameterised WHERE clause."""

    statuses: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None
    text: str | None = None
    groups: tuple[str, ...] = ()
    sweeps: tuple[str, ...] = ()

    @classmethod
    def build(
        cls,
        status: str | Sequence[str] | None = None,
        module: str | Sequence[str] | None = None,
        since: Any = None,
        until: Any = None,
        text: str | None = None,
        group: str | Sequence[str] | None = None,
        sweep: str | Sequence[str] | None = None,
    ) -> HistoryFilter:
        statuses = _as_tuple(status, "status")
        for name in statuses:
            try:
                RunStatus(name)
            except ValueError:
                known = ", ".join(s.value for s in RunStatus)
                raise BadInput(f"unknown status {name!r}; use one of {known}") from None
        return cls(
            statuses,
            _as_tuple(module, "module"),
            _timestamp(since, "since"),
            _timestamp(until, "until"),
            checks.utf8(text, "search text") if text else None,
            _as_tuple(group, "group"),
            _as_tuple(sweep, "sweep"),
        )

    def keep_groups(self, records: Iterable[RunRecord]) -> list[RunRecord]:
        """Those of the records in this filter's groups (all when it names none)."""
        return [r for r in records if not self.groups or r.group in self.groups]

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.statuses:
            clauses.append(f"status IN ({', '.join('?' * len(self.statuses))})")
            params += self.statuses
        if self.modules:
            clauses.append(f"module IN ({', '.join('?' * len(self.modules))})")
            params += self.modules
        if self.since is not None:
            clauses.append("submitted_at >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append("submitted_at < ?")
            params.append(self.until)
        if self.groups:
            clauses.append(f"grp IN ({', '.join('?' * len(self.groups))})")
            params += self.groups
        if self.sweeps:
            clauses.append(f"sweep IN ({', '.join('?' * len(self.sweeps))})")
            params += self.sweeps
        if self.text:
            clauses.append(
                "(instr(params, ?) > 0 OR instr(module, ?) > 0 OR instr(reason, ?) > 0"
                f" OR instr(grp, ?) > 0 OR EXISTS ({_SHOWN_PARAM}))"
            )
            params += [self.text] * 5
        return " AND ".join(clauses) or "1", params


# A param as listings show it (lr=0.001, amp=True), so --text "lr=0.001" finds what it shows.
_SHOWN_PARAM = (
    "SELECT 1 FROM json_each(runs.params) WHERE instr(key || '=' || CASE type "
    "WHEN 'true' THEN 'True' WHEN 'false' THEN 'False' WHEN 'null' THEN 'None' "
    "ELSE value END, ?) > 0"
)


def _environment_id(tx: Transaction, environment: dict[str, str]) -> int:
    """Environments are stored once each: runs submitted from one process share a row."""
    text = json.dumps(environment, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()
    tx.conn.execute(
        "INSERT OR IGNORE INTO environments (digest, env) VALUES (?, ?)", (digest, text)
    )
    row = tx.conn.execute("SELECT id FROM environments WHERE digest = ?", (digest,)).fetchone()
    return int(row[0])


def _as_tuple(value: str | Sequence[str] | None, what: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    return tuple(checks.utf8(v, what) for v in value)


def _timestamp(value: Any, name: str) -> float | None:
    """Epoch seconds from a number, a datetime, a date or an ISO-8601 string."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc).timestamp()
    try:
        return _timestamp(datetime.fromisoformat(str(value).replace("Z", "+00:00")), name)
    except ValueError:
        raise BadInput(
            f"{name} must be a date or time like 2026-01-31 or 2026-01-31T12:00, got {value!r}"
        ) from None
