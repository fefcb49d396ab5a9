"""The system sampler: CPU, memory and GPUs about once a second, with a rolling window.

One sampler per process, shared by every dashboard in it; it runs only while someone
holds it (the dashboards do) and keeps the last ten minutes for sparklines.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import psutil

from .gpu import GpuSample, gpu_source
from .resources import memory_capacity

INTERVAL_S = 1.0
WINDOW_S = 600


@dataclass(frozen=True)
class SystemSample:
    time: float
    cpu_percent: float
    per_core: tuple[float, ...]
    memory_used: int
    memory_available: int
    memory_total: int
    gpus: tuple[GpuSample, ...] = ()
    gpu_status: str = ""

    @property
    def memory_percent(self) -> float:
        return 100.0 * self.memory_used / self.memory_total if self.memory_total else 0.0


def take_sample() -> SystemSample:
    per_core = tuple(psutil.cpu_percent(percpu=True))
    memory_total, memory_available = memory_capacity()  # a container's, inside one
    source = gpu_source()
    return SystemSample(
        time=time.time(),
        cpu_percent=sum(per_core) / len(per_core) if per_core else 0.0,
        per_core=per_core,
        memory_used=memory_total - memory_available,
        memory_available=memory_available,
        memory_total=memory_total,
        gpus=tuple(source.sample()),
        gpu_status=source.reason,
    )


class SystemSampler:
    """Samples in a daemon thread while at least one user holds it (acquire / release)."""

    _shared: SystemSampler | None = None
    _shared_lock = threading.Lock()

    def __init__(self, interval: float = INTERVAL_S, window_s: float = WINDOW_S) -> None:
        self.interval = interval
        self.samples: deque[SystemSample] = deque(maxlen=max(1, int(window_s / interval)))
        self._users = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def shared(cls) -> SystemSampler:
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def acquire(self) -> SystemSampler:
        """Hold the sampler; starts a thread unless one runs that is not asked to stop
        (a thread still winding down from the last release does not count)."""
        with self._lock:
            self._users += 1
            if self._thread is None or self._stop.is_set() or not self._thread.is_alive():
                self._stop = threading.Event()
                psutil.cpu_percent(percpu=True)  # primes the counters psutil diffs against
                self.samples.append(take_sample())
                self._thread = threading.Thread(
                    target=self._loop, args=(self._stop,), name="nbrunner-sampler", daemon=True
                )
                self._thread.start()
        return self

    def release(self) -> None:
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0:
                self._stop.set()

    def history(self, seconds: float = WINDOW_S) -> list[SystemSample]:
        cutoff = time.time() - seconds
        return [s for s in list(self.samples) if s.time >= cutoff]

    def _loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            self.samples.append(take_sample())
