"""The dashboard: views wired to one Runner, refreshed by one loop in a thread of its own.

Threads and who touches what:
- The refresh thread owns every live view (gauges, cards, log tabs, history grid, toasts,
  summary). It runs `refresh()` a few times a second, never on the kernel's event loop, so a
  busy cell cannot stall it.
- Button callbacks run on the kernel's thread. They call Runner methods, change their own
  form widgets, and hand any change to a live view to the refresh thread as a request.
- The runner's listener runs on the runner's loop; it only queues ended runs and wakes the
  refresh thread.
- A page that loads (Voila, or a notebook opened or reloaded) asks the kernel for every
  widget's state at once; the kernel's thread answers between two ticks (`sync.TICK_LOCK`),
  so the answer never meets a widget half made or closed.

One tick reads the runner's in-memory snapshot (no query), tails open logs by byte offset,
sends only changed values, and makes at most one reload from the store (the history page
or the summary), and only when the user asked or runs changed.

The page sleeps while nothing changes. The thread wakes when the runner's change feed
brings a new store version (a commit in any process rings the runner), when the user
acts, and otherwise every CLOCK_S: live clocks are coarse (`text.clock`, 5 s steps then
minutes) and gauges move at that pace, so an idle page costs a wake-up every few seconds
and sends nothing when no text changed. Only while a log tab or a Compare line follows a
running run are its files read every INTERVAL_S.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import ipywidgets as widgets

from .. import contact
from ..errors import NbrunnerError
from ..models import RunRecord
from ..monitor import SystemSampler
from . import text
from .cards import CardsView
from .compare import CompareView
from .folded import FoldedRuns
from .gauges import SPARK_SECONDS, GaugesView
from .history import HistoryView
from .launcher import Launcher
from .logview import LogTabs
from .summary import SummaryView
from .sync import TICK_LOCK, Sync, SyncStats, answer_pages_between_ticks, close_tree
from .theme import stylesheet
from .toasts import TOAST_S, ToastsView

if TYPE_CHECKING:  # the runner imports the dashboard, not the other way round
    from ..runner import Runner

log = logging.getLogger(__name__)

INTERVAL_S = 0.5  # how often followed log and metrics files are read
CLOCK_S = 5.0  # nothing changed: clocks, gauges, toasts and lingering cards move this often
MIN_GAP_S = 0.1
LINGER_S = 15.0
HISTORY_EVERY_S = 2.0
SUMMARY_EVERY_S = 5.0
READY_CLASS = "nbr-ready"
Request = Callable[[], None]


class GaugeSampler(SystemSampler):
    """The machine sampled as often as the gauges move (every CLOCK_S), not every second:
    one sampler shared by every dashboard of the process."""

    _shared = None

    def __init__(self) -> None:
        super().__init__(interval=CLOCK_S)


class DashboardWidget(widgets.VBox):
    """The root widget; `.dashboard` reaches the controller (to close it, or in tests)."""

    dashboard: Dashboard


class Dashboard:
    """Live view of one runner. `refresh()` is one tick; tests call it directly."""

    def __init__(
        self,
        runner: Runner,
        *,
        interval: float = INTERVAL_S,
        clock: Callable[[], float] = time.time,
        start: bool = True,
        page_size: int = 25,
        linger_s: float = LINGER_S,
        sampler: SystemSampler | None = None,
    ) -> None:
        self.runner = runner
        self.interval = interval
        self.clock = clock
        self.linger_s = linger_s
        self.sync = Sync()
        self.opened_at = clock()
        self.ticks = 0
        self.last_tick_cpu_s = 0.0
        self.last_error: BaseException | None = None
        self._requests: deque[Request] = deque()
        self._ended: deque[RunRecord] = deque()
        self._lingering: dict[int, tuple[RunRecord, float]] = {}
        self._toasted: set[int] = set()
        self._newest_id = max((r.id for r in runner.snapshot()), default=0)
        self._runs_changed = False
        self._history_checked_at = self._summary_loaded_at = float("-inf")
        self._summary_due = True
        self._version = 0  # the newest store version the change feed brought
        self._drawn: tuple[int, int] | None = None  # (version, clock step) last drawn
        self._gauge_step = -1
        self._notice_at = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.sampler = (sampler or GaugeSampler.shared()).acquire()
        answer_pages_between_ticks()  # before the page this dashboard is shown in asks
        self._build(page_size)
        self._unsubscribe = runner.subscribe(self._on_changes)
        _replace_predecessor(self)
        if start:
            self.start()

    def _build(self, page_size: int) -> None:
        sync = self.sync
        self.gauges = GaugesView(sync)
        self.launcher = Launcher(self.runner, on_submitted=lambda _: self._wake.set())
        actions = (self.view_logs, self.cancel, self.restart)
        self.cards = CardsView(sync, *actions, folded=FoldedRuns(sync, *actions))
        self.history = HistoryView(
            self.runner,
            sync,
            self.view_logs,
            self.restart,
            on_change=self._wake.set,
            page_size=page_size,
        )
        self.compare = CompareView(self.runner, sync, on_change=self._wake.set)
        self.cards.extra = self.compare.latest_html
        pages = [("History", self.history.widget), ("Compare", self.compare.widget)]
        self.tabs = LogTabs(sync, pages, self._request, self.runner.store.get)
        self.toasts = ToastsView(sync, self._request)
        self.summary = SummaryView(self.runner, sync)
        self.notice = widgets.HTML()
        self.notice.add_class("nbr-notice")
        title = widgets.HTML(
            f'<h2>nbrunner</h2><div class="nbr-muted">{text.escape(self.runner.home)}</div>'
        )
        header = widgets.HBox([title, self.gauges.widget])
        header.add_class("nbr-header")
        side = widgets.VBox([self.launcher.widget, self.summary.widget])
        side.add_class("nbr-side")
        tabs_panel = widgets.VBox([self.tabs.widget])
        tabs_panel.add_class("nbr-panel")
        main = widgets.VBox([self.cards.widget, tabs_panel])
        main.add_class("nbr-main")
        body = widgets.HBox([side, main])
        body.add_class("nbr-body")
        overlay = widgets.VBox([self.notice, self.toasts.widget])
        overlay.add_class("nbr-overlay")
        self.widget = DashboardWidget([stylesheet(), header, overlay, body])
        self.widget.add_class("nbr-app")
        self.widget.dashboard = self

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Refresh in a daemon thread until close() (idempotent); starts the runner's tick."""
        if not self.runner.running:
            self.runner.start()
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._loop, name="nbrunner-dashboard", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stop refreshing and let go of the sampler; runs are not affected."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        self._unsubscribe()
        self.sampler.release()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        close_tree(self.widget)

    @property
    def stats(self) -> SyncStats:
        """Updates (and value bytes) sent to the browser so far; reset() between measures."""
        return self.sync.stats

    def _loop(self) -> None:
        detach_from_cell()
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with TICK_LOCK:
                    self.refresh()
            except Exception as exc:  # a bad tick must not end the dashboard
                self.last_error = exc
                log.exception("dashboard refresh failed")
            if self.widget.comm is None:  # the root widget was closed: nobody is watching
                self.close()
                return
            self._stop.wait(MIN_GAP_S)
            self._wake.wait(max(0.0, self._sleep_s() - (time.monotonic() - started)))
            self._wake.clear()

    def _sleep_s(self) -> float:
        """How long the page may sleep: until the next clock step, unless files are followed
        or a reload is waiting for its gap."""
        waiting = self._runs_changed or self._summary_due or self.history.stale
        if waiting or self.tabs.following() or self.compare.following():
            return self.interval
        return CLOCK_S - self.clock() % CLOCK_S

    # -- the tick --------------------------------------------------------------------------------
    def refresh(self) -> None:
        """One tick: requests, ended runs, cards, logs, gauges, then at most one reload."""
        cpu_started = time.thread_time()
        now = self.clock()
        self._run_requests()
        ended = self._take_ended(now)
        self.toasts.add(ended, now)
        active = self.runner.snapshot()
        lingering = self._linger(now, active)
        step = int(now // CLOCK_S)
        self.tabs.refresh()
        self.compare.refresh(now)
        if step != self._gauge_step:
            self._gauge_step = step
            self.gauges.update(self.sampler.history(SPARK_SECONDS))
            self.toasts.expire(now)
            if self.notice.value and now - self._notice_at >= TOAST_S:
                self.sync.set(self.notice, value="")
        if self.launcher.modules_file_changed():  # modules.toml edited: the choice stays
            self.launcher.reload_modules()
        reloaded = self._reload_one(now)
        if reloaded or ended or self._drawn != (self._version, step) or self.compare.following():
            self._drawn = (self._version, step)
            self.cards.update(active, lingering, now)
            live = {r.id: r for r in [*lingering, *active]}
            self.history.update(live, now, self.cards.last_lines.get)
            self.summary.update(active, lingering)
        if active:  # the cards show live cpu and memory: the service samples while we read
            contact.watching(self.runner.home)
        if self.ticks == 0:
            self.widget.add_class(READY_CLASS)
        self.ticks += 1
        self.last_tick_cpu_s = time.thread_time() - cpu_started

    def _run_requests(self) -> None:
        while self._requests:
            self._requests.popleft()()

    def _take_ended(self, now: float) -> list[RunRecord]:
        """Runs that ended since the dashboard opened, each reported once; their cards linger."""
        ended = []
        while self._ended:
            record = self._ended.popleft()
            self.tabs.ended(record.id)
            if (record.ended_at or now) < self.opened_at:
                continue
            first_seen = self._lingering.get(record.id, (record, now))[1]
            self._lingering[record.id] = (record, first_seen)
            if record.id not in self._toasted:
                self._toasted.add(record.id)
                ended.append(record)
        return ended

    def _linger(self, now: float, active: list[RunRecord]) -> list[RunRecord]:
        """Recently ended runs keep their card for linger_s seconds, showing how they ended."""
        active_ids = {r.id for r in active}
        self._lingering = {
            run_id: (record, since)
            for run_id, (record, since) in self._lingering.items()
            if now - since < self.linger_s and run_id not in active_ids
        }
        return [record for record, _ in self._lingering.values()]

    def _reload_one(self, now: float) -> bool:
        """The tick's single reload: the history page if stale, else the summary if due;
        True if one was made (what is drawn from it must be redrawn)."""
        if self._runs_changed and now - self._history_checked_at >= HISTORY_EVERY_S:
            self._runs_changed = False
            self._history_checked_at = now
            self._summary_due = True
            self.history.invalidate()
        if self.history.stale:
            self.history.load()
            return True
        if self._summary_due and now - self._summary_loaded_at >= SUMMARY_EVERY_S:
            self._summary_due = False
            self._summary_loaded_at = now
            self.summary.load()
            self.history.learn_modules(self.summary.modules)
            return True
        return False

    # -- events from the runner's loop ---------------------------------------------------------
    def _on_changes(self, changes: list[RunRecord]) -> None:
        self._version = max([self._version, *(r.version for r in changes)])
        self.compare.note_changes(changes)
        for record in changes:
            if record.is_done:
                self._ended.append(record)
            if record.is_done or record.id > self._newest_id:
                self._runs_changed = True
                self._newest_id = max(self._newest_id, record.id)
        self._wake.set()

    # -- actions (kernel thread): Runner calls, and requests to the refresh thread ------------
    def _request(self, request: Request) -> None:
        self._requests.append(request)
        self._wake.set()

    def view_logs(self, run_id: int) -> None:
        def open_tab() -> str:
            record = self._record(run_id)
            self._request(lambda: self.tabs.open(record))
            return ""

        self._act(open_tab)

    def cancel(self, run_id: int) -> None:
        self._act(lambda: self.runner.cancel(run_id) and f"Cancel requested for #{run_id}")

    def restart(self, run_id: int) -> None:
        self._act(lambda: f"Restarted #{run_id} as #{self.runner.restart(run_id).id}")

    def _act(self, action: Callable[[], str]) -> None:
        """Run a user action; its outcome or its error goes to the notice line."""
        self._notice_at = self.clock()
        try:
            message = action()
        except NbrunnerError as exc:
            self.notice.value = _error_html(exc)
            return
        self.notice.value = f'<span class="nbr-ok">{text.escape(message)}</span>' if message else ""
        self._wake.set()

    def _record(self, run_id: int) -> RunRecord:
        for record in self.runner.snapshot():
            if record.id == run_id:
                return record
        return self.runner.get(run_id).record


_shown: dict[str, weakref.ref[Dashboard]] = {}
_shown_lock = threading.Lock()


def place_key(home: object) -> str:
    """Where a dashboard is shown: its notebook cell when the front end says which
    (JupyterLab does), else its home. A new dashboard in the same place replaces the old."""
    try:
        from IPython import get_ipython

        parent = get_ipython().kernel.get_parent()
        cell = parent.get("metadata", {}).get("cellId")
    except Exception:  # not in a kernel, or one that does not say
        cell = None
    return f"cell {cell}" if cell else f"home {home}"


def _replace_predecessor(dashboard: Dashboard) -> None:
    """Re-running a dashboard cell closes the dashboard it showed before: its refresh
    thread, its listener on the runner and its widgets are let go."""
    key = place_key(dashboard.runner.home)
    with _shown_lock:
        previous = _shown.get(key)
        _shown[key] = weakref.ref(dashboard)
    predecessor = previous() if previous is not None else None
    if predecessor is not None and predecessor is not dashboard:
        predecessor.close()


def detach_from_cell() -> None:
    """Let this thread's widget updates count as widget traffic, not as a cell's output.

    A thread's messages otherwise carry the kernel's last request as their parent: in a Voila
    page that is the notebook's execution, and the server counts a message as activity when
    its type or its parent's type is tracked (a missing parent counts too). Every refresh
    would then keep the kernel of a page that is gone from being culled. ipykernel >= 7 keeps
    the parent in a context variable that threads fall back from; this thread gets its own,
    a widget message's header. Older kernels share one parent between threads: left alone.
    """
    from contextvars import ContextVar
    from uuid import uuid4

    from IPython import get_ipython

    kernel = getattr(get_ipython(), "kernel", None)
    parent = getattr(kernel, "_shell_parent", None)
    if isinstance(parent, ContextVar):
        parent.set({"header": {"msg_type": "comm_msg", "msg_id": uuid4().hex}})


def _error_html(exc: BaseException) -> str:
    return f'<span class="nbr-error">{text.escape(exc)}</span>'
