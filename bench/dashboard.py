"""6. Dashboard at scale: 100 active runs and 100,000 history rows.

Store statements are counted per thread with `sqlite3.Connection.set_trace_callback`, set on
every connection the store opens; bytes to the browser are counted by a recording comm that
replaces ipywidgets' default one (the JSON of every message's data plus its binary buffers).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from nbrunner import Runner

from . import nbrun
from .context import Context
from .harness import (
    Metrics,
    Section,
    Target,
    adopts_orphans,
    interleave,
    isolate,
    median,
    percentile,
)

PAGE = 50
UI = "dashboard (`nbrunner.ui`)"
METHOD = """\
One process: a store seeded with finished runs, a runner (max_concurrent 100) with 100
`sleep 600` runs all running. *Runner tick*: CPU of the runner's loop thread (psutil
per-thread times) over a window divided by the ticks in it, and the store statements that
thread ran per tick. *History*: `runner.history(limit=50, offset=k)` (a DataFrame) and
`runner.count()`, and `store.history` (records, no DataFrame) as a floor, interleaved.
*Dashboard tick*: `Dashboard(runner, start=False).refresh()` called every 0.25 s from one
thread; its own `time.thread_time()` per tick (`last_tick_cpu_s`), the store statements that
thread ran in the tick, and the bytes of the comm messages it sent. The first tick (building
100 cards) and a tick that reloads the history page (runs ended) are reported apart from the
steady ticks."""


class _Statements:
    """Counts store statements per thread (BEGIN/COMMIT and PRAGMAs not counted)."""

    def __init__(self) -> None:
        self.by_thread: Counter[int] = Counter()
        self.lock = threading.Lock()

    def install(self) -> None:
        connect = sqlite3.connect

        def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            conn = connect(*args, **kwargs)
            conn.set_trace_callback(self.record)
            return conn

        sqlite3.connect = traced  # type: ignore[assignment]

    def record(self, statement: str) -> None:
        if statement.lstrip().split(" ", 1)[0].upper() in ("SELECT", "INSERT", "UPDATE", "DELETE"):
            with self.lock:
                self.by_thread[threading.get_ident()] += 1

    def of(self, ident: int | None) -> int:
        return self.by_thread[ident or 0]


class _Wire:
    """A comm that counts what it would send to the browser."""

    sent_bytes = 0
    messages = 0

    @classmethod
    def install(cls) -> None:
        import comm
        from comm.base_comm import BaseComm

        class RecordingComm(comm.DummyComm):  # type: ignore[misc, name-defined]
            def publish_msg(
                self,
                msg_type: str,
                data: Any = None,
                metadata: Any = None,
                buffers: Any = None,
                **keys: Any,
            ) -> None:
                cls.messages += 1
                cls.sent_bytes += len(json.dumps(data, default=str)) + sum(
                    len(memoryview(b).cast("B")) for b in buffers or ()
                )

        assert issubclass(RecordingComm, BaseComm)
        comm.create_comm = RecordingComm


def _loop_thread_cpu() -> tuple[int | None, Callable[[], float]]:
    import psutil

    loop = next((t for t in threading.enumerate() if t.name == "nbrunner-loop"), None)
    native, ident = (loop.native_id, loop.ident) if loop else (None, None)

    def cpu() -> float:
        for thread in psutil.Process().threads():
            if thread.id == native:
                return float(thread.user_time + thread.system_time)
        return 0.0

    return ident, cpu


def _runner_tick(statements: _Statements, seconds: float, tick_s: float) -> Metrics:
    ident, cpu = _loop_thread_cpu()
    cpu0, count0 = cpu(), statements.of(ident)
    time.sleep(seconds)
    ticks = seconds / tick_s
    return {
        "runner_tick_ms": 1000 * (cpu() - cpu0) / ticks,
        "runner_queries": (statements.of(ident) - count0) / ticks,
    }


def _timed(call: Callable[[], object]) -> Metrics:
    start = time.perf_counter()
    call()
    return {"ms": 1000 * (time.perf_counter() - start)}


def _history_variants(runner: Runner, rows: int) -> dict[str, Callable[[], Metrics]]:
    from nbrunner.store import HistoryFilter

    everything = HistoryFilter.build()
    variants: dict[str, Callable[[], Metrics]] = {}
    for offset in (0, rows // 2, max(0, rows - PAGE)):
        variants[f"history page, offset {offset:,}|nbrunner"] = partial(
            _timed, partial(runner.history, limit=PAGE, offset=offset)
        )
        variants[f"history page, offset {offset:,}|floor (store.history)"] = partial(
            _timed, partial(runner.store.history, everything, PAGE, offset)
        )
    variants["history page, status=failed|nbrunner"] = partial(
        _timed, partial(runner.history, status="failed", limit=PAGE)
    )
    variants["history page, text search matching nothing (full scan)|nbrunner"] = partial(
        _timed, partial(runner.history, text="no such text", limit=PAGE)
    )
    variants["count(), no filter|nbrunner"] = partial(_timed, runner.count)
    variants["count(), status=failed|nbrunner"] = partial(
        _timed, partial(runner.count, status="failed")
    )
    return variants


def _dashboard_ticks(runner: Runner, statements: _Statements, ticks: int) -> Metrics:
    board = nbrun.dashboard(runner, start=False)
    me = threading.get_ident()

    def tick() -> tuple[float, int, int]:
        queries, sent = statements.of(me), _Wire.sent_bytes
        board.refresh()
        return 1000 * board.last_tick_cpu_s, statements.of(me) - queries, _Wire.sent_bytes - sent

    first = tick()
    steady = []
    for _ in range(ticks):
        time.sleep(0.25)
        steady.append(tick())
    board.history.invalidate()  # as when runs end: the next tick reloads the history page
    reload = tick()
    board.close()
    return {
        "first_ms": first[0],
        "first_queries": first[1],
        "first_bytes": first[2],
        "tick_ms": median([t[0] for t in steady]),
        "tick_p95_ms": percentile([t[0] for t in steady], 95),
        "tick_queries": median([t[1] for t in steady]),
        "tick_queries_max": max(t[1] for t in steady),
        "tick_bytes": median([t[2] for t in steady]),
        "reload_ms": reload[0],
        "reload_queries": reload[1],
        "reload_bytes": reload[2],
    }


@adopts_orphans
def at_scale(home: Path, rows: int, active: int, repeats: int, ticks: int) -> dict[str, Any]:
    statements = _Statements()
    statements.install()
    ui = nbrun.dashboard_available()
    if ui:
        _Wire.install()
    runner = nbrun.runner(nbrun.seeded_home(home, rows), active)
    name = nbrun.register(runner, "sleeper", ["sleep", "600"])
    runs = [runner.submit(name) for _ in range(active)]
    nbrun.wait_running(runs, timeout=300)
    time.sleep(1.0)
    result: dict[str, Any] = {
        "runner": [_runner_tick(statements, 5.0, 0.2) for _ in range(repeats)]
    }
    history = interleave(_history_variants(runner, rows), repeats * 3)
    result["history"] = {name: [m["ms"] for m in runs_] for name, runs_ in history.items()}
    if ui:
        result["ui"] = [_dashboard_ticks(runner, statements, ticks) for _ in range(repeats)]
    nbrun.cancel_all(runs)
    runner.close()
    return result


def run(ctx: Context) -> Section:
    rows, active = ctx.size(100_000, 10_000), ctx.size(100, 20)
    repeats, ticks = ctx.size(3, 1), ctx.size(40, 8)
    section = Section("dashboard", "6. Dashboard at scale", METHOD)
    data = isolate("dashboard:at_scale", rows=rows, active=active, repeats=repeats, ticks=ticks)
    _runner_figures(section, data["runner"])
    for key, values in data["history"].items():
        label, variant = key.split("|")
        fig = next((f for f in section.figures if f.label == label), None) or section.figure(
            label, "ms"
        )
        for value in values:
            fig.add(variant, value)
    section.notes.append(
        f"{rows:,} history rows, {active} active runs, {repeats} repeat(s) "
        f"({3 * repeats} for history queries), {ticks} steady dashboard ticks per repeat."
    )
    page = max(f.median() for f in section.figures if f.label.startswith("history page, offset"))
    section.targets.append(
        Target(
            "history page ≤ 20 ms (no filter, any offset)",
            f"{page:.1f} ms (slowest offset)",
            page <= 20,
            "see the offset rows: OFFSET walks the skipped rows, so deep pages cost more; "
            "keyset paging (`WHERE id < last_id ORDER BY id DESC LIMIT 50`) costs the same "
            "on every page.",
        )
    )
    if "ui" in data:
        _ui_figures(section, data["ui"])
    else:
        section.notes.append(
            "**Gap:** `nbrunner.ui` could not be imported, so the dashboard's tick CPU, "
            "queries and bytes per tick are not measured here."
        )
    return section


def _runner_figures(section: Section, runs: list[Metrics]) -> None:
    for key, label, unit in (
        ("runner_tick_ms", "runner tick CPU (loop thread)", "ms/tick"),
        ("runner_queries", "runner tick store statements", "per tick"),
    ):
        fig = section.figure(label, unit)
        for metrics in runs:
            fig.add("nbrunner", metrics[key])


def _ui_figures(section: Section, runs: list[Metrics]) -> None:
    rows = (
        ("tick_ms", "dashboard tick CPU, steady", "ms"),
        ("tick_p95_ms", "dashboard tick CPU, steady p95", "ms"),
        ("reload_ms", "dashboard tick CPU, with history reload", "ms"),
        ("first_ms", "dashboard first tick (builds the cards)", "ms"),
        ("tick_queries", "store statements per steady tick (median)", "per tick"),
        ("tick_queries_max", "store statements per steady tick (max)", "per tick"),
        ("reload_queries", "store statements, tick with history reload", "per tick"),
        ("tick_bytes", "bytes to the browser per steady tick", "bytes"),
        ("reload_bytes", "bytes to the browser, tick with history reload", "bytes"),
        ("first_bytes", "bytes to the browser, first tick", "bytes"),
    )
    figs = {}
    for key, label, unit in rows:
        figs[key] = section.figure(label, unit)
        for metrics in runs:
            figs[key].add("nbrunner", metrics[key])
    tick = max(figs["tick_ms"].median(), figs["reload_ms"].median())
    queries = max(figs["tick_queries_max"].median(), figs["reload_queries"].median())
    section.targets += [
        Target(
            "dashboard tick ≤ 30 ms (steady and reload ticks)",
            f"{tick:.1f} ms",
            tick <= 30,
            "see the tick rows: which kind of tick is over, and the statements it ran.",
        ),
        Target(
            "1 store query per tick",
            f"at most {queries:.0f}",
            queries <= 1,
            "steady ticks run none, but every 5 s the summary reloads with 6 statements (one "
            "`count()` per ended status, then a history page), and a tick that reloads the "
            "history page runs 2 (`count()`, then the page). One each would need the status "
            "counts in one `GROUP BY status` query, and the total folded into the page query "
            "(`count(*) OVER ()`) or kept up to date from the change feed.",
        ),
    ]
