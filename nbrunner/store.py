"""SQLite store: runs, config and registered modules, the single truth for every process.

Every write is one IMMEDIATE transaction that bumps a global version and stamps it on the
rows it changed, so any reader gets "everything changed since version v" in one indexed
query. Writers are serialized by SQLite across processes, which is what lets a claim check
the limits and take the slot atomically.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from . import config as config_mod
from .errors import BadInput, UnknownRun
from .models import JSON_FIELDS, RunRecord
from .notebook import argv_for_run
from .states import ACTIVE, HOLDS_SLOT, RunStatus, check_transition

DB_NAME = "nbrunner.db"
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
    # the cluster a Ray run went to, so its supervisor, a restart and the record agree
    "ALTER TABLE runs ADD COLUMN backend_address TEXT",
    # when the supervisor took the run over: it may have been born long before (it serves
    # runs in turn), but never after
    "ALTER TABLE runs ADD COLUMN taken_at REAL",
)


def _encode(column: str, value: Any) -> Any:
    if column in JSON_FIELDS and value is not None:
        return json.dumps(value)
    if isinstance(value, RunStatus):
        return value.value
    return value


class Transaction:
    """One IMMEDIATE transaction; the version is bumped once, on the first write."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._version: int | None = None

    def stamp(self) -> int:
        """This transaction's version, bumping the global one on first use."""
        if self._version is None:
            self.conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'version'")
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
            self._version = int(row[0])
        return self._version

    def get(self, run_id: int) -> RunRecord:
        row = self.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise UnknownRun(run_id)
        return RunRecord.from_row(row)

    def update(self, run_id: int, **values: Any) -> None:
        columns = [_FIELD_TO_COLUMN.get(key, key) for key in values]
        assignments = ", ".join(f"{c} = ?" for c in columns)
        encoded = [_encode(c, v) for c, v in zip(columns, values.values(), strict=True)]
        self.conn.execute(
            f"UPDATE runs SET {assignments}, version = ? WHERE id = ?",
            (*encoded, self.stamp(), run_id),
        )

    def transition(self, run_id: int, target: RunStatus, **values: Any) -> RunRecord:
        current = self.get(run_id)
        check_transition(run_id, current.status, target)
        self.update(run_id, status=target, **values)
        return self.get(run_id)

    def select(self, where: str, params: Iterable[Any] = (), tail: str = "") -> list[RunRecord]:
        sql = f"SELECT * FROM runs WHERE {where} {tail}"
        return [RunRecord.from_row(r) for r in self.conn.execute(sql, tuple(params))]

    def holding_slot(self) -> list[RunRecord]:
        return self.select(_status_in(HOLDS_SLOT))

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


def _status_in(statuses: Iterable[RunStatus]) -> str:
    names = ", ".join(f"'{s.value}'" for s in sorted(statuses))
    return f"status IN ({names})"


class Store:
    """Thread-safe: each thread gets its own connection to the same file."""

    def __init__(self, home: Path | str) -> None:
        self.home = Path(home)
        self.logs_dir = self.home / "logs"
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.home / DB_NAME
        self._local = threading.local()
        self._migrate()

    # -- connections and transactions ------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 60000")
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
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield Transaction(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _migrate(self) -> None:
        conn = self._conn()
        if self.schema_version == len(MIGRATIONS):
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = conn.execute("PRAGMA user_version").fetchone()[0]
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
    def insert_runs(self, runs: Sequence[dict[str, Any]]) -> list[int]:
        """Queue runs in one transaction; returns their ids in order."""
        ids: list[int] = []
        now = time.time()
        with self.write() as tx:
            for values in runs:
                row = {"status": RunStatus.QUEUED, "submitted_at": now, "log_path": "", **values}
                columns = [_FIELD_TO_COLUMN.get(k, k) for k in row]
                cursor = tx.conn.execute(
                    f"INSERT INTO runs ({', '.join(columns)}, version) "
                    f"VALUES ({', '.join('?' * len(columns))}, ?)",
                    (
                        *(_encode(c, v) for c, v in zip(columns, row.values(), strict=True)),
                        tx.stamp(),
                    ),
                )
                run_id = int(cursor.lastrowid or 0)
                tx.conn.execute(
                    "UPDATE runs SET log_path = ? WHERE id = ?",
                    (str(self.logs_dir / f"{run_id}.log"), run_id),
                )
                notebook_argv = argv_for_run(row.get("argv", []), self.logs_dir / f"{run_id}.log")
                if notebook_argv is not None:  # its executed notebook beside its log
                    tx.update(run_id, argv=notebook_argv)
                ids.append(run_id)
        return ids

    def get(self, run_id: int) -> RunRecord:
        return Transaction(self._conn()).get(run_id)

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
        """Runs written after `version`, and the version to ask from next time."""
        rows = (
            self._conn()
            .execute("SELECT * FROM runs WHERE version > ? ORDER BY version", (version,))
            .fetchall()
        )
        records = [RunRecord.from_row(r) for r in rows]
        return records, max((r.version for r in records), default=version)

    def active(self) -> list[RunRecord]:
        rows = (
            self._conn()
            .execute(f"SELECT * FROM runs WHERE {_status_in(ACTIVE)} ORDER BY id")
            .fetchall()
        )
        return [RunRecord.from_row(r) for r in rows]

    def holding_slot(self) -> list[RunRecord]:
        return Transaction(self._conn()).holding_slot()

    def control(self, run_id: int) -> str | None:
        """The action requested of a run's supervisor (cancel, pause, resume), if any."""
        row = self._conn().execute("SELECT control FROM runs WHERE id = ?", (run_id,)).fetchone()
        return row[0] if row else None

    def history(self, query: HistoryFilter, limit: int = 50, offset: int = 0) -> list[RunRecord]:
        """One page, newest first; LIMIT/OFFSET in SQL, so a page costs the same at any size."""
        for name, value in (("limit", limit), ("offset", offset)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise BadInput(f"{name} must be a whole number ≥ 0, got {value!r}")
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

    def registered_modules(self) -> dict[str, dict[str, Any]]:
        rows = self._conn().execute("SELECT name, spec FROM modules ORDER BY name")
        return {name: json.loads(spec) for name, spec in rows}


@dataclass(frozen=True)
class HistoryFilter:
    """Filters for history pages, turned into one parameterised WHERE clause."""

    statuses: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None
    text: str | None = None

    @classmethod
    def build(
        cls,
        status: str | Sequence[str] | None = None,
        module: str | Sequence[str] | None = None,
        since: Any = None,
        until: Any = None,
        text: str | None = None,
    ) -> HistoryFilter:
        statuses = _as_tuple(status)
        for name in statuses:
            try:
                RunStatus(name)
            except ValueError:
                known = ", ".join(s.value for s in RunStatus)
                raise BadInput(f"unknown status {name!r}; use one of {known}") from None
        return cls(
            statuses,
            _as_tuple(module),
            _timestamp(since, "since"),
            _timestamp(until, "until"),
            text or None,
        )

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
        if self.text:
            clauses.append("(instr(params, ?) > 0 OR instr(module, ?) > 0 OR instr(reason, ?) > 0)")
            params += [self.text] * 3
        return " AND ".join(clauses) or "1", params


def _as_tuple(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)


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
