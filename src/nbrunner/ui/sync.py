"""Touch only what changed: every view sets widget traits through one Sync.

Each trait assignment on a widget is a message to the browser, so a view hands its new
values to `Sync.set`, which compares them with the widget's current ones and sends only the
differences, batched per widget with `hold_sync()`. The counters let a benchmark see how
many updates (and roughly how many bytes of values) a refresh sent.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets

# The refresh thread makes, changes and closes widgets while the kernel's own thread may be
# answering a page that asks for every widget's state at once (a Voila page loading, a
# notebook opened or reloaded). ipywidgets answers by walking its registry of widgets: one
# made or closed meanwhile ends the walk ("dictionary changed size during iteration") and no
# answer is sent. After 4 s the page asks widget by widget instead, and a box whose child was
# made or closed between two of those answers is drawn as an error box, for good. The kernel
# answers under the lock each refresh tick holds.
TICK_LOCK = threading.Lock()
ANSWER_PATIENCE_S = 2.0  # a tick stuck longer is not waited for: the page gives up at 4 s


@dataclass
class SyncStats:
    """What the dashboard has sent so far; `bytes` is the JSON size of the values set."""

    updates: int = 0
    bytes: int = 0

    def reset(self) -> None:
        self.updates = 0
        self.bytes = 0


class Sync:
    def __init__(self) -> None:
        self.stats = SyncStats()

    def set(self, widget: widgets.Widget, **values: Any) -> bool:
        """Assign the traits that differ (one batched message); True if any did."""
        changed = {name: v for name, v in values.items() if getattr(widget, name) != v}
        if not changed:
            return False
        with widget.hold_sync():
            for name, value in changed.items():
                setattr(widget, name, value)
        self.stats.updates += 1
        self.stats.bytes += sum(_size(v) for v in changed.values())
        return True

    def show(self, widget: widgets.Widget, visible: bool) -> None:
        self.set(widget.layout, display=None if visible else "none")

    def classes(self, widget: widgets.DOMWidget, wanted: dict[str, bool]) -> None:
        """Add or remove CSS classes, sending one update only when the set changes."""
        current = list(widget._dom_classes)
        updated = [c for c in current if wanted.get(c, True)]
        updated += [c for c, on in wanted.items() if on and c not in updated]
        self.set(widget, _dom_classes=tuple(updated))


def answer_pages_between_ticks() -> None:
    """Have the kernel answer a page's request for every widget's state between two refresh
    ticks (see TICK_LOCK). Idempotent; nothing to do where ipywidgets has no such answer."""
    answer = getattr(widgets.Widget, "_handle_control_comm_msg", None)
    if answer is None or getattr(answer, "between_ticks", False):
        return
    unguarded = answer.__func__

    def between_ticks(cls: type[widgets.Widget], msg: dict[str, Any]) -> Any:
        locked = TICK_LOCK.acquire(timeout=ANSWER_PATIENCE_S)
        try:
            return unguarded(cls, msg)
        finally:
            if locked:
                TICK_LOCK.release()

    between_ticks.between_ticks = True  # type: ignore[attr-defined]
    widgets.Widget._handle_control_comm_msg = classmethod(between_ticks)  # type: ignore[assignment]


def close_tree(widget: widgets.Widget) -> None:
    """Close a widget and every widget under it, so nothing lingers in the kernel."""
    for child in getattr(widget, "children", ()):
        close_tree(child)
    widget.close()


def _size(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8", errors="replace"))
    if isinstance(value, widgets.Widget):
        return 40  # a model reference travels as "IPY_MODEL_<id>"
    if isinstance(value, list | tuple):
        return sum(_size(v) for v in value) + 2
    try:
        return len(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return 0
