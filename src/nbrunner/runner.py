"""The Runner: the API a notebook, the CLI and the dashboard use, over the store.

A runner is a client: it validates and writes intents (submit, cancel, pause, config) in
one transaction each, and makes sure the home's service is alive to carry them out (see
nbrunner.service). It never claims, launches or repairs, so a kernel dying at any point
loses nothing it submitted.

Each process has one asyncio loop in a daemon thread of its own (a Proactor loop on Windows),
never the kernel's loop: a cell running blocking code must not stall it, and kernels
disagree about loop types. A runner's tick on that loop reads every change since the last
tick in one store query, resolves waiters and feeds listeners (the dashboard). While a wait
or a listener is there, every commit to the store rings the tick (nbrunner.wakes); else, and
in case a ring is lost, it reads every TICK_S.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from . import checks, contact, demo, snapshot, version
from .backends import check_backend
from .config import check_key
from .errors import BadInput, InvalidParameter, InvalidTransition, ModulesFileError
from .history import History, frame
from .logs import read_text
from .loopthread import LoopThread
from .models import RunRecord, again_row
from .modules import ModuleSpec, build_module, load_modules_file, lookup
from .provenance import code_changes, code_now
from .pruning import PruneRule
from .resources import Resources, machine_capacity
from .run import Run
from .scalars import read as read_scalars
from .states import RunStatus
from .store import HistoryFilter, Store
from .sweep import Sweep, grid_points, new_id, random_points
from .waiters import NotEnded, Waiters, poll_until_done
from .wakes import ChangeBell

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

# how often a runner reads the change feed unrung: what a lost ring delays a change by, and
# how stale the active runs of a runner nothing waits on may be (it listens only for waits
# and subscribers: a script submitting a batch is not woken by every commit)
TICK_S = 2.0
SERVICE_CHECK_S = 5.0  # while runs are active, a dead service is restarted this soon
QUEUED_CANCEL_WAIT_S = 10.0  # how long cancel() waits for the service to take a queued run out
Listener = Callable[[list[RunRecord]], None]


def default_home() -> Path:
    return Path(os.environ.get("NBRUNNER_HOME") or Path.home() / ".nbrunner").expanduser()


class Runner:
    """Submit, watch and control runs in one nbrunner home."""

    def __init__(
        self,
        home: str | Path | None = None,
        modules_file: str | Path | None = None,
        *,
        start: bool = True,
        tick: float = TICK_S,
        backend: str | None = None,
        address: str | None = None,
        keep_service: bool = True,
    ) -> None:
        """`backend` and `address` (a Ray dashboard URL) say where submissions go unless a
        submission says otherwise; without them, the `backend` and `ray.address` settings.
        `keep_service`: start the home's service if runs are waiting and none is alive.
        """
        self.home = Path(home).expanduser() if home else default_home()
        self.backend = check_backend(backend) if backend else None
        self.address = address
        self.store = Store(self.home)
        if version.warn_once(self.home, contact.info(self.home)):  # an upgrade's old service
            contact.wake(self.home)
        self.modules_file = self._modules_path(modules_file)
        self._modules_cache: tuple[float, dict[str, ModuleSpec]] | None = None
        self._registered_built: dict[tuple[str, str], ModuleSpec] = {}
        self._session_modules: dict[str, ModuleSpec] = {}  # register(persist=False)
        self._tick_s = tick
        self._active: dict[int, RunRecord] = {}
        self._version = 0
        self._waiters = Waiters()
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._loop: LoopThread | None = None
        self._wake: asyncio.Event | None = None
        self._task: concurrent.futures.Future[None] | None = None
        self._last_service_check = 0.0
        self._closed = False
        self._history = History(self.store)
        if keep_service:
            self._keep_service_alive()
        if start:
            self.start()

    def __repr__(self) -> str:
        state = "running" if self._task and not self._task.done() else "stopped"
        return f"<Runner home={str(self.home)!r} {state}, {len(self._active)} active runs>"

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start this runner's tick on the process's background loop (idempotent)."""
        if self._task is not None and not self._task.done():
            return
        self._closed = False
        self._refresh_all()
        self._loop = LoopThread.get()
        self._task = asyncio.run_coroutine_threadsafe(self._tick_forever(), self._loop.loop)

    def close(self) -> None:
        """Stop watching; runs go on under the home's service."""
        self._closed = True
        self._kick()
        if self._task is not None:
            try:
                self._task.result(timeout=5)
            except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
                self._task.cancel()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- modules -------------------------------------------------------------------------------
    def _modules_path(self, given: str | Path | None) -> Path:
        if given or os.environ.get("NBRUNNER_MODULES"):
            chosen = Path(given or os.environ["NBRUNNER_MODULES"]).expanduser()
            if not chosen.is_file():  # asked for by name: a typo must not read as "no modules"
                raise ModulesFileError(
                    f"modules file {chosen} does not exist; give the path of a modules.toml "
                    "(--modules FILE or NBRUNNER_MODULES)"
                )
            return chosen
        path = self.home / "modules.toml"
        if not path.exists():  # a new home starts with the demo modules, ready to edit
            demo.seed(self.home)
        return path

    def modules(self) -> dict[str, ModuleSpec]:
        """Modules from modules.toml, then those registered in code (which win on a clash),
        then this runner's session-only ones."""
        try:
            mtime = self.modules_file.stat().st_mtime
        except OSError:
            mtime = -1.0
        if self._modules_cache is None or self._modules_cache[0] != mtime:
            self._modules_cache = (mtime, load_modules_file(self.modules_file))
        # each registered spec built once per text: a sweep submits hundreds at a time
        built = self._registered_built
        self._registered_built = {
            (name, text): built.get((name, text))
            # Its files were checked when registered; one gone since fails its run, not all.
            or build_module(name, json.loads(text), check_files=False)
            for name, text in self.store.registered_modules().items()
        }
        registered = {name: spec for (name, _), spec in self._registered_built.items()}
        return dict(self._modules_cache[1]) | registered | self._session_modules

    def register(self, name: str, *, persist: bool = True, **spec: Any) -> ModuleSpec:
        """Add a module (the keys of a modules.toml table; cwd defaults to this process's).

        persist=True (the default) keeps it in the home's store: every process using this
        home (the CLI, the dashboard, other kernels) sees it until `unregister`, and it wins
        over a modules.toml table of the same name. persist=False keeps it in this runner
        only, for this session; its runs are queued and kept like any other.
        """
        spec.setdefault("cwd", os.getcwd())
        module = build_module(name, spec)
        if not persist:
            self._session_modules[name] = module
            return module
        stored = module.to_dict()
        del stored["name"]
        self.store.save_module(name, stored)
        return module

    def unregister(self, name: str) -> bool:
        """Remove a registered module (session-only or kept); True if there was one."""
        in_session = self._session_modules.pop(name, None) is not None
        return self.store.delete_module(name) or in_session

    # -- submitting ----------------------------------------------------------------------------
    def submit(
        self,
        module: str,
        params: Mapping[str, Any] | None = None,
        *,
        priority: int = 0,
        timeout: float | None = None,
        resources: Mapping[str, Any] | None = None,
        group: str | None = None,
        after: Sequence[int | Run] = (),
        copies: int = 1,
        backend: str | None = None,
    ) -> Run:
        """Validate and queue a run (or `copies` identical runs); returns the first."""
        return self.submit_many(
            module,
            [params or {}] * _positive_int("copies", copies),
            priority=priority,
            timeout=timeout,
            resources=resources,
            group=group,
            after=after,
            backend=backend,
        )[0]

    def submit_many(
        self,
        module: str,
        params_list: Iterable[Mapping[str, Any]],
        *,
        priority: int = 0,
        timeout: float | None = None,
        resources: Mapping[str, Any] | None = None,
        group: str | None = None,
        after: Sequence[int | Run] = (),
        backend: str | None = None,
        sweep: str | None = None,
        prune: str | PruneRule | None = None,
    ) -> list[Run]:
        """Queue one run per parameter set, all validated before any is queued."""
        spec = lookup(self.modules(), module)
        placement = self._placement(backend) | {"sweep": sweep}
        if prune is not None:  # the sweep's rule, kept on each of its runs
            placement["prune"] = PruneRule.parse(prune).to_dict()
        waits_for = [self._run_id(a) for a in after]
        rows = [
            spec.run_row(params, priority, timeout, resources, group, waits_for) | placement
            for params in params_list
        ]
        if rows and placement["backend"] == "local":
            needs = Resources.from_mapping(rows[0]["resources"])
            if not needs.fits_any_machine:  # the machine's facts are worth reading
                capacity = machine_capacity(
                    with_gpus=bool(needs.gpus or needs.gpu_memory),
                    gpu_mask=str(self.store.config()["gpus"]),
                )
                capacity.check_possible(needs)
            rows = snapshot.freeze(self.home, spec, rows)  # `snapshot = true`: code as of now
        ids = self.store.insert_runs(rows, contact.submitter_environment())
        self._notify()
        return [Run(self, run_id) for run_id in ids]

    def sweep(
        self,
        module: str,
        grid: Mapping[str, Sequence[Any]] | None = None,
        *,
        space: Mapping[str, Any] | None = None,
        count: int | None = None,
        seed: int | None = None,
        params: Mapping[str, Any] | None = None,
        name: str | None = None,
        prune: str | PruneRule | None = None,
        **options: Any,
    ) -> Sweep:
        """One run per point of a `grid` (every combination), or `count` points drawn from a
        `space` with `seed` (lists are choices, `(low, high)` and `(low, high, "log")` ranges),
        over the fixed `params`; tagged with one sweep id. `options` are submit_many's
        (priority, timeout, resources, group, after, backend): queue, limits and GPUs apply
        as to any run. All points are validated before any is queued.

        `prune="val_acc:max"` (or "loss:min", or a PruneRule with its grace steps and fewest
        peers) stops runs that are behind the sweep's other runs at the same step; they end
        `pruned` (see nbrunner.pruning).
        """
        if (grid is None) == (space is None):
            raise BadInput("give a sweep either grid={...} or space={...} with count=N")
        if grid is not None:
            points = grid_points(grid)
        else:
            points = random_points(space or {}, count if count is not None else 0, seed)
        sweep_id = self._new_sweep_name(name) if name else new_id(module)
        runs = self.submit_many(
            module,
            [{**(params or {}), **p} for p in points],
            sweep=sweep_id,
            prune=prune,
            **options,
        )
        return Sweep(sweep_id, runs)

    def _new_sweep_name(self, name: str) -> str:
        """A name no sweep has: re-running a cell would otherwise fold a second sweep into
        the first, and `best` would rank the two together."""
        checks.text(name, "name", 'a sweep name like "lr-search"', InvalidParameter)
        taken = self.count(sweep=name)
        if taken:
            raise InvalidParameter(
                f"a sweep named {name!r} exists already ({taken} runs): give another name, "
                "or none for a new id"
            )
        return name

    def sweeps(self, limit: int = 50) -> list[tuple[str, str, int]]:
        """The newest sweeps: (sweep id, module, number of runs), newest first."""
        return self.store.sweeps(limit)

    def _placement(self, backend: str | None, address: str | None = None) -> dict[str, Any]:
        """Where submitted runs go: as asked, else this runner's choice, else the settings.

        A Ray cluster is checked here, so one that cannot be reached fails the submission
        (nothing is queued) rather than each run.
        """
        settings = self.store.config()
        chosen = check_backend(backend or self.backend or str(settings["backend"]))
        if chosen != "ray":
            return {"backend": chosen}
        from .backends.ray import check_cluster

        url = check_cluster(address or self.address or str(settings["ray.address"]))
        return {"backend": chosen, "backend_address": url}

    def _run_id(self, run: int | Run) -> int:
        run_id = run.id if isinstance(run, Run) else _parse_id(run)
        self.store.get(run_id)  # unknown ids fail here, before anything is queued
        return run_id

    def _notify(self) -> None:
        """An intent was written: the service must be alive to act on it, and look now."""
        contact.notify(self.home)

    def _keep_service_alive(self) -> None:
        """Runs in the store but no service (it was killed): start one to adopt them."""
        self._last_service_check = time.monotonic()
        if not contact.is_running(self.home) and self.store.active():
            contact.ensure_running(self.home)

    # -- one run -------------------------------------------------------------------------------
    def get(self, run_id: int | str) -> Run:
        run_id = _parse_id(run_id)
        self.store.get(run_id)
        return Run(self, run_id)

    def cancel(self, run_id: int | str) -> RunRecord:
        """Queued: removed from the queue. Started: the service stops the whole tree.
        Either way the service does it (and runs the module's on_done hook); a queued run's
        record is returned once it has left the queue (or after QUEUED_CANCEL_WAIT_S)."""
        run_id = _parse_id(run_id)
        with self.store.write() as tx:
            record = tx.get(run_id)
            if record.is_done:
                raise InvalidTransition(
                    f"run {run_id} has already ended ({record.status.value}); nothing to cancel"
                )
            tx.update(run_id, control="cancel")
            record = tx.get(run_id)
        self._notify()
        deadline = time.monotonic() + QUEUED_CANCEL_WAIT_S
        while record.status is RunStatus.QUEUED and time.monotonic() < deadline:
            time.sleep(0.01)  # one pass of a woken service: milliseconds
            record = self.store.get(run_id)
        return record

    def pause(self, run_id: int | str) -> RunRecord:
        """Suspend a running run's whole tree; it keeps its slot and resources."""
        return self._request(run_id, "pause", RunStatus.RUNNING)

    def resume(self, run_id: int | str) -> RunRecord:
        return self._request(run_id, "resume", RunStatus.PAUSED)

    def _request(self, run_id: int | str, action: str, required: RunStatus) -> RunRecord:
        run_id = _parse_id(run_id)
        with self.store.write() as tx:
            record = tx.get(run_id)
            if record.status is not required:
                raise InvalidTransition(
                    f"run {run_id} is {record.status.value}; only a {required.value} run "
                    f"can be asked to {action}"
                )
            if record.backend != "local":
                raise InvalidTransition(
                    f"run {run_id} runs on {record.backend}; only local runs can {action}"
                )
            tx.update(run_id, control=action)
            record = tx.get(run_id)
        self._notify()
        return record

    def move_to_front(self, run_id: int | str) -> RunRecord:
        """Make a queued run the next to start, ahead of every other queued run."""
        run_id = _parse_id(run_id)
        with self.store.write() as tx:
            record = tx.get(run_id)
            if record.status is not RunStatus.QUEUED:
                raise InvalidTransition(
                    f"run {run_id} is {record.status.value}; only queued runs can move"
                )
            top = tx.conn.execute(
                "SELECT max(priority) FROM runs WHERE status = 'queued' AND id != ?", (run_id,)
            ).fetchone()[0]
            if top is not None and top >= record.priority:
                tx.update(run_id, priority=top + 1)
            record = tx.get(run_id)
        self._notify()
        return record

    def set_priority(self, run_id: int | str, priority: int) -> RunRecord:
        """Give a queued run another priority (higher starts first)."""
        run_id, priority = _parse_id(run_id), checks.priority(priority)
        with self.store.write() as tx:
            record = tx.get(run_id)
            if record.status is not RunStatus.QUEUED:
                raise InvalidTransition(
                    f"run {run_id} is {record.status.value}; only a queued run's priority "
                    f"can change"
                )
            tx.update(run_id, priority=priority)
            record = tx.get(run_id)
        self._notify()
        return record

    def on_done(self, run_id: int | str, callback: Callable[[RunRecord], Any]) -> None:
        """Call callback(record) once the run ends (at once if it already has).

        It runs on the runner's thread: keep it short, and hand widget updates to the UI.
        """
        if not self.running:
            self.start()
        self._done_future(_parse_id(run_id)).add_done_callback(lambda f: callback(f.result()))

    def restart(
        self,
        run_id: int | str,
        params: Mapping[str, Any] | None = None,
        *,
        priority: int | None = None,
    ) -> Run:
        """A new run of the same module, params and settings; restart_of names the old one.

        `params` changes some of them (checked against the module as it is now), `priority`
        gives the new run its own.
        """
        old = self.store.get(_parse_id(run_id))
        row = again_row(old)
        if params:
            spec = lookup(self.modules(), old.module)
            values = spec.validate_params({**old.params, **params})
            row |= {"params": values, "argv": spec.argv(values)}
        if priority is not None:
            row["priority"] = checks.priority(priority)
        row |= self._placement(old.backend, old.backend_address)
        (new_id,) = self.store.insert_runs([row])
        self._notify()
        return Run(self, new_id)

    def code_changed_since(self, run_id: int | str) -> str | None:
        """How the code a run ran (its provenance) differs from that code now: another
        commit, or other uncommitted changes; None if the same, or not known."""
        ran = self.get(run_id).record.provenance
        return code_changes(ran, code_now(ran))

    def logs(self, run_id: int | str, tail: int | None = None, raw: bool = False) -> str:
        """The run's log: its last `tail` lines, or all of it up to 8 MB (a longer one starts
        with a note saying what is not shown); progress-bar redraws collapsed unless raw."""
        if tail is not None:
            tail = checks.whole_number(tail, "tail", 0, checks.SQLITE_INT_MAX)
        return read_text(self.store.get(_parse_id(run_id)).log_path, tail=tail, raw=raw)

    # -- waiting -------------------------------------------------------------------------------
    def _done_future(self, run_id: int) -> concurrent.futures.Future[RunRecord]:
        future = self._waiters.add(run_id)
        self._kick()  # the tick listens for changes from now on
        record = self.store.get(run_id)  # after registering, so no ending slips between
        if record.is_done:
            self._waiters.resolve(record)
        return future

    @overload
    def wait(self, run_id: int | str | Run, timeout: float | None = None) -> RunRecord: ...

    @overload
    def wait(
        self, run_id: Iterable[int | str | Run], timeout: float | None = None
    ) -> list[RunRecord]: ...

    def wait(
        self, run_id: int | str | Run | Iterable[int | str | Run], timeout: float | None = None
    ) -> RunRecord | list[RunRecord]:
        """Block until the run ends, or each of several (a list of ids or runs, a Sweep):
        their records, in the order given. TimeoutError if not all have ended after `timeout`
        seconds in all."""
        if not isinstance(run_id, int | str | Run):
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                return [
                    self.wait(
                        one, None if deadline is None else max(deadline - time.monotonic(), 0)
                    )
                    for one in list(run_id)
                ]
            except NotEnded as late:  # said with the time given for all, not what was left
                raise NotEnded(late.run_id, timeout) from None
        run_id = run_id.id if isinstance(run_id, Run) else _parse_id(run_id)
        if not self.running:
            return poll_until_done(self.store, run_id, timeout)
        future = self._done_future(run_id)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            self._waiters.drop(run_id, future)
            raise NotEnded(run_id, timeout) from None

    async def wait_async(self, run_id: int | str, timeout: float | None = None) -> RunRecord:
        """Await the run's end from any event loop (a notebook cell's included)."""
        run_id = _parse_id(run_id)
        if not self.running:
            self.start()
        done = self._done_future(run_id)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(done), timeout)
        except asyncio.TimeoutError:
            self._waiters.drop(run_id, done)
            raise NotEnded(run_id, timeout) from None

    # -- listings ------------------------------------------------------------------------------
    def snapshot(self) -> list[RunRecord]:
        """Active runs as of the last tick, in submission order (no store query)."""
        with self._lock:
            return sorted(self._active.values(), key=lambda r: r.id)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call listener(changed_records) from the runner's loop; returns an unsubscribe."""
        self._listeners.append(listener)
        self._kick()  # the tick listens for changes from now on
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def active(self, group: str | Sequence[str] | None = None) -> pd.DataFrame:
        """Queued, starting, running and paused runs (of these groups, if given)."""
        contact.watching(self.home)  # its cpu and memory columns are sampled while read
        return frame(HistoryFilter.build(group=group).keep_groups(self.store.active()))

    def history(
        self,
        status: str | Sequence[str] | None = None,
        module: str | Sequence[str] | None = None,
        since: Any = None,
        until: Any = None,
        text: str | None = None,
        limit: int = 50,
        offset: int = 0,
        group: str | Sequence[str] | None = None,
        sweep: str | Sequence[str] | None = None,
        metric: str | None = None,
        best: str | None = None,
        sort: str | None = None,
    ) -> pd.DataFrame:
        """One page of runs, newest first, filtered and paged in SQL.

        `metric` adds its last and best reported values (`loss_last`, `loss_best`; `best`:
        "min" or "max", else guessed from the name: acc, auc, f1, score... are maximized).
        `sort` orders the runs before paging: a column, a param or a metric's name (its last
        value), `-NAME` descending (`sort="-val_acc"`); runs without a value come last.
        """
        query = HistoryFilter.build(status, module, since, until, text, group, sweep)
        records, columns = self.history_page(query, limit, offset, metric, best, sort)
        table = frame(records)
        for column, values in columns.items():
            table[column] = values
        return table

    def history_page(
        self,
        query: HistoryFilter,
        limit: int = 50,
        offset: int = 0,
        metric: str | None = None,
        best: str | None = None,
        sort: str | None = None,
        strict: bool = False,
    ) -> tuple[list[RunRecord], dict[str, list[float]]]:
        """The runs of one history page and the metric columns beside them (History.page)."""
        return self._history.page(query, limit, offset, metric, best, sort, strict)

    def best(
        self, metric: str, best: str | None = None, **filters: Any
    ) -> tuple[RunRecord, float] | None:
        """The run whose last reported `metric` is best ("max" or "min", else guessed from
        the name), among the runs `filters` select (history's: sweep=, group=, status=...),
        with that value; None if none of them reported it yet."""
        return self._history.best(metric, best, **filters)

    def check_sweeps(self, sweeps: Sequence[str]) -> None:
        """An unknown sweep id is a typo, not an empty sweep."""
        self._history.check_sweeps(sweeps)

    def scalars(
        self, run_ids: int | str | Iterable[int | str], names: Iterable[str] | None = None
    ) -> pd.DataFrame:
        """What the runs reported (`nbrunner.report`, or `nbrunner:metric` log lines): one
        row per point and metric, columns run, step, time, name, value."""
        ids = [run_ids] if isinstance(run_ids, int | str) else list(run_ids)
        return read_scalars([self.store.get(_parse_id(i)) for i in ids], names)

    def compare(
        self,
        run_ids: Iterable[int | str] = (),
        metric: str | None = None,
        *,
        sweep: str | None = None,
        **options: Any,
    ) -> Any:
        """A live chart of one metric, a line per run (these runs, or a sweep's), in a cell."""
        from .ui.compare import CompareView

        return CompareView.standalone(
            self, [_parse_id(i) for i in run_ids], metric, sweep=sweep, **options
        )

    def count(self, **filters: Any) -> int:
        """How many runs match; takes the same filters as `history`."""
        return self.store.count_history(HistoryFilter.build(**filters))

    def overview(self, recent: int = 200) -> tuple[dict[str, int], pd.DataFrame]:
        """Runs by status, and the newest `recent` runs' durations, in one store query."""
        import pandas as pd

        counts, runs = self.store.overview(recent)
        return counts, pd.DataFrame(runs, columns=["id", "module", "status", "duration_s"])

    def metrics(self) -> dict[str, Any]:
        """Counters: runs by status, queued and running now, mean wait and run time per module."""
        contact.watching(self.home)  # a reader of figures: the runs' trees are sampled
        return self.store.metrics()

    def prune(self, older_than: str, *, keep_failed: bool = False, dry_run: bool = False) -> Any:
        """Remove runs that ended longer ago than `older_than` (an age like "30d") with
        their logs; never an active run. A PruneReport (see nbrunner.prune)."""
        from .prune import parse_age, prune

        age = parse_age(older_than, "older_than")
        return prune(self.store, age, keep_failed=keep_failed, dry_run=dry_run)

    def disk_usage(self, logs_dir: str | None = None) -> int:
        """Bytes this home takes on disk, with logs kept elsewhere (the `logs_dir` setting,
        read from the store unless given)."""
        from .prune import home_usage

        elsewhere = self.store.config().get("logs_dir") if logs_dir is None else logs_dir
        return home_usage(self.home, [Path(elsewhere)] if elsewhere else [])

    def dashboard(self, **options: Any) -> Any:
        """The dashboard widget for this runner, to show in a notebook cell."""
        from .ui import Dashboard

        return Dashboard(self, **options).widget

    # -- config --------------------------------------------------------------------------------
    def config(self, key: str | None = None, value: Any = None) -> Any:
        """All settings; one setting; or set one (validated) and return its typed value."""
        if key is None:
            return self.store.config()
        if value is None:
            check_key(key)
            return self.store.config().get(key)
        result = self.store.set_config(key, value)
        self._notify()
        return result

    # -- the tick --------------------------------------------------------------------------------
    def _kick(self) -> None:
        if self._loop is not None and self._wake is not None:
            self._loop.loop.call_soon_threadsafe(self._wake.set)

    async def _tick_forever(self) -> None:
        self._wake = asyncio.Event()
        bell = ChangeBell(self.home)
        hearing = asyncio.ensure_future(self._hear(bell))
        try:
            while not self._closed:
                bell.want(self._wants_changes())  # before the read: no change slips between
                try:
                    self._tick()
                except Exception:  # a locked store or a bug must not end the loop for good
                    log.exception("nbrunner: the runner's tick failed; trying again")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._tick_s)
                self._wake.clear()
        finally:
            hearing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await hearing  # its socket leaves the loop before it is closed
            bell.close()
            self.store.close()

    async def _hear(self, bell: ChangeBell) -> None:
        """Each ring (a commit to the store) wakes the tick."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                await loop.sock_recv(bell.socket, 64)
                bell.drain()
                assert self._wake is not None
                self._wake.set()
        except Exception:  # a loop or socket that cannot: the tick's own pace is left
            log.warning("nbrunner: changes are not heard; read every %s s", self._tick_s)

    def _wants_changes(self) -> bool:
        """Whether anything here follows the store's changes as they come: a subscriber
        (a dashboard) or a wait."""
        return bool(self._listeners) or self._waiters.pending()

    def _tick(self) -> None:
        """Apply the change feed; now and then make sure active runs have a service."""
        self._apply_changes()
        if self._active and time.monotonic() - self._last_service_check >= SERVICE_CHECK_S:
            self._keep_service_alive()

    def _refresh_all(self) -> None:
        self._version = self.store.version()
        with self._lock:
            self._active = {r.id: r for r in self.store.active()}

    def _apply_changes(self) -> list[RunRecord]:
        changes, self._version = self.store.changes_since(self._version)
        if not changes:
            return changes
        with self._lock:
            for record in changes:
                if record.is_done:
                    self._active.pop(record.id, None)
                else:
                    self._active[record.id] = record
        for record in changes:
            if record.is_done:
                self._waiters.resolve(record)
        for listener in list(self._listeners):
            try:
                listener(changes)
            except Exception:  # one broken listener must not starve the others
                log.exception("nbrunner: a change listener failed")
        return changes


def _parse_id(run_id: int | str) -> int:
    return checks.run_id(run_id)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidParameter(f"{name} must be a whole number ≥ 1, got {value!r}")
    return value
