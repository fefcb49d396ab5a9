"""The runs' history as readers ask for it: pages filtered and sorted by what runs
reported, the best run of a sweep, and the table form (a pandas frame) of records.

The Runner's history, best and check_sweeps are these; the CLI and the dashboard page
through them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import checks
from .errors import BadInput
from .models import RunRecord
from .ordering import order, parse_sort, sort_values
from .scalars import Summaries, better
from .store import HistoryFilter, Store

if TYPE_CHECKING:
    import pandas as pd


class History:
    """Reads of a home's ended and active runs, with the metrics they reported (summaries
    cached across pages)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.summaries = Summaries()

    def page(
        self,
        query: HistoryFilter,
        limit: int = 50,
        offset: int = 0,
        metric: str | None = None,
        best: str | None = None,
        sort: str | None = None,
        strict: bool = False,
    ) -> tuple[list[RunRecord], dict[str, list[float]]]:
        """The runs of one history page and the metric columns shown beside them; sorting
        reads every matching run (a sweep's, a group's), then pages. `strict`: an unknown
        sweep, or a metric no run reported, is an error naming those that exist (a typo, not
        an empty page or a column of NaN)."""
        if strict:
            self.check_sweeps(query.sweeps)
        for name, value in (("limit", limit), ("offset", offset)):
            checks.whole_number(value, name, 0, checks.SQLITE_INT_MAX)
        if sort is None:
            records = self.store.history(query, limit=limit, offset=offset)
        else:
            records = self.store.history(query, limit=checks.SQLITE_INT_MAX)
        if metric and strict:
            self.summaries.require(records, metric)
        columns = self.summaries.columns(records, metric, best) if metric else {}
        if sort is None:
            return records, columns
        name, descending = parse_sort(sort)

        def metric_columns(metric_name: str) -> dict[str, list[float]]:
            self.summaries.require(records, metric_name)
            return self.summaries.columns(records, metric_name, best)

        values, added = sort_values(records, name, columns, metric_columns)
        columns |= added
        kept = order(values, descending)[offset : offset + limit]
        return [records[i] for i in kept], {k: [v[i] for i in kept] for k, v in columns.items()}

    def best(
        self, metric: str, best: str | None = None, **filters: Any
    ) -> tuple[RunRecord, float] | None:
        """The run whose last reported `metric` is best ("max" or "min", else guessed from
        the name), among the runs `filters` select (history's: sweep=, group=, status=...),
        with that value; None if none of them reported it yet."""
        if best not in (None, "max", "min"):
            raise BadInput(f"best is 'max' or 'min', got {best!r}")
        query = HistoryFilter.build(**filters)
        self.check_sweeps(query.sweeps)
        records = self.store.history(query, limit=checks.SQLITE_INT_MAX)
        if not records:
            raise BadInput("no run matches; `nbrunner history` lists them")
        self.summaries.require(records, metric)
        lasts = self.summaries.columns(records, metric, best)[f"{metric}_last"]
        ranked = order(lasts, (best or better(metric)) == "max")
        if not ranked or math.isnan(lasts[ranked[0]]):
            return None
        return records[ranked[0]], lasts[ranked[0]]

    def check_sweeps(self, sweeps: Sequence[str]) -> None:
        """An unknown sweep id is a typo, not an empty sweep."""
        for sweep_id in sweeps:
            if not self.store.count_history(HistoryFilter.build(sweep=sweep_id)):
                known = ", ".join(s for s, _, _ in self.store.sweeps(5)) or "none yet"
                raise BadInput(f"no sweep {sweep_id!r}; the newest are: {known}")


def frame(records: Sequence[RunRecord]) -> pd.DataFrame:
    import pandas as pd

    columns = [
        "id",
        "module",
        "status",
        "exit_code",
        "reason",
        "params",
        "priority",
        "submitted_at",
        "started_at",
        "ended_at",
        "duration_s",
        "pid",
        "gpus",
        "restart_of",
        "log_path",
        "group",
        "sweep",
        "backend",
        "backend_ref",
        "cpu_time",
        "peak_rss",
        "gpu_memory",
        "warning",
    ]
    frame = pd.DataFrame([{c: getattr(r, c) for c in columns} for r in records], columns=columns)
    for column in ("submitted_at", "started_at", "ended_at"):
        frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
    return frame
