"""`nbrunner dashboard`: the packaged dashboard notebook served as a web app by Voila.

Voila starts a kernel per page load and shuts it down when the tab closes; culling is the
backstop for tabs that vanish without saying so. The dashboard's own widget traffic must
not count as activity for that, or an orphaned dashboard would keep its kernel forever, so
widget messages are left out of the activity the server tracks. Runs are not affected by
any of this: they live in their supervisors.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from importlib import resources as package_files
from pathlib import Path

from ..errors import BadInput

NOTEBOOK = "dashboard.ipynb"
CULL_IDLE_TIMEOUT_S = 600
CULL_INTERVAL_S = 60
WIDGET_MESSAGES = ("comm_open", "comm_msg", "comm_close")


def untracked_messages() -> list[str]:
    """The server's default untracked message types, plus the widget messages."""
    from jupyter_server.services.kernels.kernelmanager import MappingKernelManager

    defaults = MappingKernelManager.class_traits()["untracked_message_types"].default()
    return [*defaults, *(m for m in WIDGET_MESSAGES if m not in defaults)]


def is_loopback(ip: str) -> bool:
    if ip == "localhost":
        return True
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def voila_command(
    port: int, ip: str, open_browser: bool, token: str | None, notebook: Path
) -> list[str]:
    """The Voila command line; refuses a non-loopback address without a token."""
    if not is_loopback(ip) and not token:
        raise BadInput(
            f"refusing to serve the dashboard on {ip!r} without a token: anyone who can reach "
            "it could run commands; pass --token SECRET, or use --ip 127.0.0.1"
        )
    command = [
        sys.executable,
        "-m",
        "voila",
        str(notebook),
        f"--port={port}",
        f"--Voila.ip={ip}",
        f"--Voila.open_browser={open_browser}",
        f"--MappingKernelManager.cull_idle_timeout={CULL_IDLE_TIMEOUT_S}",
        f"--MappingKernelManager.cull_interval={CULL_INTERVAL_S}",
        f"--MappingKernelManager.untracked_message_types={untracked_messages()!r}",
    ]
    if token:
        command.append(f"--Voila.token={token}")
    return command


def serve(
    home: str | Path,
    *,
    port: int = 8866,
    ip: str = "127.0.0.1",
    open_browser: bool = True,
    token: str | None = None,
    modules_file: str | Path | None = None,
) -> int:
    """Serve the dashboard until interrupted; returns Voila's exit status."""
    env = dict(os.environ, NBRUNNER_HOME=str(Path(home).expanduser().resolve()))
    if modules_file:
        env["NBRUNNER_MODULES"] = str(Path(modules_file).expanduser().resolve())
    with package_files.as_file(package_files.files("nbrunner.ui") / NOTEBOOK) as notebook:
        command = voila_command(port, ip, open_browser, token, notebook)
        process = subprocess.Popen(command, env=env)
        try:
            return process.wait()
        except KeyboardInterrupt:  # Ctrl+C reaches Voila too; let it shut down cleanly
            return process.wait()
