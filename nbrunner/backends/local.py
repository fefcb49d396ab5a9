"""The local backend: the run's argv as a process group of its own on this machine."""

from __future__ import annotations

import subprocess
import time
from contextlib import suppress
from typing import BinaryIO

from .. import platform
from ..models import RunRecord


class LocalChild:
    ref = None
    started = True  # a process is working as soon as it is spawned

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pid: int | None = proc.pid

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

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float) -> int:
        stop_tree(self.proc, grace)
        return self.proc.returncode


def stop_tree(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Graceful signal to the whole tree, then a kill once the grace period is over.

    Descendants are listed first, so that any that left the child's process group (their
    own setsid) are still reached.
    """
    import psutil  # only paid on the kill path

    def alive(p: psutil.Process) -> bool:
        with suppress(psutil.Error):
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        return False

    tree: list[psutil.Process] = []
    with suppress(psutil.Error):
        tree = psutil.Process(proc.pid).children(recursive=True)
    platform.signal_group(proc.pid, graceful=True)
    for member in tree:
        with suppress(psutil.Error):
            member.terminate()
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and (proc.poll() is None or any(map(alive, tree))):
        time.sleep(0.05)
    platform.signal_group(proc.pid, graceful=False)
    for member in tree:
        with suppress(psutil.Error):
            member.kill()
    if proc.poll() is None:
        proc.kill()
    proc.wait()
