"""A handle on one run, as `Runner.submit` returns it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .models import RunRecord
from .states import RunStatus

if TYPE_CHECKING:
    from .runner import Runner


class Run:
    """A handle on one run; attributes read its current record from the store."""

    def __init__(self, runner: Runner, run_id: int) -> None:
        self.runner = runner
        self.id = run_id

    def __repr__(self) -> str:
        r = self.record
        if r.status is RunStatus.RUNNING:
            detail = f" for {r.duration_s or 0:.1f} s (pid {r.pid})"
        elif r.status is RunStatus.QUEUED:
            detail = f", priority {r.priority}"
        else:
            detail = f" (exit code {r.exit_code})" if r.exit_code is not None else ""
        return f"<Run {r.id} {r.module} {r.status.value}{detail}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and other.id == self.id and other.runner is self.runner

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def record(self) -> RunRecord:
        return self.runner.store.get(self.id)

    @property
    def status(self) -> RunStatus:
        return self.record.status

    @property
    def exit_code(self) -> int | None:
        return self.record.exit_code

    @property
    def reason(self) -> str | None:
        return self.record.reason

    @property
    def pid(self) -> int | None:
        return self.record.pid

    @property
    def module(self) -> str:
        return self.record.module

    @property
    def params(self) -> dict[str, Any]:
        return self.record.params

    @property
    def log_path(self) -> str:
        return self.record.log_path

    def to_dict(self) -> dict[str, Any]:
        return self.record.to_dict()

    def wait(self, timeout: float | None = None) -> RunRecord:
        return self.runner.wait(self.id, timeout)

    async def wait_async(self, timeout: float | None = None) -> RunRecord:
        return await self.runner.wait_async(self.id, timeout)

    def logs(self, tail: int | None = None, raw: bool = False) -> str:
        return self.runner.logs(self.id, tail=tail, raw=raw)

    def cancel(self) -> RunRecord:
        return self.runner.cancel(self.id)

    def restart(self, params: Mapping[str, Any] | None = None, **options: Any) -> Run:
        """A new run like this one, with `params` changed; see Runner.restart."""
        return self.runner.restart(self.id, params, **options)

    def pause(self) -> RunRecord:
        return self.runner.pause(self.id)

    def resume(self) -> RunRecord:
        return self.runner.resume(self.id)

    def move_to_front(self) -> RunRecord:
        return self.runner.move_to_front(self.id)

    def on_done(self, callback: Callable[[RunRecord], Any]) -> None:
        self.runner.on_done(self.id, callback)
