"""Where a run's work actually happens: a local process tree, or a Ray job.

The supervisor drives either through the same small interface, so states, logs, timeouts
and cancellation behave the same on every backend.
"""

from __future__ import annotations

from typing import BinaryIO, Protocol

from ..models import RunRecord

BACKENDS = ("local", "ray")


class Child(Protocol):
    """A started run, as the supervisor sees it."""

    pid: int | None  # the local process (group leader), when there is one
    ref: str | None  # the backend's own id for the run (Ray's submission id)

    def wait(self, timeout: float) -> int | None:
        """The exit code once ended, or None if still running after `timeout` seconds."""

    def stop(self, grace: float) -> int:
        """Stop gracefully, force after `grace` seconds; returns the exit code."""


def start_child(run: RunRecord, log: BinaryIO, env: dict[str, str]) -> Child:
    """Start the run on its backend; OSError (or the backend's error) if it cannot start."""
    if run.backend == "ray":
        from .ray import start_ray_job

        return start_ray_job(run, log, env)
    from .local import LocalChild

    return LocalChild.start(run, log, env)
