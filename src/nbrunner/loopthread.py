"""The process's one background asyncio loop, on a daemon thread: every Runner in the
process ticks on it, and waiters are resolved from it."""

from __future__ import annotations

import asyncio
import threading


class LoopThread:
    """The process's one background asyncio loop."""

    _instance: LoopThread | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        policy_loop = getattr(asyncio, "ProactorEventLoop", asyncio.SelectorEventLoop)
        self.loop: asyncio.AbstractEventLoop = policy_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="nbrunner-loop", daemon=True
        )
        self.thread.start()

    @classmethod
    def get(cls) -> LoopThread:
        with cls._lock:
            if cls._instance is None or not cls._instance.thread.is_alive():
                cls._instance = cls()
            return cls._instance
