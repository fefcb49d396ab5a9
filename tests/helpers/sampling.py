"""Watching a quantity in the background while a test runs, keeping its maximum."""

from __future__ import annotations

import threading
from collections.abc import Callable


class MaxSampler:
    """Calls each probe every `interval` seconds in a thread; `most[name]` is its maximum."""

    def __init__(self, probes: dict[str, Callable[[], int]], interval: float = 0.02) -> None:
        self.probes = probes
        self.interval = interval
        self.most = dict.fromkeys(probes, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> MaxSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            for name, probe in self.probes.items():
                self.most[name] = max(self.most[name], probe())
