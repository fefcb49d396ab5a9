"""Where a run's work actually happens: a local process tree (started by whoever holds
the run, see nbrunner.holding), or a Ray job. Both end in the same states, logs, timeouts
and cancellation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..errors import BadInput
from ..states import RunStatus

BACKENDS = ("local", "ray")


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise BadInput(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")
    return name


class ChildEnded(Exception):
    """Raised by `wait` or `stop` when a run ended in a way an exit code cannot say.

    A Ray job stopped from Ray itself ends `cancelled`; a cluster that stopped answering
    ends the run `lost`. `reason` is shown to the user.
    """

    def __init__(self, status: RunStatus, reason: str, exit_code: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.exit_code = exit_code


@dataclass(frozen=True)
class Usage:
    """What a run's processes use right now, summed over its whole tree."""

    rss: int
    cpu_time: float
    cpu_percent: float
    pids: tuple[int, ...]


class Child(Protocol):
    """A started run, as the service's watch of it sees it."""

    pid: int | None  # the local process (group leader), when there is one
    ref: str | None  # the backend's own id for the run (Ray's submission id)
    started: bool  # its work has begun (False while a Ray job waits for resources)

    def wait(self, timeout: float) -> int | None:
        """The exit code once ended, or None if still running after `timeout` seconds.

        Also updates `started`; raises ChildEnded for an end that is not an exit code.
        """

    def stop(self, grace: float) -> int:
        """Stop gracefully, force after `grace` seconds; returns the exit code."""

    def sample(self) -> Usage | None:
        """Resource use of the run's processes, where this backend can see them."""

    def pause(self, paused: bool) -> None:
        """Suspend (True) or continue (False) the work; OperationFailed if unsupported."""
