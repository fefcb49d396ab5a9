"""The local backend: the run's argv as a process group of its own on this machine."""

from __future__ import annotations

import subprocess
import threading
from contextlib import suppress
from typing import TYPE_CHECKING, BinaryIO

from .. import platform
from ..models import RunRecord
from . import Usage

if TYPE_CHECKING:
    from .tree import ProcessTree


class LocalChild:
    ref = None
    started = True  # a process is working as soon as it is spawned

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pid: int | None = proc.pid
        # Popen.wait(timeout) polls about 20 times a second; a thread blocked in waitpid
        # costs nothing until the child ends, which keeps ten idle supervisors idle.
        self._ended = threading.Event()
        threading.Thread(target=self._reap, name="reaper", daemon=True).start()
        # Built on first use, so psutil is loaded after the child started, not before.
        self._tree: ProcessTree | None = None

    @classmethod
    def start(cls, run: RunRecord, log: BinaryIO, env: dict[str, str]) -> LocalChild:
        proc = subprocess.Popen(
            run.argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=run.cwd or None,
            env=env,
            **platform.child_popen_kwargs(),
        )
        return cls(proc)

    def _reap(self) -> None:
        self.proc.wait()
        self._ended.set()

    def wait(self, timeout: float) -> int | None:
        return self.proc.returncode if self._ended.wait(timeout) else None

    def stop(self, grace: float) -> int:
        from .tree import stop_tree

        self.pause(False)  # a stopped process cannot act on SIGTERM
        stop_tree(self.proc, grace)
        return self.proc.returncode

    @property
    def tree(self) -> ProcessTree:
        if self._tree is None:
            from .tree import ProcessTree

            self._tree = ProcessTree(self.proc.pid)
        return self._tree

    def sample(self) -> Usage | None:
        return self.tree.sample()

    def pause(self, paused: bool) -> None:
        import psutil

        platform.suspend_group(self.proc.pid, paused)
        for member in self.tree.members(rescan=True):
            with suppress(psutil.Error):
                member.suspend() if paused else member.resume()
