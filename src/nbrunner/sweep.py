"""Sweeps: the parameter points of a grid, or a seeded random sample of a space.

A space maps each parameter to its candidates: a list of values, or for random sampling a
range `(low, high)` (uniform; whole numbers when both ends are) or `(low, high, "log")`
(log-uniform). A sweep's runs share a sweep id (`Runner.sweep`), kept in the store's `sweep`
column, so history filters by it and Compare opens it whole.
"""

from __future__ import annotations

import itertools
import math
import random
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import InvalidParameter

if TYPE_CHECKING:
    from .models import RunRecord
    from .run import Run

MAX_POINTS = 10_000
Space = Mapping[str, Any]


def grid_points(grid: Space) -> list[dict[str, Any]]:
    """Every combination of the grid's lists, the first parameter varying slowest."""
    lists = {name: _candidates(name, values) for name, values in grid.items()}
    count = math.prod(len(v) for v in lists.values())
    _check_count(count)
    return [dict(zip(lists, combo, strict=True)) for combo in itertools.product(*lists.values())]


def random_points(space: Space, count: int, seed: int | None = None) -> list[dict[str, Any]]:
    """`count` points drawn from the space; the same seed gives the same points."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InvalidParameter(f"count must be a whole number ≥ 1, got {count!r}")
    _check_count(count)
    rng = random.Random(seed)
    drawers = {name: _drawer(name, candidates) for name, candidates in space.items()}
    return [{name: draw(rng) for name, draw in drawers.items()} for _ in range(count)]


def new_id(module: str) -> str:
    """A short sweep id that names its module: `train-3f9a1c`."""
    return f"{module}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Sweep:
    """The runs one sweep submitted, in the order of its points."""

    id: str
    runs: list[Run]

    def __iter__(self) -> Any:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)

    @property
    def ids(self) -> list[int]:
        return [run.id for run in self.runs]

    def wait(self, timeout: float | None = None) -> list[RunRecord]:
        """Block until every run of the sweep has ended; their records, in point order."""
        return self.runs[0].runner.wait(self.runs, timeout) if self.runs else []


def _candidates(name: str, values: Any) -> list[Any]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
        raise InvalidParameter(
            f"sweep values of {name!r} must be a non-empty list like [1e-3, 1e-4], got {values!r}"
        )
    return list(values)


def _drawer(name: str, candidates: Any) -> Any:
    if isinstance(candidates, tuple) and _is_range(candidates):
        low, high = candidates[0], candidates[1]
        if len(candidates) == 3:
            if low <= 0:
                raise InvalidParameter(f"a log range of {name!r} must start above 0, got {low!r}")
            return lambda rng: math.exp(rng.uniform(math.log(low), math.log(high)))
        if isinstance(low, int) and isinstance(high, int):
            return lambda rng: rng.randint(low, high)
        return lambda rng: rng.uniform(low, high)
    values = _candidates(name, candidates)
    return lambda rng: rng.choice(values)


def _is_range(candidates: tuple[Any, ...]) -> bool:
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in candidates[:2])
    shape = len(candidates) == 2 or (len(candidates) == 3 and candidates[2] == "log")
    return numbers and shape and candidates[0] < candidates[1]


def _check_count(count: int) -> None:
    if count > MAX_POINTS:
        raise InvalidParameter(f"a sweep has at most {MAX_POINTS} points, this one {count}")
