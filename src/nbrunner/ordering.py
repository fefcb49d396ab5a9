"""The order of a history listing (`history --sort KEY`, `Runner.history(sort=KEY)`).

KEY names, in this order of precedence: a column already added (`val_acc_last`,
`val_acc_best`), a field of the run record (`duration_s`, `submitted_at`, `exit_code`...),
a parameter (`lr`), or a metric the runs reported, meaning its last value (`val_acc`).
`-KEY` sorts descending, as Django's and DRF's orderings do. Runs without a value come
last either way; runs with equal values keep their order (newest first).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

from .errors import BadInput
from .models import RunRecord

Columns = dict[str, list[float]]
_FIELDS = [f.name for f in fields(RunRecord)] + ["duration_s"]
_SORTABLE = (int, float, str)


def parse_sort(key: str) -> tuple[str, bool]:
    """`-val_acc` → ("val_acc", True): the name, and whether it descends."""
    name = key.strip().lstrip("-+")
    if not name:
        raise BadInput(f"sort takes a column or metric name, like val_acc or -val_acc; got {key!r}")
    return name, key.strip().startswith("-")


def sort_values(
    records: Sequence[RunRecord],
    name: str,
    columns: Columns,
    metric_columns: Callable[[str], Columns],
) -> tuple[list[Any], Columns]:
    """Each record's value of `name`, and the metric columns this added (shown beside)."""
    if name in columns:
        return columns[name], {}
    if name in _FIELDS:
        values = [r.to_dict()[name] if name != "status" else r.status.value for r in records]
        if any(v is not None and not isinstance(v, _SORTABLE) for v in values):
            raise BadInput(f"cannot sort by {name!r}: its values are not single numbers or text")
        return values, {}
    if any(name in r.params for r in records):
        return [r.params.get(name) for r in records], {}
    added = metric_columns(name)
    return added[f"{name}_last"], added


def order(values: Sequence[Any], descending: bool) -> list[int]:
    """The indexes of the values in sorted order; missing ones (None, NaN) last."""
    present = [i for i, v in enumerate(values) if not _missing(v)]
    missing = [i for i, v in enumerate(values) if _missing(v)]
    try:
        present.sort(key=lambda i: values[i], reverse=descending)
    except TypeError:  # a param with numbers in some runs and text in others
        present.sort(key=lambda i: str(values[i]), reverse=descending)
    return present + missing


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
