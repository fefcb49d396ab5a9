"""Entry point of one isolated measurement: `python -m bench.isolate MODULE:FUNC ARGS HOME OUT`.

On Linux the process becomes a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so detached
descendants are re-parented to it; functions marked `adopts_orphans` get a reaper thread that
collects them, which adds their CPU time to RUSAGE_CHILDREN. Whatever is still alive when the
function returns is killed, so no measurement leaks processes into the next one.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import sys
import threading
from pathlib import Path

import psutil

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def reap_forever(stop: threading.Event) -> None:
    """Reap each descendant as it exits, blocked in wait4 while there is one to wait for: a
    poll would wake the measured process 100 times a second, and the monitoring benchmark
    counts that process's CPU as the runner's."""
    while not stop.is_set():
        try:
            os.wait4(-1, 0)
        except ChildProcessError:  # no child yet, or none left
            stop.wait(0.05)


def kill_descendants() -> None:
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            process.kill()


def main(argv: list[str]) -> None:
    target, args, home, out = argv
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(f"bench.{module_name}"), func_name)
    stop = threading.Event()
    if getattr(func, "adopts_orphans", False) and become_subreaper():
        threading.Thread(target=reap_forever, args=(stop,), daemon=True).start()
    try:
        metrics = func(Path(home), **json.loads(args))
    finally:
        kill_descendants()
        stop.set()
    Path(out).write_text(json.dumps(metrics))


if __name__ == "__main__":
    main(sys.argv[1:])
