"""The run record: one row of the store, as Python and as JSON."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, NamedTuple

from .notebook import notebook_output
from .states import RunStatus

TIME_FIELDS = ("submitted_at", "claimed_at", "started_at", "ended_at")
JSON_FIELDS = ("params", "argv", "env", "gpus", "cores", "resources", "after", "on_done", "ending")
JSON_FIELDS += ("prune", "provenance")


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class RunRecord:
    id: int
    module: str
    params: dict[str, Any]
    status: RunStatus
    submitted_at: float
    log_path: str
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    pid: int | None = None
    priority: int = 0
    claimed_at: float | None = None
    claimed_by: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    timeout: float | None = None
    restart_of: int | None = None
    gpus: list[str] = field(default_factory=list)
    cores: list[int] = field(default_factory=list)
    on_done: list[str] = field(default_factory=list)
    resources: dict[str, Any] = field(default_factory=dict)
    group: str | None = None
    after: list[int] = field(default_factory=list)
    backend: str = "local"
    backend_ref: str | None = None
    backend_address: str | None = None
    control: str | None = None
    cpu_time: float | None = None
    peak_rss: int | None = None
    cpu_percent: float | None = None
    rss: int | None = None
    gpu_memory: int | None = None
    warning: str | None = None
    env_id: int | None = None  # the submitter's environment, in the store's environments
    ending: dict[str, Any] | None = None  # how the service is stopping it: status, reason
    log_dropped: int | None = None  # bytes of output the log cap dropped
    keep_leftovers: bool = False
    sweep: str | None = None  # the sweep that submitted it (Runner.sweep)
    prune: dict[str, Any] | None = None  # its sweep's pruning rule (nbrunner.pruning)
    provenance: dict[str, Any] | None = None  # the code it ran (nbrunner.provenance)
    retry_lost: int = 0  # times it is queued again if lost (nbrunner.retry)
    version: int = 0

    @classmethod
    def from_row(cls, row: Any) -> RunRecord:
        """A store row (sqlite3.Row) as a record. The service decodes several rows for each
        run it starts, so columns are matched to fields once per column list, and the
        fields are set without the frozen __init__'s one object.__setattr__ per field
        (most of a decode's time); RunRecord has no __post_init__ to skip."""
        columns = tuple(row.keys())
        plan = _ROW_PLANS.get(columns) or _row_plan(columns)
        values = dict(zip(plan.names, row, strict=True))
        for name in plan.dropped:
            del values[name]
        for name, convert in plan.converted:
            values[name] = convert(values[name])
        for name, make in plan.absent:
            values[name] = make()
        record = object.__new__(cls)
        record.__dict__.update(values)
        return record

    def updated(self, columns: dict[str, Any]) -> RunRecord:
        """This record with some columns written anew (values as the store keeps them,
        decoded as from_row decodes them): what a write made of a row it found unchanged."""
        values = dict(self.__dict__)
        for column, value in columns.items():
            name = "group" if column == "grp" else column
            convert = _CONVERTERS.get(name)
            values[name] = value if convert is None else convert(value)
        record = object.__new__(type(self))
        record.__dict__.update(values)
        return record

    @property
    def duration_s(self) -> float | None:
        """Wall time of the run so far (running) or in all (ended)."""
        if self.started_at is None:
            return None
        end = self.ended_at if self.ended_at is not None else time.time()
        return round(end - self.started_at, 3)

    @property
    def notebook_path(self) -> str | None:
        """A notebook run's executed notebook, beside its log (`logs/ID.ipynb`)."""
        return notebook_output(self.argv)

    @property
    def is_done(self) -> bool:
        return self.status.is_done

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: contract fields first, times as ISO-8601 UTC strings."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["status"] = self.status.value
        data["duration_s"] = self.duration_s
        data["notebook_path"] = self.notebook_path
        for key in TIME_FIELDS:
            data[key] = iso(data[key])
        return data


@dataclass(frozen=True)
class SlotHolder:
    """What a claim needs of a run that holds a slot (what it uses, and where): read for
    every claim, so without decoding the whole row."""

    group: str | None
    backend: str
    resources: dict[str, Any]
    gpus: list[str]
    cores: list[int]

    COLUMNS = "grp, backend, resources, gpus, cores"

    @classmethod
    def from_columns(cls, row: Any) -> SlotHolder:
        group, backend, resources, gpus, cores = row
        return cls(
            group,
            backend,
            _decoded("resources", resources),
            _decoded("gpus", gpus),
            _decoded("cores", cores),
        )


_KNOWN = frozenset(f.name for f in fields(RunRecord))


class _RowPlan(NamedTuple):
    names: tuple[str, ...]  # each column's field name (grp is group)
    dropped: tuple[str, ...]  # columns no field holds
    converted: tuple[tuple[str, Callable[[Any], Any]], ...]  # JSON, status, flags
    absent: tuple[tuple[str, Callable[[], Any]], ...]  # fields an older store lacks


_ROW_PLANS: dict[tuple[str, ...], _RowPlan] = {}


def _row_plan(columns: tuple[str, ...]) -> _RowPlan:
    names = tuple("group" if column == "grp" else column for column in columns)
    absent = []
    for f in fields(RunRecord):
        if f.name in names:
            continue
        if f.name in JSON_FIELDS:
            absent.append((f.name, functools.partial(_empty, f.name)))
        elif f.default_factory is not MISSING:
            absent.append((f.name, f.default_factory))
        elif f.default is not MISSING:
            absent.append((f.name, lambda default=f.default: default))
        else:
            raise ValueError(f"a run's row has no {f.name} column: {', '.join(columns)}")
    plan = _RowPlan(
        names,
        tuple(name for name in names if name not in _KNOWN),
        tuple((name, _CONVERTERS[name]) for name in names if name in _CONVERTED),
        tuple(absent),
    )
    _ROW_PLANS[columns] = plan
    return plan


_CONVERTED = frozenset(("status", "keep_leftovers", *JSON_FIELDS))


def _converter(name: str) -> Callable[[Any], Any]:
    if name in JSON_FIELDS:
        return functools.partial(_decoded, name)
    return RunStatus if name == "status" else bool


def _decoded(key: str, text: str | None) -> Any:
    """A JSON column's value; most are empty, and those need no parser."""
    if not text:
        return _empty(key)
    if text in ("[]", "{}"):
        return [] if text == "[]" else {}
    return json.loads(text)


_CONVERTERS = {name: _converter(name) for name in _CONVERTED}


# What a run made again from another keeps of it (a restart, a lost run queued again): the
# same module, params and settings; it stays a peer of its sweep (pruning judges it anew).
AGAIN_KEEPS = (
    "module",
    "params",
    "argv",
    "env",
    "cwd",
    "priority",
    "timeout",
    "resources",
    "group",
    "on_done",
    "env_id",
    "keep_leftovers",
    "sweep",
)


def again_row(record: RunRecord) -> dict[str, Any]:
    """The row of a new run of what `record` ran; restart_of names it."""
    return {key: getattr(record, key) for key in AGAIN_KEEPS} | {"restart_of": record.id}


def queue_positions(records: Iterable[RunRecord]) -> dict[int, int]:
    """1-based places in the queue: higher priority first, then submission order."""
    queued = sorted(
        (r for r in records if r.status is RunStatus.QUEUED), key=lambda r: (-r.priority, r.id)
    )
    return {r.id: place for place, r in enumerate(queued, start=1)}


def differing_params(records: Iterable[RunRecord]) -> set[str]:
    """The param names whose values are not the same in every record."""
    records = list(records)
    names = {name for r in records for name in r.params}
    return {name for name in names if len({repr(r.params.get(name)) for r in records}) > 1}


def params_text(params: dict[str, Any]) -> str:
    """Params as listings show them, and as `history --text` finds them: lr=0.001 amp=True."""
    return " ".join(f"{key}={value}" for key, value in params.items())


def _empty(key: str) -> Any:
    if key in ("ending", "prune", "provenance"):
        return None
    return [] if key in ("argv", "gpus", "cores", "after", "on_done") else {}
