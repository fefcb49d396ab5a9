"""Many active runs as one compact table: past FOLD_AT runs, cards would fill several
screens (and each card is its own set of widgets). The table is one HTML widget, sent only
when its text changes, with the history's columns; a run is picked by its id for View logs,
Cancel or Restart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import ipywidgets as widgets

from ..models import RunRecord
from .history import row_html, table_html
from .sync import Sync

FOLD_AT = 12  # more active runs than this: a table, not cards (a screenful at 1280 px)
RunAction = Callable[[int], None]


class FoldedRuns:
    FOLD_AT = FOLD_AT

    def __init__(self, sync: Sync, view: RunAction, cancel: RunAction, restart: RunAction) -> None:
        self.sync = sync
        self.pick = widgets.Dropdown(options=(), description="Run")
        self.pick.add_class("nbr-fold-pick")
        buttons = [
            self._button("View logs", view, "nbr-view"),
            self._button("Cancel", cancel, "nbr-cancel"),
            self._button("Restart", restart, "nbr-restart"),
        ]
        actions = widgets.HBox([self.pick, *buttons])
        actions.add_class("nbr-toolbar")
        self.table = widgets.HTML()
        self.table.add_class("nbr-folded")
        self.widget = widgets.VBox([actions, self.table])

    def _button(self, label: str, action: RunAction, css: str) -> widgets.Button:
        button = widgets.Button(description=label)
        button.add_class(css)
        button.on_click(lambda _: self.pick.value is not None and action(self.pick.value))
        return button

    def update(
        self, shown: Sequence[RunRecord], now: float, last_line: Callable[[str], str]
    ) -> None:
        rows = [row_html(r, now, "" if r.is_done else last_line(r.log_path)) for r in shown]
        self.sync.set(self.table, value=table_html(rows))
        chosen = self.pick.value
        options = tuple((f"#{r.id} {r.module}", r.id) for r in shown)
        if self.sync.set(self.pick, options=options) and chosen in {r.id for r in shown}:
            self.sync.set(self.pick, value=chosen)
