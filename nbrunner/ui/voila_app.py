"""Voila as `nbrunner dashboard` runs it: `python -m nbrunner.ui.voila_app CONFIG.json`.

The config file (written 0600 by `serve`) carries the token, so it is read and deleted at
once and the token never appears in argv. One change to jupyter_server's Host check: it
accepts IP literals only when they are loopback, so a dashboard bound to a LAN address
would refuse its own address; here a Host listed in `local_hostnames` is accepted too.
"""

from __future__ import annotations

import json
import re
import sys
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


def main(argv: list[str]) -> None:
    from voila.app import Voila

    settings = read_once(Path(argv[0]))
    notebook = settings.pop("notebook")
    JupyterHandler.check_host = check_host  # type: ignore[method-assign]
    Voila.launch_instance(argv=[notebook], config=Config(settings))


if __name__ == "__main__":
    main(sys.argv[1:])
