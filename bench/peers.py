"""The peers nbrunner is compared with: finding them, and driving each one the same way.

Nothing is installed here. A peer that is missing is reported with its install command and
its rows are left out of the results.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import psutil

from nbrunner.backends.ray import loopback_head_env

from .harness import wait_until


@dataclass(frozen=True)
class Peer:
    name: str
    found: bool
    version: str
    install: str
    command: str = ""


def _first_line(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return ""
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def find_tsp() -> Peer:
    """task-spooler is `tsp` on Debian, `ts` elsewhere (but moreutils also has a `ts`)."""
    hint = "apt-get install task-spooler  (Debian/Ubuntu; the binary is tsp)"
    for name in ("tsp", "ts"):
        path = shutil.which(name)
        if path:
            line = _first_line([path, "-V"])
            if "Task Spooler" in line:
                return Peer("tsp", True, line.split(" - ")[0], hint, path)
    return Peer("tsp", False, "", hint)


def find_parallel() -> Peer:
    """GNU parallel (moreutils ships a different `parallel`)."""
    hint = "apt-get install parallel"
    path = shutil.which("parallel")
    line = _first_line([path, "--version"]) if path else ""
    if "GNU parallel" in line:
        return Peer("parallel", True, line, hint, path or "parallel")
    return Peer("parallel", False, "", hint)


def find_ray() -> Peer:
    hint = 'pip install "ray[default]"  (or: pip install -e ".[ray]")'
    try:
        version = importlib.metadata.version("ray")
        importlib.metadata.version("aiohttp")  # the [default] extra: dashboard and Jobs
    except importlib.metadata.PackageNotFoundError:
        return Peer("ray", False, "", hint)
    return Peer("ray", True, f"ray {version}", hint, "ray")


def find_peers() -> dict[str, Peer]:
    return {peer.name: peer for peer in (find_tsp(), find_parallel(), find_ray())}


# -- task-spooler ---------------------------------------------------------------------------------
class Tsp:
    """A private task-spooler server (own socket and TMPDIR) with `slots` parallel jobs."""

    def __init__(self, binary: str, slots: int = 10) -> None:
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="nbb-tsp-"))
        self.env = {
            **os.environ,
            "TS_SOCKET": str(self.dir / "socket"),
            "TMPDIR": str(self.dir),
            "TS_MAXFINISHED": "100000",
        }
        self.call("-S", str(slots))

    def call(self, *args: str) -> str:
        out = subprocess.run(
            [self.binary, *args], env=self.env, capture_output=True, text=True, check=False
        )
        return out.stdout.strip()

    def add(self, argv: Sequence[str]) -> int:
        return int(self.call(*argv))

    def busy(self) -> bool:
        listing = self.call("-l").splitlines()[1:]
        return any(" running " in line or " queued " in line for line in listing)

    def wait_all(self, timeout: float = 600) -> None:
        wait_until(lambda: not self.busy(), timeout, "tsp jobs done", step=0.05)

    def output(self, job: int) -> str:
        return Path(self.call("-o", str(job))).read_text(errors="replace")

    def close(self) -> None:
        self.call("-K")
        shutil.rmtree(self.dir, ignore_errors=True)


# -- GNU parallel ---------------------------------------------------------------------------------
def parallel_batch_argv(binary: str, jobs: int, argv: Sequence[str], count: int) -> list[str]:
    """`parallel -jJOBS -N0 -q ARGV ::: 1..count`: the same command `count` times."""
    return [binary, f"-j{jobs}", "-N0", "-q", *argv, ":::", *map(str, range(count))]


class ParallelFeed:
    """A GNU parallel reading commands from stdin as they come, like a queue."""

    def __init__(self, binary: str, jobs: int) -> None:
        self.proc = subprocess.Popen(
            [binary, f"-j{jobs}", "--line-buffer"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )

    def add(self, argv: Sequence[str]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(shlex.join(argv) + "\n")
        self.proc.stdin.flush()

    def read_line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline()

    def close(self) -> None:
        """parallel puts each job in a process group of its own: its whole tree is killed."""
        import psutil

        jobs: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            jobs = psutil.Process(self.proc.pid).children(recursive=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for job in jobs:
            with contextlib.suppress(psutil.Error):
                job.kill()
        self.proc.wait()


# -- Ray ------------------------------------------------------------------------------------------
def free_ports(count: int) -> list[int]:
    """Distinct free ports: each socket stays bound until all are chosen (one closed before
    the next is bound may be handed out again, and Ray refuses one port given twice)."""
    with ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


# Ray gives a starting node a fixed 30 s to register with its GCS; a loaded machine can miss
# that, and only then is a start tried again.
NODE_STARTUP_TIMEOUT = "The current node timed out during startup"
START_ATTEMPTS = 2


class RayHead:
    """A local Ray head bound to 127.0.0.1, with its own ports and temp dir.

    It is stopped by ending its own processes (found by its temp dir), never with `ray stop`,
    which would also stop any other Ray cluster of this user on the machine.
    """

    def __init__(self, cpus: int) -> None:
        self.temp = Path(tempfile.mkdtemp(prefix="nbb-ray-", dir="/tmp"))
        flags = (
            "--dashboard-port", "--port", "--ray-client-server-port",
            "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
            "--runtime-env-agent-port", "--metrics-export-port", "--node-manager-port",
            "--object-manager-port",
        )  # fmt: skip
        ports: dict[str, int] = dict(zip(flags, free_ports(len(flags)), strict=True))
        self.dashboard_port = ports["--dashboard-port"]
        # between Ray's default worker ports (10002-19999: another head, the tests') and the
        # ports the system hands out (Linux's from 32768, as free_ports got above): a worker
        # range that takes in one of those makes `ray start` refuse
        worker_base = random.randrange(20000, 32600, 200)
        ports |= {"--min-worker-port": worker_base, "--max-worker-port": worker_base + 199}
        sibling = Path(sys.executable).with_name("ray")
        ray = str(sibling) if sibling.exists() else shutil.which("ray") or "ray"
        argv = [ray, "start", "--head", "--node-ip-address", "127.0.0.1"]
        argv += ["--dashboard-host", "127.0.0.1", "--num-cpus", str(cpus)]
        argv += ["--temp-dir", str(self.temp), "--disable-usage-stats"]
        for flag, port in ports.items():
            argv += [flag, str(port)]
        self.started = time.perf_counter()
        env = loopback_head_env(self.temp / "home")
        for attempt in range(START_ATTEMPTS):
            started = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
            if started.returncode == 0:
                break
            said = (started.stderr or started.stdout).strip().splitlines()[-8:]
            self._end_processes()  # what the failed start left, before trying again
            if attempt == START_ATTEMPTS - 1 or NODE_STARTUP_TIMEOUT not in started.stderr:
                raise RuntimeError(
                    f"ray start exited with {started.returncode}: " + " | ".join(said)
                )
        self.start_seconds = time.perf_counter() - self.started

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def processes(self) -> list[psutil.Process]:
        return ray_processes(str(self.temp))

    def stop(self) -> None:
        self._end_processes()
        shutil.rmtree(self.temp, ignore_errors=True)

    def _end_processes(self) -> None:
        procs = self.processes()
        for process in procs:
            with contextlib.suppress(psutil.Error):
                process.terminate()
        _gone, alive = psutil.wait_procs(procs, timeout=10)
        for process in alive + self.processes():  # and any started meanwhile
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(alive, timeout=10)


def ray_processes(temp_dir: str) -> list[psutil.Process]:
    """Every process of the Ray head using temp_dir, and all their descendants: those that
    name it, and those that inherited its HOME (the client server names neither, and its
    parent may be gone)."""
    home = str(Path(temp_dir) / "home")
    heads: list[psutil.Process] = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            names_it = any(temp_dir in part for part in process.info["cmdline"] or ())
            if names_it or (process.pid != os.getpid() and process.environ().get("HOME") == home):
                heads.append(process)
    found = {p.pid: p for p in heads}
    for process in heads:
        with contextlib.suppress(psutil.Error):
            found.update({c.pid: c for c in process.children(recursive=True)})
    return list(found.values())


class RayJobs:
    """Ray Jobs through JobSubmissionClient, as a user of Ray would submit runs."""

    DONE = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})

    def __init__(self, address: str) -> None:
        from ray.job_submission import JobSubmissionClient

        self.client = JobSubmissionClient(address)

    def submit(self, argv: Sequence[str]) -> str:
        return str(self.client.submit_job(entrypoint=shlex.join(argv)))

    def status(self, job: str) -> str:
        return str(self.client.get_job_status(job).value)

    def wait(
        self, jobs: Sequence[str], states: frozenset[str] = DONE, timeout: float = 600
    ) -> None:
        pending = list(jobs)
        deadline = time.monotonic() + timeout
        while pending:
            pending = [job for job in pending if self.status(job) not in states]
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{len(pending)} Ray jobs not {sorted(states)} after {timeout} s"
                )
            time.sleep(0.05)

    def logs(self, job: str) -> str:
        return str(self.client.get_job_logs(job))

    def stop(self, jobs: Sequence[str]) -> None:
        for job in jobs:
            with contextlib.suppress(Exception):
                self.client.stop_job(job)
        self.wait(jobs)
