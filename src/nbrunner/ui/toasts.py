"""Toasts: a short note for each run that ended while the dashboard was open.

They float over the page's top right corner (nothing under the pointer moves when one comes)
and leave by themselves after TOAST_S, or at once when dismissed.
"""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as widgets

from ..models import RunRecord
from . import text
from .sync import Sync, close_tree

MAX_TOASTS = 5
TOAST_S = 20.0


def toast_html(record: RunRecord) -> str:
    outcome = record.status.value.replace("_", " ")
    exit_code = f" (exit code {record.exit_code})" if record.exit_code not in (None, 0) else ""
    return (
        f"<b>#{record.id} {text.escape(record.module)}</b> {outcome}{exit_code} "
        f"after {text.duration(record.duration_s)}"
    )


class Toast:
    def __init__(
        self, record: RunRecord, dismiss: Callable[[Toast], None], shown_at: float
    ) -> None:
        self.run_id = record.id
        self.shown_at = shown_at
        close = widgets.Button(description="×", tooltip="dismiss")
        close.add_class("nbr-dismiss")
        close.on_click(lambda _: dismiss(self))
        self.widget = widgets.HBox([widgets.HTML(toast_html(record)), close])
        self.widget.add_class("nbr-toast")
        self.widget.add_class(f"nbr-toast-{record.status.value}")


class ToastsView:
    """Newest first, at most MAX_TOASTS; the oldest go when new ones arrive."""

    def __init__(self, sync: Sync, request: Callable[[Callable[[], None]], None]) -> None:
        self.sync = sync
        self.request = request
        self.toasts: list[Toast] = []
        self.widget = widgets.VBox()
        self.widget.add_class("nbr-toasts")

    def add(self, records: list[RunRecord], now: float) -> None:
        if not records:
            return
        new = [Toast(r, self._request_dismiss, now) for r in reversed(records)]
        kept, dropped = (new + self.toasts)[:MAX_TOASTS], (new + self.toasts)[MAX_TOASTS:]
        self.toasts = kept
        self._show()
        for toast in dropped:
            close_tree(toast.widget)

    def expire(self, now: float) -> None:
        """Toasts older than TOAST_S leave."""
        for toast in [t for t in self.toasts if now - t.shown_at >= TOAST_S]:
            self.dismiss(toast)

    def _request_dismiss(self, toast: Toast) -> None:
        self.request(lambda: self.dismiss(toast))

    def dismiss(self, toast: Toast) -> None:
        if toast in self.toasts:
            self.toasts.remove(toast)
            self._show()
            close_tree(toast.widget)

    def _show(self) -> None:
        self.sync.set(self.widget, children=tuple(t.widget for t in self.toasts))
