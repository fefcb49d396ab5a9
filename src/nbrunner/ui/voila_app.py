"""Voila as `nbrunner dashboard` runs it: `python -m nbrunner.ui.voila_app CONFIG.json`.

The config file (written 0600 by `serve`) carries the token, so it is read and deleted at
once and the token never appears in argv. One change to jupyter_server's Host check: it
accepts IP literals only when they are loopback, so a dashboard bound to a LAN address
would refuse its own address; here a Host listed in `local_hostnames` is accepted too.
Stopping: SIGTERM, SIGINT (Ctrl-C reaches the whole terminal group) and the death of
`nbrunner dashboard` (even by SIGKILL) all just ask Voila's loop to stop; Voila then ends
its page kernels at once (not one graceful shutdown after another). A second signal during
that does not cut it short.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from jupyter_server.base.handlers import JupyterHandler
from traitlets.config import Config

_loopback_or_local_name = JupyterHandler.check_host


def host_name(host_header: str) -> str:
    """`[::1]:8866` → `::1`, `example.org:80` → `example.org`."""
    match = re.match(r"^(.*?)(:\d+)?$", host_header)
    name = match.group(1) if match else host_header
    return name[1:-1] if name.startswith("[") and name.endswith("]") else name


def check_host(self: JupyterHandler) -> bool:
    if host_name(self.request.host) in self.settings.get("local_hostnames", ()):
        return True
    return bool(_loopback_or_local_name(self))


def read_once(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    finally:
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # its private folder, or a killed parent leaves it
            path.parent.rmdir()


def request_stop(app: Any) -> None:
    """Ask Voila's loop to stop; safe from a signal handler and from another thread."""
    app.ioloop.add_callback(app.ioloop.stop)


def stop_on_signals(app: Any) -> None:
    def handler(signum: int, frame: object) -> None:
        if getattr(app, "ioloop", None) is None:  # not serving yet: nothing to shut down
            raise SystemExit(128 + signum)
        request_stop(app)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)


def stop_when_orphaned(app: Any, parent: int, every_s: float = 1.0) -> None:
    """Stop once our parent process has gone."""
    while os.getppid() == parent or getattr(app, "ioloop", None) is None:
        time.sleep(every_s)
    request_stop(app)


class NoMaskedUrl(logging.Filter):
    """Drop Voila's "running at http://…/?token=..." line: its token is masked, and people
    and scripts took that first URL (and met the login page). `nbrunner dashboard` prints
    the one URL to open."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "?token=..." not in record.getMessage()


def stop_at_once(app: Any) -> None:
    """Voila's own stop asks each page kernel to shut down and waits for it: seconds per
    kernel on a busy machine, so Ctrl-C seemed to hang. A page kernel holds nothing to save
    (runs live in their recorders, under the home's service): each is ended at once."""
    from jupyter_core.utils import run_sync

    shutil.rmtree(app.connection_dir, ignore_errors=True)
    run_sync(app.kernel_manager.shutdown_all)(now=True)


def main(argv: list[str]) -> None:
    from voila.app import Voila

    settings = read_once(Path(argv[0]))
    notebook = settings.pop("notebook")
    JupyterHandler.check_host = check_host  # type: ignore[method-assign]
    app = Voila.instance(config=Config(settings))
    watcher = threading.Thread(
        target=stop_when_orphaned, args=(app, os.getppid()), name="orphan-watch", daemon=True
    )
    watcher.start()
    app.initialize([notebook])
    for handler in app.log.handlers or logging.getLogger().handlers:
        handler.addFilter(NoMaskedUrl())
    stop_on_signals(app)  # after initialize, which sets Voila's own SIGTERM handler
    app.stop = lambda: stop_at_once(app)
    app.start()


if __name__ == "__main__":
    main(sys.argv[1:])
