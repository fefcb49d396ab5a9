"""Pruning a sweep: stop its runs that are clearly behind their peers at the same step.

The rule is the median stopping rule of Google Vizier (Golovin et al., "Google Vizier: a
service for black-box optimization", KDD 2017, section 3.2.2): a run is stopped at step s
when its best value up to s is strictly worse than the median, over its peers, of each
peer's running mean of the values it reported up to s. (Optuna's `MedianPruner` takes the
peers' values at step s itself; the running mean is the paper's, and it smooths a noisy
peer.)
It needs no schedule of rungs and no budget, so it fits sweeps of any size whose runs
report at any steps; and it is one comparison per run, so a run that is ahead (at or above
the median) is never stopped.

Two things differ from the paper, both for sweeps on one machine:
- peers are every other run of the sweep that has reported at or beyond step s, running or
  ended (Vizier counts only completed trials: with every run of a sweep running at once,
  none would ever be judged);
- a run is judged only after a grace period (`grace` steps, as `MedianPruner`'s
  `n_warmup_steps`) and only against at least `min_peers` peers (as its `n_min_trials`).

Runs queued behind the machine's limit are judged, once they run, against the curves the
sweep's earlier runs left at the same steps. Everything above the `Pruner` class is pure:
curves in, a verdict out (the bench and the tests drive it with synthetic curves).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from . import checks
from .errors import InvalidParameter
from .models import RunRecord
from .scalars import ScalarFollower
from .states import RunStatus
from .store import HistoryFilter

DEFAULT_GRACE = 5  # steps
DEFAULT_MIN_PEERS = 3
MAX_PEERS = 10_000  # runs of one sweep read (a sweep has at most this many points)
DIRECTIONS = ("max", "min")

Curve = Sequence[tuple[float, float]]  # (step, value) in the order reported


@dataclass(frozen=True)
class PruneRule:
    """What a sweep prunes on: a metric, which way is better, grace steps, fewest peers."""

    metric: str
    direction: str
    grace: int = DEFAULT_GRACE
    min_peers: int = DEFAULT_MIN_PEERS

    @classmethod
    def parse(cls, text: Any, grace: int | None = None, min_peers: int | None = None) -> PruneRule:
        """`val_acc:max` or `loss:min` (a PruneRule passes through, with grace and peers)."""
        if isinstance(text, PruneRule):
            rule = text
        else:
            form = "METRIC:max or METRIC:min, like val_acc:max"
            name, _, direction = checks.text(text, "prune", form, InvalidParameter).rpartition(":")
            if not name or direction not in DIRECTIONS:
                raise InvalidParameter(f"prune must be {form}, got {text!r}")
            rule = cls(name, direction)
        return cls(
            rule.metric,
            rule.direction,
            _count("prune grace", rule.grace if grace is None else grace, 0),
            _count("prune min_peers", rule.min_peers if min_peers is None else min_peers, 1),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PruneRule:
        return cls(str(data["metric"]), str(data["direction"]), data["grace"], data["min_peers"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.metric}:{self.direction}"


def _count(what: str, value: Any, minimum: int) -> int:
    return checks.whole_number(value, what, minimum, checks.SQLITE_INT_MAX, InvalidParameter)


@dataclass(frozen=True)
class Verdict:
    """Why a run is stopped: at which step, its best, the peers' median, how many peers."""

    step: float
    best: float
    median: float
    peers: int
    rule: PruneRule

    @property
    def reason(self) -> str:
        best = "no finite value" if math.isnan(self.best) else f"best {self.best:.6g}"
        side = "below" if self.rule.direction == "max" else "above"
        return (
            f"pruned at step {self.step:g}: {self.rule.metric} {best} is {side} the median "
            f"{self.median:.6g} of {self.peers} peers' running means at that step "
            f"(median stopping rule, {self.rule})"
        )


def best_until(curve: Curve, step: float, direction: str) -> float:
    """The best finite value reported at steps ≤ step (NaN if none)."""
    values = [v for s, v in curve if s <= step and math.isfinite(v)]
    if not values:
        return math.nan
    return max(values) if direction == "max" else min(values)


def running_mean(curve: Curve, step: float) -> float:
    """Mean of the finite values reported at steps ≤ step; NaN if the curve has not reached
    that step (a peer is only compared where it has been) or has no finite value there."""
    if not curve or max(s for s, _ in curve) < step:
        return math.nan
    values = [v for s, v in curve if s <= step and math.isfinite(v)]
    return statistics.fmean(values) if values else math.nan


def judge(rule: PruneRule, curve: Curve, peers: Iterable[Curve]) -> Verdict | None:
    """A verdict if the run with this curve should stop now, at its latest step; else None."""
    if not curve:
        return None
    step = curve[-1][0]
    if step < rule.grace:
        return None
    means = [m for m in (running_mean(p, step) for p in peers) if not math.isnan(m)]
    if len(means) < rule.min_peers:
        return None
    median = statistics.median(means)
    best = best_until(curve, step, rule.direction)
    behind = best < median if rule.direction == "max" else best > median
    if math.isnan(best) or behind:  # a run that reported only NaN (diverged) is behind
        return Verdict(step, best, median, len(means), rule)
    return None


# -- the service's side: curves of real runs, read as they grow ----------------------------------
class Pruner:
    """Finds, on each pass of the service, the running runs their sweep's rule stops.

    Curves are read by byte offset (only what is new), and a sweep's runs are judged again
    only when one of its runs reported something (or another started), so a pass over a
    quiet sweep costs an empty read per run.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self._followers: dict[int, ScalarFollower] = {}
        self._whole: set[int] = set()  # ended runs whose curves have been read to the end
        # sweep → its runs' points and running runs when last judged
        self._judged: dict[str, tuple[int, frozenset[int]]] = {}

    def behind(self, records: Iterable[RunRecord]) -> list[tuple[int, str]]:
        """(run id, reason) for each of these running runs that its sweep's rule stops."""
        running = [r for r in records if r.prune and r.sweep and r.status is RunStatus.RUNNING]
        stops: list[tuple[int, str]] = []
        seen: set[int] = set()
        for sweep in {r.sweep for r in running}:
            members = self.store.history(HistoryFilter.build(sweep=sweep), limit=MAX_PEERS)
            seen.update(m.id for m in members)
            stops += self._judge_sweep(sweep, [r for r in running if r.sweep == sweep], members)
        for run_id in set(self._followers) - seen:  # sweeps no longer judged: forget them
            del self._followers[run_id]
            self._whole.discard(run_id)
        for sweep in set(self._judged) - {r.sweep for r in running}:
            del self._judged[sweep]
        return stops

    def _judge_sweep(
        self, sweep: str, running: list[RunRecord], members: list[RunRecord]
    ) -> list[tuple[int, str]]:
        """Verdicts on the sweep's running runs, if any of its runs reported since the last."""
        rule = PruneRule.from_dict(running[0].prune or {})  # one rule per sweep
        series = [self._follower(m).series.get(rule.metric) for m in members]
        state = (sum(s.count for s in series if s is not None), frozenset(r.id for r in running))
        if self._judged.get(sweep) == state:
            return []
        self._judged[sweep] = state
        curves = {
            m.id: list(zip(s.steps, s.values, strict=True)) if s is not None else []
            for m, s in zip(members, series, strict=True)
        }
        stops = []
        for record in running:
            peers = [curve for run_id, curve in curves.items() if run_id != record.id]
            verdict = judge(rule, curves.get(record.id, []), peers)
            if verdict is not None:
                stops.append((record.id, verdict.reason))
        return stops

    def _follower(self, record: RunRecord) -> ScalarFollower:
        follower = self._followers.get(record.id)
        if follower is None:
            follower = self._followers[record.id] = ScalarFollower(record.log_path)
        if record.id not in self._whole:
            follower.poll_all()
            if record.is_done:  # its files are complete: read once more, never again
                self._whole.add(record.id)
        return follower
