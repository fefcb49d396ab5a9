"""Progress read from a run's latest log line: tqdm-like bars and "step N/M" counters.

`45%|████▌     | 450/1000 [00:10<00:12, 43.1it/s]` gives 45 % and tqdm's own ETA (12 s);
`step 450/1000` gives 45 % and an ETA from the run's elapsed time at its average rate.
Nested bars on one line (`epoch 2/3: 45%|…| 9/20`) give the run's progress (the outer count
plus the inner one's share of it), not the current epoch's; a run that reports
`nbrunner.report(step=i, total=n)` gives i/n, whatever its log says.
Anything else is no progress. The line is untrusted text: only numbers come out of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import text

_PERCENT = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d+)?)\s?%")
_COUNT = re.compile(r"(?<![\d.])(\d+)\s?/\s?(\d+)(?![\d.])")
_TQDM_ETA = re.compile(r"\[[\d:]+<([\d:]+)")


@dataclass(frozen=True)
class Progress:
    """How far a run is (0..1) and the seconds it still needs, when known."""

    fraction: float
    eta_s: float | None = None

    @property
    def percent(self) -> str:
        return f"{self.fraction * 100:.0f}%"

    def label(self) -> str:
        eta = f" · ETA {text.duration(self.eta_s)}" if self.eta_s is not None else ""
        return f"{self.percent}{eta}"


def clock_seconds(value: str) -> float:
    """tqdm's `MM:SS` or `H:MM:SS`."""
    seconds = 0.0
    for part in value.split(":"):
        seconds = seconds * 60 + int(part)
    return seconds


def parse(line: str, elapsed_s: float | None = None) -> Progress | None:
    """Progress from a log line, or None; `elapsed_s` (the run's) estimates a missing ETA."""
    counts = [m for m in _COUNT.finditer(line) if 0 <= int(m[1]) <= int(m[2]) > 0]
    percent = _PERCENT.search(line)
    if len(counts) > 1:  # nested bars, "epoch 2/3 … 9/20": the run's share, not the epoch's
        outer, inner = counts[0], counts[-1]
        done = max(int(outer[1]) - 1, 0) + int(inner[1]) / int(inner[2])
        fraction = min(done / int(outer[2]), 1.0)
        return Progress(fraction, _eta("", fraction, elapsed_s))
    if counts:
        fraction = int(counts[0][1]) / int(counts[0][2])
    elif percent is not None and float(percent[1]) <= 100:
        fraction = float(percent[1]) / 100
    else:
        return None
    return Progress(fraction, _eta(line, fraction, elapsed_s))


def reported(step: float, total: float, elapsed_s: float | None = None) -> Progress | None:
    """Progress a run reported itself (`nbrunner.report(step=i, total=n)`): it knows best."""
    if not (total > 0 and step >= 0):  # also false for NaN
        return None
    fraction = min(step / total, 1.0)
    return Progress(fraction, _eta("", fraction, elapsed_s))


def _eta(line: str, fraction: float, elapsed_s: float | None) -> float | None:
    tqdm = _TQDM_ETA.search(line)
    if tqdm is not None:
        return clock_seconds(tqdm[1])
    if elapsed_s is None or fraction <= 0:
        return None
    return elapsed_s * (1 - fraction) / fraction


def bar_html(progress: Progress | None) -> str:
    """A thin bar with percent and ETA; empty when there is no progress to show."""
    if progress is None:
        return ""
    width = min(max(progress.fraction, 0.0), 1.0) * 100
    return (
        f'<div class="nbr-progress" title="{progress.label()}">'
        f'<div class="nbr-progress-track"><div style="width:{width:.1f}%"></div></div>'
        f'<span class="nbr-progress-label">{progress.label()}</span></div>'
    )
