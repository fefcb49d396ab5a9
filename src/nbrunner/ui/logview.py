"""Log tabs: a live tail per watched run, ANSI colours rendered, output always escaped.

Each tab follows its own log file by byte offset (`LogFollower`), so a tab costs only what
the run has written since the last tick, and one run's lines can never reach another tab.
Lines are converted to HTML once, when they arrive; ansi2html escapes `<`, `>` and `&`, so
a run printing markup shows the markup as text. Colours are per line: a colour left open
at the end of a line does not carry over (tools reset them per line in practice).
"""

from __future__ import annotations

import base64
import os
import time
from collections import deque
from collections.abc import Callable

import ipywidgets as widgets
from ansi2html import Ansi2HTMLConverter

from ..logs import LogFollower, collapse_carriage_returns, strip_ansi
from ..models import RunRecord
from ..provenance import provenance_lines
from . import text
from .notebooklink import notebook_widgets
from .sync import Sync, close_tree

KEEP_LINES = 2000
SHOW_LINES = 400
START_BYTES = 256 * 1024
READ_BYTES_PER_TICK = 1024 * 1024
MAX_LINE_CHARS = 4000
DOWNLOAD_MAX_BYTES = 20 * 1024 * 1024
PROVENANCE_ASK_S = 2.0  # a started run's provenance comes just after it starts
PROVENANCE_WAIT_S = 30.0  # after the run ended, none will come

_converter = Ansi2HTMLConverter(inline=True, line_wrap=False)


def line_html(line: str) -> str:
    """One line as safe HTML: long lines cut, ANSI colours as spans, everything escaped."""
    if len(line) > MAX_LINE_CHARS:
        line = f"{line[:MAX_LINE_CHARS]} … [{len(line) - MAX_LINE_CHARS} more characters]"
    if "\x1b" not in line:
        return text.escape(line)
    return str(_converter.convert(line, full=False))


class LogBuffer:
    """Complete lines (redraws collapsed) plus the line still being written; bounded."""

    def __init__(self, keep: int = KEEP_LINES) -> None:
        self.lines: deque[tuple[str, str]] = deque(maxlen=keep)  # (plain text, html)
        self.partial = ""

    def feed(self, chunk: str) -> bool:
        """Add new output; True when anything visible changed."""
        if not chunk:
            return False
        *complete, self.partial = (self.partial + chunk).split("\n")
        for raw in complete:
            self._append(collapse_carriage_returns(raw))
        self.partial = _shorten_redraws(self.partial)
        return True

    def _append(self, line: str) -> None:
        self.lines.append((strip_ansi(line).lower(), line_html(line)))

    def tail_html(self, limit: int = SHOW_LINES, needle: str = "") -> str:
        needle = needle.lower()
        shown = [html for plain, html in self.lines if needle in plain]
        current = collapse_carriage_returns(self.partial)
        if current and needle in strip_ansi(current).lower():
            shown.append(line_html(current))
        return "\n".join(shown[-limit:])


def _shorten_redraws(partial: str) -> str:
    """A progress bar redraws one line thousands of times: keep only what the next redraw
    still needs (the last visible state, and whether a carriage return ends it)."""
    if "\r" not in partial:
        return partial
    last = collapse_carriage_returns(partial)
    return "\r" + last + ("\r" if partial.endswith("\r") else "")


def download_link(path: str, run_id: int) -> str:
    """The full log (its last 20 MB if bigger) as a data: link the browser saves as a file."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return '<span class="nbr-muted">no log yet</span>'
    with open(path, "rb") as f:
        f.seek(max(0, size - DOWNLOAD_MAX_BYTES))
        data = f.read(DOWNLOAD_MAX_BYTES)
    encoded = base64.b64encode(data).decode("ascii")
    cut = f" (last {text.size(len(data))} of {text.size(size)})" if len(data) < size else ""
    return (
        f'<a class="nbr-download" download="run-{run_id}.log" '
        f'href="data:text/plain;charset=utf-8;base64,{encoded}">Save run-{run_id}.log'
        f"{cut}</a> <span class='nbr-muted'>{text.escape(path)}</span>"
    )


class LogTab:
    """One run's live log: follow toggle, filter box, full-log download, close."""

    def __init__(
        self,
        record: RunRecord,
        sync: Sync,
        request: Callable[[Callable[[], None]], None],
        on_close: Callable[[int], None],
        record_of: Callable[[int], RunRecord] | None = None,
    ) -> None:
        self.sync = sync
        self.record_of = record_of
        self.run_id = record.id
        self.path = record.log_path
        self.title = f"#{record.id} {record.module}"
        self.live = not record.is_done  # a finished run's log grows no more
        self.buffer = LogBuffer()
        self.follower = LogFollower.from_tail(record.log_path, START_BYTES)
        self.follow = widgets.ToggleButton(value=True, description="Follow")
        self.follow.add_class("nbr-follow")
        self.filter = widgets.Text(placeholder="filter lines", layout=widgets.Layout(width="200px"))
        self.filter.add_class("nbr-log-filter")
        save = widgets.Button(description="Full log")
        save.on_click(lambda _: request(self._prepare_download))
        close = widgets.Button(description="Close tab")
        close.add_class("nbr-close-tab")
        close.on_click(lambda _: on_close(self.run_id))
        self.link = widgets.HTML()
        self.waiting = widgets.HTML()  # with Follow off: how many lines are not shown
        self.waiting.add_class("nbr-log-waiting")
        self.body = self._new_body()
        notebook = notebook_widgets(record, sync, request)  # a notebook run's executed notebook
        toolbar = widgets.HBox(
            [self.follow, self.filter, save, *notebook, close, self.link, self.waiting]
        )
        toolbar.add_class("nbr-toolbar")
        self.provenance = widgets.HTML()
        self.provenance.add_class("nbr-provenance")
        self._provenance_asked = 0.0
        self._show_provenance(record)
        self.widget = widgets.VBox([toolbar, self.provenance, self.body])
        self._rendered_for: tuple[str, bool] | None = None
        self._unseen = 0

    def _new_body(self) -> widgets.HTML:
        body = widgets.HTML()
        body.add_class("nbr-logbody")
        body.add_class(f"nbr-log-{self.run_id}")
        return body

    def _show_provenance(self, record: RunRecord) -> None:
        """Which code the run ran (nbrunner.provenance); asked again until it is known."""
        lines = provenance_lines(record.provenance)
        waiting = not record.is_done or time.time() - (record.ended_at or 0) < PROVENANCE_WAIT_S
        self._provenance_pending = not lines and waiting and record.backend == "local"
        shown = " · ".join(text.escape(line) for line in lines) or "code: not recorded" + (
            " yet" if self._provenance_pending else ""
        )
        self.sync.set(self.provenance, value=f'<div class="nbr-muted">{shown}</div>')

    def refresh(self) -> None:
        """Read what is new; redraw when following, or when the filter or Follow changed.

        With Follow off the text holds still (where the user scrolled it stays) and the
        toolbar counts what arrived; Follow on shows a fresh view pinned to the newest line.
        """
        sync = self.sync
        now = time.monotonic()
        if self._provenance_pending and self.record_of and now > self._provenance_asked:
            self._provenance_asked = now + PROVENANCE_ASK_S
            self._show_provenance(self.record_of(self.run_id))
        before = len(self.buffer.lines)
        grew = self.buffer.feed(self.follower.read(READ_BYTES_PER_TICK))
        view = (self.filter.value, bool(self.follow.value))
        if view[1] and self._rendered_for is not None and not self._rendered_for[1]:
            close_tree(self.body)  # a new view: scrolled to its end, whatever was scrolled
            self.body = self._new_body()
            sync.set(self.widget, children=(*self.widget.children[:-1], self.body))
        if (grew and view[1]) or view != self._rendered_for:
            self._rendered_for = view
            self._unseen = 0
            html = self.buffer.tail_html(needle=view[0])
            sync.set(self.body, value=f'<pre class="nbr-logtext">{html}</pre>')
            sync.classes(self.body, {"nbr-nofollow": not view[1]})
        elif grew:
            self._unseen += max(1, len(self.buffer.lines) - before)
        waiting = f"{self._unseen} new lines: Follow shows them" if self._unseen else ""
        sync.set(self.waiting, value=f'<span class="nbr-muted">{waiting}</span>')

    def _prepare_download(self) -> None:
        self.sync.set(self.link, value=download_link(self.path, self.run_id))

    def close(self) -> None:
        close_tree(self.widget)


class LogTabs:
    """The tab strip: fixed pages (History) first, then one closable tab per watched run."""

    def __init__(
        self,
        sync: Sync,
        fixed: list[tuple[str, widgets.Widget]],
        request: Callable[[Callable[[], None]], None],
        record_of: Callable[[int], RunRecord] | None = None,
    ) -> None:
        self.sync = sync
        self.request = request
        self.record_of = record_of  # a run's record now: its provenance, once captured
        self.fixed = fixed
        self.tabs: dict[int, LogTab] = {}
        self.widget = widgets.Tab(children=[w for _, w in fixed], titles=[t for t, _ in fixed])
        self.widget.add_class("nbr-tabs")

    def open(self, record: RunRecord) -> None:
        if record.id not in self.tabs:
            self.tabs[record.id] = LogTab(
                record, self.sync, self.request, self._request_close, self.record_of
            )
            self._layout()
        self.tabs[record.id].refresh()
        self.sync.set(
            self.widget, selected_index=len(self.fixed) + list(self.tabs).index(record.id)
        )

    def _request_close(self, run_id: int) -> None:
        self.request(lambda: self.close(run_id))

    def close(self, run_id: int) -> None:
        if run_id not in self.tabs:
            return
        index = len(self.fixed) + list(self.tabs).index(run_id)
        selected = self.widget.selected_index
        tab = self.tabs.pop(run_id)
        if selected is not None and selected >= index:  # the same page stays selected,
            selected = max(0, selected - 1)  # or, if it was this one, its left neighbour
        self._layout(selected)
        tab.close()

    def _layout(self, selected: int | None = None) -> None:
        """Children, then titles, then the selection, each its own message: the tab bar
        redraws its titles when its children change, so titles sent with the children
        were drawn against the old ones (and a closed tab blanked those to its right)."""
        pages = [*self.fixed, *((t.title, t.widget) for t in self.tabs.values())]
        if selected is None:
            selected = self.widget.selected_index
        if selected is not None and selected >= len(pages):
            selected = len(pages) - 1
        self.sync.set(self.widget, children=tuple(w for _, w in pages))
        self.sync.set(self.widget, titles=tuple(t for t, _ in pages))
        self.sync.set(self.widget, selected_index=selected)

    def refresh(self) -> None:
        for tab in self.tabs.values():
            tab.refresh()

    def following(self) -> bool:
        """Whether a tab tails a run that may still write (its file is read often)."""
        return any(tab.live for tab in self.tabs.values())

    def ended(self, run_id: int) -> None:
        """The run ended: one last read will have its final lines, then its tab sleeps."""
        tab = self.tabs.get(run_id)
        if tab is not None:
            tab.live = False
            tab.refresh()
