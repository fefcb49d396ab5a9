"""Reading what runs report: their metrics files, and the metric lines of their logs.

Two sources per run, both followed by byte offset so a live reader pays only for what is
new, at most `max_bytes` a call (a bounded window, however large the file):

- `logs/ID.metrics.jsonl`, written by `nbrunner.report` (see nbrunner.reporting);
- the log itself, for runs in any language: a line holding `nbrunner:metric` followed by
  `name=value` pairs (`nbrunner:metric step=10 loss=0.31 acc=0.88`; `step` and `time`
  (epoch seconds) are optional: without a step, the run's previous one plus one; without a
  time, none (NaN)).

Each metric of a run is a `Series`: compact arrays of steps, times and values, with its
count, last, min and max kept as points arrive (`keep=False` keeps only those, for history).
"""

from __future__ import annotations

import json
import math
import os
import threading
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import BadInput
from .models import RunRecord
from .reporting import metrics_path

if TYPE_CHECKING:
    import pandas as pd

MARKER = b"nbrunner:metric"
READ_BYTES = 4 * 1024 * 1024
LOG_WINDOW = 8  # a log is read 8× faster: most of it is not metrics, and finding those is cheap
SUMMARY_CACHE = 512
MAXIMIZED = ("acc", "auc", "f1", "precision", "recall", "score", "reward", "iou", "bleu", "map")
Point = tuple[float, float, dict[str, float]]  # step, time, values


def better(name: str) -> str:
    """Whether a higher ("max") or lower ("min") value of this metric is better, by its name."""
    lowered = name.lower()
    return "max" if any(word in lowered for word in MAXIMIZED) else "min"


@dataclass
class Series:
    """One metric of one run."""

    keep: bool = True
    steps: array[float] = field(default_factory=lambda: array("d"))
    times: array[float] = field(default_factory=lambda: array("d"))
    values: array[float] = field(default_factory=lambda: array("d"))
    count: int = 0
    last: float = math.nan
    last_step: float = math.nan
    low: float = math.inf
    high: float = -math.inf

    def add(self, step: float, moment: float, value: float) -> None:
        self.count += 1
        self.last = value
        self.last_step = step
        if value < self.low:
            self.low = value
        if value > self.high:
            self.high = value
        if self.keep:
            self.steps.append(step)
            self.times.append(moment)
            self.values.append(value)

    def best(self, direction: str) -> float:
        if not self.count:
            return math.nan
        return self.high if direction == "max" else self.low


class _Tail:
    """Whole lines appended to a file since the last read; a truncated file is followed on."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def lines(self, max_bytes: int) -> tuple[bytes, bool]:
        """New complete lines (as one chunk), and whether more is waiting."""
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                if size < self.offset:  # a capped log was compacted: go on from its end
                    self.offset, self.partial = size, b""
                f.seek(self.offset)
                data = f.read(max_bytes)
        except OSError:
            return b"", False
        self.offset += len(data)
        data = self.partial + data
        end = data.rfind(b"\n") + 1
        self.partial = data[end:]
        return data[:end], self.offset < size


def json_points(chunk: bytes) -> Iterator[Point]:
    """Points of metrics-file lines; a line that is not a point is skipped.

    The chunk is parsed as one JSON array (one call for thousands of lines), line by line
    only when that fails (a torn or foreign line).
    """
    lines = chunk.strip().replace(b"\n", b",")
    try:
        parsed = json.loads(b"[" + lines + b"]") if lines else []
    except ValueError:
        parsed = None
    for data in parsed if parsed is not None else _each_line(chunk):
        try:
            step = float(data.pop("step"))
            moment = float(data.pop("time", math.nan))
            yield step, moment, {k: float(v) for k, v in data.items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            continue


def _each_line(chunk: bytes) -> Iterator[Any]:
    for line in chunk.splitlines():
        try:
            yield json.loads(line)
        except ValueError:
            continue


def text_points(chunk: bytes) -> Iterator[tuple[float | None, float, dict[str, float]]]:
    """Points of `nbrunner:metric name=value ...` lines in a log; other lines are skipped."""
    position = chunk.find(MARKER)
    while position >= 0:
        end = chunk.find(b"\n", position)
        line = chunk[position + len(MARKER) : end if end >= 0 else len(chunk)]
        values = dict(_pairs(line.decode("utf-8", "replace").split()))
        if values:
            step = values.pop("step", None)
            yield step, values.pop("time", math.nan), values
        position = chunk.find(MARKER, end) if end >= 0 else -1


def _pairs(words: Iterable[str]) -> Iterator[tuple[str, float]]:
    for word in words:
        name, sep, value = word.partition("=")
        try:
            if sep and name:
                yield name, float(value)
        except ValueError:
            continue


class ScalarFollower:
    """One run's scalars, read so far from its metrics file and its log."""

    def __init__(self, log_path: str, *, keep: bool = True) -> None:
        self.keep = keep
        self.series: dict[str, Series] = {}
        self._file = _Tail(metrics_path(log_path))
        self._log = _Tail(log_path)
        self._text_step = 0.0

    def poll(self, max_bytes: int = READ_BYTES) -> tuple[bool, bool]:
        """Read at most max_bytes from each source: (new points came, more is waiting)."""
        before = self.total
        chunk, more_file = self._file.lines(max_bytes)
        for step, moment, values in json_points(chunk):
            self._add(step, moment, values)
        chunk, more_log = self._log.lines(max_bytes * LOG_WINDOW)
        for text_step, moment, values in text_points(chunk):
            step = self._text_step if text_step is None else text_step
            self._text_step = step + 1
            self._add(step, moment, values)
        return self.total != before, more_file or more_log

    def poll_all(self) -> None:
        while self.poll()[1]:
            pass

    @property
    def total(self) -> int:
        return sum(s.count for s in self.series.values())

    def _add(self, step: float, moment: float, values: dict[str, float]) -> None:
        for name, value in values.items():
            series = self.series.get(name)
            if series is None:
                series = self.series[name] = Series(self.keep)
            series.add(step, moment, value)


def read(records: Iterable[RunRecord], names: Iterable[str] | None = None) -> pd.DataFrame:
    """Every point of these runs: a long frame (run, step, time, name, value)."""
    import numpy as np
    import pandas as pd

    wanted = set(names) if names is not None else None
    frames = []
    for record in records:
        follower = ScalarFollower(record.log_path)
        follower.poll_all()
        for name, series in follower.series.items():
            if wanted is not None and name not in wanted:
                continue
            frames.append(
                pd.DataFrame(
                    {
                        "run": record.id,
                        "step": np.asarray(series.steps, dtype="int64"),
                        "time": pd.to_datetime(np.asarray(series.times), unit="s", utc=True),
                        "name": name,
                        "value": np.asarray(series.values),
                    }
                )
            )
    if not frames:
        return pd.DataFrame(
            {
                "run": pd.Series(dtype="int64"),
                "step": pd.Series(dtype="int64"),
                "time": pd.Series(dtype="datetime64[ns, UTC]"),
                "name": pd.Series(dtype="object"),
                "value": pd.Series(dtype="float64"),
            }
        )
    return pd.concat(frames, ignore_index=True)


class Summaries:
    """Last and best values per run, kept up to date by followers that keep no points.

    Thread-safe: a kernel's cell and the dashboard's refresh thread may ask at once.
    """

    def __init__(self, size: int = SUMMARY_CACHE) -> None:
        self.size = size
        self._followers: OrderedDict[str, ScalarFollower] = OrderedDict()
        self._lock = threading.Lock()

    def of(self, record: RunRecord) -> dict[str, Series]:
        with self._lock:
            follower = self._followers.pop(record.log_path, None) or ScalarFollower(
                record.log_path, keep=False
            )
            self._followers[record.log_path] = follower
            while len(self._followers) > self.size:
                self._followers.popitem(last=False)
            follower.poll_all()
            return follower.series

    def reported(self, records: Iterable[RunRecord]) -> list[str]:
        """The names of the metrics any of the records reported, sorted."""
        return sorted({name for record in records for name in self.of(record)})

    def require(self, records: Sequence[RunRecord], metric: str) -> None:
        """BadInput naming what was reported when none of the records reported `metric` (a
        typo would otherwise fill a column with NaN); fine while nothing was reported yet and
        some run is still going."""
        reported = self.reported(records)
        if (
            not records
            or metric in reported
            or (not reported and not all(r.is_done for r in records))
        ):
            return
        listed = ", ".join(reported) if reported else "no metrics"
        raise BadInput(f"no run here reported {metric!r}; they reported: {listed}")

    def columns(
        self, records: Iterable[RunRecord], metric: str, best: str | None = None
    ) -> dict[str, list[float]]:
        """`{metric}_last` and `{metric}_best` for each record, NaN where it has none."""
        direction = best or better(metric)
        empty = Series(keep=False)
        found = [self.of(r).get(metric, empty) for r in records]
        return {
            f"{metric}_last": [s.last for s in found],
            f"{metric}_best": [s.best(direction) for s in found],
        }


def summary_rows(records: Iterable[RunRecord]) -> list[dict[str, Any]]:
    """Per run and metric: points, last, min and max (what `nbrunner scalars` prints)."""
    rows = []
    for record in records:
        follower = ScalarFollower(record.log_path, keep=False)
        follower.poll_all()
        rows += [
            {
                "run": record.id,
                "name": name,
                "points": s.count,
                "last": s.last,
                "min": s.low,
                "max": s.high,
            }
            for name, s in follower.series.items()
        ]
    return rows
