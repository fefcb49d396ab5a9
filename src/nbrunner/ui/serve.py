"""`nbrunner dashboard`: the packaged dashboard notebook served as a web app by Voila.

The dashboard launches runs as its owner, so only its owner may drive it, as in Jupyter:
- a fresh secret token on every start, in the URL printed on stdout and opened in the
  browser, and in a private (0600) config file that Voila reads and deletes: never in argv;
  a request without it is sent to the login page and starts no kernel;
- requests whose Host is not the bound address or a local name are refused (DNS
  rebinding), and so are websockets from another Origin (jupyter_server's own checks);
- kernels of pages that are gone are culled: a kernel with no open page and no execution
  for `CULL_IDLE_TIMEOUT_S` goes within `CULL_INTERVAL_S` more. Widget traffic does not
  count as activity, or an orphaned dashboard would keep its kernel forever;
- SIGTERM or Ctrl-C stops Voila, which shuts every page kernel down.
Runs are not affected by any of this: they live in their recorders, under the home's service.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import webbrowser
from collections.abc import Iterator
from importlib import resources as package_files
from pathlib import Path
from typing import Any

import psutil

from ..errors import BadInput

NOTEBOOK = "dashboard.ipynb"
CULL_IDLE_TIMEOUT_S = 30
CULL_INTERVAL_S = 10
WIDGET_MESSAGES = ("comm_open", "comm_msg", "comm_close")
LISTEN_TIMEOUT_S = 120
STOP_TIMEOUT_S = 20
WILDCARDS = ("", "0.0.0.0", "::")
WSAEADDRINUSE = 10048  # what Windows says of a taken port


def untracked_messages() -> list[str]:
    """The server's default untracked message types, plus the widget messages."""
    from jupyter_server.services.kernels.kernelmanager import MappingKernelManager

    defaults = MappingKernelManager.class_traits()["untracked_message_types"].default()
    return [*defaults, *(m for m in WIDGET_MESSAGES if m not in defaults)]


def local_hostnames(ip: str) -> list[str]:
    """Host names a request may carry: local names and the bound address (every address of
    this machine when bound to all of them). Loopback addresses are always allowed."""
    names = {"localhost", ip}
    if ip in WILDCARDS:
        import psutil

        names |= {socket.gethostname(), socket.getfqdn()}
        ips = (socket.AF_INET, socket.AF_INET6)  # not a card's MAC address
        names |= {
            a.address.split("%")[0]  # fe80::1%eth0: a Host header carries no zone
            for nic in psutil.net_if_addrs().values()
            for a in nic
            if a.family in ips
        }
    return sorted(n for n in names if n not in WILDCARDS)


def voila_config(ip: str, port: int, token: str, notebook: Path) -> dict[str, Any]:
    """Everything Voila is told, token included: written to a private file, not argv."""
    return {
        "notebook": str(notebook),
        "Voila": {
            "ip": ip,
            "port": port,
            "port_retries": 0,  # the URL we print must be the one it listens on
            "open_browser": False,  # we open it, with the token in the URL
            "token": token,
            "tornado_settings": {
                "allow_remote_access": False,
                "local_hostnames": local_hostnames(ip),
            },
        },
        "MappingKernelManager": {
            "cull_idle_timeout": CULL_IDLE_TIMEOUT_S,
            "cull_interval": CULL_INTERVAL_S,
            "cull_connected": False,
            "untracked_message_types": untracked_messages(),
        },
    }


def url_for(ip: str, port: int, token: str) -> str:
    host = "127.0.0.1" if ip in WILDCARDS else ip
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/?token={token}"


@contextlib.contextmanager
def private_config(config: dict[str, Any]) -> Iterator[Path]:
    """The config as a file only this user can read; removed when done (the server removes
    it as soon as it has read it)."""
    with tempfile.TemporaryDirectory(prefix="nbrunner-dashboard-") as folder:
        path = Path(folder) / "voila.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(config, f)
        yield path


def check_port(ip: str, port: int) -> None:
    """Refuse, in one line, an address Voila could not serve on: it is told not to move, and
    would give up only after starting (port 0 asks the system for a free port)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            ip or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise BadInput(f"--ip {ip!r} is no address of this machine ({exc.strerror})") from None
    with socket.socket(family, kind, proto) as probe:
        if os.name != "nt":  # as Voila binds: a port in TIME_WAIT is free
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE or getattr(exc, "winerror", None) == WSAEADDRINUSE:
                raise BadInput(
                    f"port {port} on {ip or 'every address'} is taken by another program: "
                    "choose another with --port (0: any free port)"
                ) from None
            raise BadInput(f"cannot serve on {ip} port {port}: {exc.strerror}") from None


def listening_ports(pid: int) -> set[int] | None:
    """The TCP ports the process itself listens on; None where the system does not let us
    look (then only a connect can tell)."""
    try:
        found = psutil.Process(pid)
        sockets = getattr(found, "net_connections", None) or found.connections  # psutil < 6
        return {
            c.laddr.port for c in sockets(kind="tcp") if c.status == psutil.CONN_LISTEN and c.laddr
        }
    except psutil.AccessDenied:
        return None
    except psutil.Error:  # it ended
        return set()


def wait_until_listening(
    ip: str, port: int, process: subprocess.Popen[bytes], timeout: float = LISTEN_TIMEOUT_S
) -> int | None:
    """The port Voila's own process listens on (the system's choice for port 0), once it
    does; None if it ended first. Its sockets are looked at, not connected to: a connect
    would also reach another program on the port (and an HTTP request would start a
    kernel)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        ports = listening_ports(process.pid)
        if ports is None and port and _accepts(ip, port):
            return port
        if ports and (port in ports or port == 0):
            return port or min(ports)
        time.sleep(0.1)
    return None


def _accepts(ip: str, port: int) -> bool:
    host = "127.0.0.1" if ip in WILDCARDS else ip
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM lets Voila shut its page kernels down; SIGKILL if it does not end in time."""
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


class Stopped(Exception):
    """SIGTERM reached `nbrunner dashboard`."""


def _raise_stopped(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a second one must not cut the stop
    raise Stopped


def serve(
    home: str | Path,
    *,
    port: int = 8866,
    ip: str = "127.0.0.1",
    open_browser: bool = True,
    modules_file: str | Path | None = None,
) -> int:
    """Serve the dashboard until SIGTERM or Ctrl-C; returns Voila's exit status."""
    env = dict(os.environ, NBRUNNER_HOME=str(Path(home).expanduser().resolve()))
    if modules_file:
        env["NBRUNNER_MODULES"] = str(Path(modules_file).expanduser().resolve())
    check_port(ip, port)
    token = secrets.token_urlsafe(32)
    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        with (
            package_files.as_file(package_files.files("nbrunner.ui") / NOTEBOOK) as notebook,
            private_config(voila_config(ip, port, token, notebook)) as config,
        ):
            command = [sys.executable, "-m", "nbrunner.ui.voila_app", str(config)]
            process = subprocess.Popen(command, env=env)
            try:
                return _watch(process, ip, port, token, open_browser)
            finally:
                stop(process)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _watch(
    process: subprocess.Popen[bytes], ip: str, port: int, token: str, open_browser: bool
) -> int:
    try:
        listening = wait_until_listening(ip, port, process)
        if listening is not None:
            url = url_for(ip, listening, token)
            print(url, flush=True)
            if open_browser:
                webbrowser.open(url)
        return process.wait()
    except (KeyboardInterrupt, Stopped):
        return stop(process)
