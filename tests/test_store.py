"""The SQLite store: schema, the change feed, history paging, config."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from nbrunner.errors import BadInput, InvalidConfig, InvalidTransition, UnknownRun
from nbrunner.models import RunRecord
from nbrunner.states import TRANSITIONS, RunStatus
from nbrunner.store import MIGRATIONS, HistoryFilter, Store


def _rows(n: int, module: str = "m") -> list[dict]:
    return [{"module": module, "params": {"i": i}, "argv": ["true"], "env": {}} for i in range(n)]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path)


def test_a_new_store_is_at_the_latest_schema_in_wal_mode(store: Store) -> None:
    assert store.schema_version == len(MIGRATIONS)
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reopening_does_not_migrate_again(store: Store) -> None:
    store.insert_runs(_rows(2))
    again = Store(store.home)
    assert again.schema_version == len(MIGRATIONS) and again.count_history(HistoryFilter()) == 2


def test_the_change_feed_returns_only_what_changed_since_a_version(store: Store) -> None:
    _, second = store.insert_runs(_rows(2))
    _, version = store.changes_since(0)
    assert store.changes_since(version) == ([], version)
    store.transition(second, RunStatus.STARTING)
    changed, newer = store.changes_since(version)
    assert [r.id for r in changed] == [second] and newer > version
    store.set_config("max_concurrent", 4)
    assert store.version() > newer  # config changes move the version too
    # and the feed with it: a reader that waits for "a write since" sees a setting change
    assert store.changes_since(newer) == ([], store.version())


def test_a_transaction_keeps_what_it_wrote_so_its_writer_need_not_read_it_back(
    store: Store,
) -> None:
    first, second = store.insert_runs(_rows(2))
    before = store.version()
    with store.write() as tx:
        started = tx.transition(first, RunStatus.STARTING)
    assert (tx.prior, tx.version) == (before, store.version())
    assert tx.written == {first: started} and not tx.undecoded
    assert store.changes_since(before)[0] == [started]  # what the feed would have said
    with store.write() as tx:
        tx.update(second, priority=5)
    assert tx.undecoded  # written but not decoded: the feed must be read
    with store.write() as tx:
        tx.get(first)
    assert tx.prior is None and tx.written == {}  # read only


def test_a_transition_from_a_known_record_makes_what_reading_the_row_back_would(
    store: Store,
) -> None:
    """The service moves runs it already holds: the new record is made from the one it
    knows while the row is still that version, and read back only once someone wrote it."""
    first, second = store.insert_runs(_rows(2))
    queued = store.get(first)
    with store.write() as tx:
        assert tx.fresh(queued) is queued  # unchanged: not read again
        claimed = tx.transition(
            first, RunStatus.STARTING, known=queued, gpus=["0"], cores=(2, 3), group="g"
        )
        running = tx.transition(first, RunStatus.RUNNING, known=claimed, pid=7, started_at=1.5)
    assert claimed == dataclasses.replace(
        queued, status=RunStatus.STARTING, gpus=["0"], cores=[2, 3], group="g", version=tx.version
    )
    assert running == store.get(first) and tx.written == {first: running}

    stale = store.get(second)
    store.update(second, control="cancel", reason="asked")  # written by someone else
    with store.write() as tx:
        assert tx.fresh(stale) == store.get(second) != stale
        cancelled = tx.transition(second, RunStatus.CANCELLED, known=stale, ended_at=2.0)
    assert cancelled == store.get(second)
    assert (cancelled.control, cancelled.reason) == ("cancel", "asked")  # not the stale record's
    with pytest.raises(InvalidTransition, match="is cancelled and cannot become running"):
        store.transition(second, RunStatus.RUNNING, known=stale)


def test_a_decoded_row_is_the_record_its_fields_make(store: Store) -> None:
    """Rows are decoded without RunRecord's __init__: they must still be exactly it."""
    (run_id,) = store.insert_runs(
        [
            {
                "module": "m",
                "params": {"lr": 0.1},
                "argv": ["python", "-c", "pass"],
                "env": {"A": "1"},
                "resources": {"gpus": 1},
                "group": "g",
            }
        ]
    )
    store.transition(run_id, RunStatus.STARTING, gpus=["0"], cores=[1], claimed_at=1.0)
    record = store.get(run_id)
    rebuilt = RunRecord(**{f.name: getattr(record, f.name) for f in dataclasses.fields(record)})
    assert record == rebuilt and vars(record) == vars(rebuilt)  # no column left over
    assert (record.status, record.group, record.gpus, record.cores) == (
        RunStatus.STARTING,
        "g",
        ["0"],
        [1],
    )
    assert record.params == {"lr": 0.1} and record.resources["gpus"] == 1
    assert record.ending is None and record.keep_leftovers is False


def test_a_row_without_newer_columns_gets_their_defaults_and_one_without_its_id_is_refused() -> (
    None
):
    conn = sqlite3.connect(":memory:")
    conn.row_factory = sqlite3.Row
    known = "7 AS id, 'm' AS module, 'queued' AS status, 1.0 AS submitted_at, 'x.log' AS log_path"
    row = conn.execute(f"SELECT {known}, 'g' AS grp, 1 AS retired_column").fetchone()
    record = RunRecord.from_row(row)
    assert (record.id, record.group, record.status) == (7, "g", RunStatus.QUEUED)
    assert record.params == {} and record.argv == [] and record.ending is None
    assert record.priority == 0 and record.backend == "local"
    assert "retired_column" not in vars(record)
    without_id = conn.execute("SELECT 'm' AS module, 'queued' AS status").fetchone()
    with pytest.raises(ValueError, match="no id column"):
        RunRecord.from_row(without_id)


def test_refused_transitions_change_nothing(store: Store) -> None:
    (run_id,) = store.insert_runs(_rows(1))
    version = store.version()
    with pytest.raises(InvalidTransition, match="is queued and cannot become succeeded"):
        store.transition(run_id, RunStatus.SUCCEEDED)
    assert store.get(run_id).status is RunStatus.QUEUED and store.version() == version


def test_unknown_run(store: Store) -> None:
    with pytest.raises(UnknownRun, match="unknown run id 99"):
        store.get(99)
    with pytest.raises(UnknownRun, match="unknown run id 99"):
        store.transition(99, RunStatus.CANCELLED)


@pytest.mark.parametrize("source", list(RunStatus))
def test_every_transition_the_table_allows_is_written_and_every_other_refused(
    store: Store, source: RunStatus
) -> None:
    for target in RunStatus:
        (run_id,) = store.insert_runs(_rows(1))
        with store.write() as tx:  # put it there, table or not
            tx.conn.execute("UPDATE runs SET status = ? WHERE id = ?", (source.value, run_id))
        if target in TRANSITIONS[source]:
            moved = store.transition(run_id, target, reason="why")
            assert (
                (moved.status, moved.reason)
                == (target, "why")
                == (store.get(run_id).status, store.get(run_id).reason)
            )
        else:
            with pytest.raises(InvalidTransition, match=f"is {source.value} and cannot become"):
                store.transition(run_id, target, reason="why")
            assert (store.get(run_id).status, store.get(run_id).reason) == (source, None)


def test_history_filters_and_pages_in_sql(store: Store) -> None:
    store.insert_runs(_rows(5, "a") + _rows(5, "b"))
    store.transition(3, RunStatus.CANCELLED)
    newest_b = store.history(HistoryFilter.build(module="b"), limit=2)
    assert [r.id for r in newest_b] == [10, 9]
    assert [r.id for r in store.history(HistoryFilter.build(module="b"), limit=2, offset=4)] == [6]
    assert [r.id for r in store.history(HistoryFilter.build(status="cancelled"))] == [3]
    assert store.count_history(HistoryFilter.build(status=["queued", "cancelled"])) == 10
    assert store.count_history(HistoryFilter.build(text='"i": 4')) == 2
    tomorrow = datetime.now(timezone.utc).replace(year=datetime.now().year + 1)
    assert store.count_history(HistoryFilter.build(until=tomorrow, since="2020-01-01")) == 10
    assert store.count_history(HistoryFilter.build(since=tomorrow.date())) == 0


def test_history_rejects_bad_filters(store: Store) -> None:
    with pytest.raises(BadInput, match="unknown status 'done'"):
        HistoryFilter.build(status="done")
    with pytest.raises(BadInput, match="since must be a date or time"):
        HistoryFilter.build(since="last tuesday")
    with pytest.raises(BadInput, match="offset must be a whole number ≥ 0"):
        store.history(HistoryFilter(), offset=-3)


def test_history_and_the_change_feed_search_never_scan(store: Store) -> None:
    """A page of one module's history, or the few changes since a version, costs the same in
    a store of a million runs as in a new one: SQLite searches for them, it never reads every
    run (whatever the indexes are called)."""
    where, params = HistoryFilter.build(module="a").where()
    queries = [
        (f"SELECT * FROM runs WHERE {where} ORDER BY id DESC LIMIT 50", params),
        ("SELECT * FROM runs WHERE version > ? ORDER BY version", [5]),
    ]
    conn = sqlite3.connect(store.path)
    for sql, values in queries:
        plan = [row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", values)]
        assert plan[0].startswith("SEARCH runs USING") and len(plan) == 1, (sql, plan)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("max_concurrent", "4", 4),
        ("paused", "yes", True),
        ("grace_period", "2.5", 2.5),
        ("group.gpu", 1, 1),
        ("backend", "ray", "ray"),
    ],
)
def test_config_values_are_typed(store: Store, key: str, value: object, expected: object) -> None:
    assert store.set_config(key, value) == expected
    assert store.config()[key] == expected


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("max_concurrent", 0, "max_concurrent must be a whole number ≥ 1, got 0"),
        ("max_concurrent", "lots", "got 'lots'"),
        ("paused", "perhaps", "paused must be true or false"),
        ("grace_period", -1, "grace_period must be a number of seconds ≥ 0"),
        ("backend", "k8s", "backend must be 'local' or 'ray'"),
        ("group.", 1, "unknown config key 'group.'"),
        ("colour", "blue", "unknown config key 'colour'; known keys: max_concurrent"),
    ],
)
def test_bad_config_is_refused_and_nothing_changes(
    store: Store, key: str, value: object, message: str
) -> None:
    before = store.config()
    with pytest.raises(InvalidConfig, match=message):
        store.set_config(key, value)
    assert store.config() == before


def test_registered_modules_persist(store: Store) -> None:
    store.save_module("x", {"command": ["true"]})
    found = Store(store.home).registered_modules()
    assert {name: json.loads(text) for name, text in found.items()} == {"x": {"command": ["true"]}}
    assert store.delete_module("x") and not store.delete_module("x")


def test_overview_counts_by_status_and_lists_the_newest_runs(store: Store) -> None:
    store.insert_runs(_rows(4))
    store.transition(2, RunStatus.CANCELLED)
    counts, newest = store.overview(recent=3)
    assert counts == {"queued": 3, "cancelled": 1}
    assert [(run_id, status) for run_id, _, status, _ in newest] == [
        (4, "queued"), (3, "queued"), (2, "cancelled")]  # fmt: skip


def test_a_store_written_by_the_first_schema_opens_and_keeps_its_history(tmp_path: Path) -> None:
    """tests/fixtures/store-v1.db was written by schema 1 (before Ray runs kept an address)."""
    import shutil

    shutil.copy(Path(__file__).parent / "fixtures" / "store-v1.db", tmp_path / "nbrunner.db")
    store = Store(tmp_path)
    assert store.schema_version == len(MIGRATIONS) > 1
    runs = store.history(HistoryFilter())
    assert [(r.id, r.status.value, r.exit_code) for r in runs] == [
        (3, "cancelled", None), (2, "failed", 3), (1, "succeeded", 0)]  # fmt: skip
    assert runs[1].params == {"epochs": 5} and runs[1].backend_address is None
    assert store.config()["max_concurrent"] == 4
    (new_id,) = store.insert_runs(_rows(1))
    assert new_id == 4 and store.version() > 3


def test_the_per_run_supervisors_columns_are_gone_from_old_and_new_stores(
    tmp_path: Path,
) -> None:
    import shutil

    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(Path(__file__).parent / "fixtures" / "store-v1.db", old / "nbrunner.db")
    for home in (old, tmp_path / "new"):
        rows = Store(home)._conn().execute("PRAGMA table_info(runs)").fetchall()
        columns = {row[1] for row in rows}
        assert "status" in columns and not {"supervisor_pid", "taken_at"} & columns


@pytest.mark.parametrize(
    ("given", "shown"),
    [("caf\udce9", "b'caf\\xe9'"), ("\ud800x", "'\\ud800x'")],  # from a terminal; from Python
)
def test_a_filter_that_is_not_utf8_is_one_clear_error(given: str, shown: str) -> None:
    for field, what in (("text", "search text"), ("module", "module"), ("sweep", "sweep")):
        with pytest.raises(BadInput) as refused:
            HistoryFilter.build(**{field: given})
        assert str(refused.value) == f"{what} must be UTF-8, got {shown}"
    assert HistoryFilter.build(text="café").text == "café"
