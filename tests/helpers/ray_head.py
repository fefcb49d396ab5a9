"""A throwaway local Ray head for tests: loopback only, free ports, a temp dir of its own.

The head runs as `ray start --head --block`, so every Ray process is its descendant: stopping
it ends exactly those processes (`ray stop` would end every Ray process on the machine, other
clusters' included).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
from contextlib import closing, suppress
from pathlib import Path

import psutil
import pytest

from bench.peers import free_ports
from nbrunner.backends.ray import loopback_head_env

from .procs import alive, wait_until

START_TIMEOUT_S = 90.0
# Ray's services end on SIGTERM at once; `ray start --block` and the autoscaler monitor
# ignore it, so they are killed after this.
STOP_GRACE_S = 3.0
# Every port a head listens on; left to Ray, some are fixed numbers that would clash with
# another head on the same machine.
PORT_OPTIONS = (
    "--port",
    "--dashboard-port",
    "--node-manager-port",
    "--object-manager-port",
    "--ray-client-server-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
)


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RayHead:
    """One local head; `start` and `stop` may be called again to restart it on the same ports."""

    def __init__(self, num_cpus: int = 2, object_store_bytes: int = 100 * 1024**2) -> None:
        self.ports = dict(zip(PORT_OPTIONS, free_ports(len(PORT_OPTIONS)), strict=True))
        self.num_cpus = num_cpus
        self.object_store_bytes = object_store_bytes
        # Short: Ray puts unix sockets under it, and those paths are limited to ~100 bytes.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rayt"))
        self.output = self.temp_dir / "head.out"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.ports['--dashboard-port']}"

    def argv(self) -> list[str]:
        ports = [str(part) for option, port in self.ports.items() for part in (option, port)]
        return [
            sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
            "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1", *ports,
            "--num-cpus", str(self.num_cpus), "--num-gpus", "0",
            "--object-store-memory", str(self.object_store_bytes),
            "--temp-dir", str(self.temp_dir), "--disable-usage-stats",
        ]  # fmt: skip

    def start(self) -> RayHead:
        with open(self.output, "ab") as output:
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True, env=loopback_head_env(self.temp_dir / "home"),
            )  # fmt: skip
        wait_until(self.ready, timeout=START_TIMEOUT_S, interval=0.25, what="the Ray head")
        return self

    def ready(self) -> bool:
        """The dashboard answers and its job API is up (it comes a little after the version)."""
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"the Ray head exited: {self.output.read_text()[-3000:]}")
        try:
            for path in ("/api/version", "/api/jobs/"):
                with urllib.request.urlopen(self.address + path, timeout=2) as reply:
                    json.load(reply)
        except (OSError, ValueError):
            return False
        return True

    def processes(self) -> list[psutil.Process]:
        """Every process of this head: the descendants of `ray start`, and those its
        components re-parented or started late (no descendants of it, but they inherit the
        head's HOME) with their own descendants (renamed ones, whose environment reads as
        garbage, among them)."""
        home = str(self.temp_dir / "home")
        roots = [self.proc.pid] if self.proc is not None else []
        for process in psutil.process_iter():
            with suppress(psutil.Error):
                if process.pid != os.getpid() and process.environ().get("HOME") == home:
                    roots.append(process.pid)
        found: dict[int, psutil.Process] = {}
        for pid in roots:
            with suppress(psutil.Error):
                root = psutil.Process(pid)
                for process in [root, *root.children(recursive=True)]:
                    found[process.pid] = process
        return list(found.values())

    def stop(self) -> None:
        """End the head and every process it started: SIGTERM, then SIGKILL after a grace.
        Every process seen on the way is followed, even once nothing leads to it any more."""
        if self.proc is None:
            return
        seen: dict[int, psutil.Process] = {}

        def living() -> list[psutil.Process]:
            for process in self.processes():
                seen.setdefault(process.pid, process)
            return [p for p in seen.values() if p.is_running() and alive(p.pid)]

        for process in living():
            with suppress(psutil.Error):
                process.terminate()
        with suppress(AssertionError):
            wait_until(
                lambda: not living(), timeout=STOP_GRACE_S, interval=0.1, what="the head to stop"
            )
        for process in living():
            with suppress(psutil.Error):
                process.kill()
        self.proc.wait()
        wait_until(lambda: not living(), timeout=30, what="the Ray head's processes to go")
        self.proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


def require_ray() -> None:
    """Skip without Ray, or fail under CI=true, where a missing dependency is a failure."""
    if ray_installed():
        return
    message = 'ray is not installed: pip install -e ".[ray]"'
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
