"""The Ray backend: each run is one Ray job (Ray Jobs API), its log mirrored into the run's file.

Ray has no queue and forgets its jobs when the cluster restarts; nbrunner keeps both. The
service's watch of the run submits the run's argv as the job's entrypoint, copies the job's log into
the run's own log file as Ray writes it, and maps Ray's job statuses onto the run's:

    PENDING -> starting    RUNNING -> running    SUCCEEDED -> exit code 0
    FAILED  -> the driver's exit code (1 when the driver never ran)
    STOPPED -> cancelled   no answer for LOST_AFTER_S -> lost

A cluster on this machine (a loopback address) shares its files and interpreter with
nbrunner, so the run starts in its own directory with the same argv as a local run (through
sh, or on Windows through cmd.exe and a small python launcher: see platform.shell_command). A remote
cluster gets the directory as Ray's `working_dir` and runs `python` from its own environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import shlex
import signal
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit

from .. import platform
from ..errors import BackendUnavailable, BadInput, OperationFailed
from ..models import RunRecord
from ..states import RunStatus
from . import ChildEnded, Usage

if TYPE_CHECKING:
    from ray.job_submission import JobDetails, JobSubmissionClient

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
INSTALL_HINT = 'install it with: pip install "nbrunner[ray]"'
CHECK_TIMEOUT_S = 3.0  # an unreachable cluster must fail a submit quickly, not hang it
STATUS_POLL_S = 0.5  # how often a run's watch asks Ray about its job
LOST_AFTER_S = 10.0
SUBMIT_RETRY_S = 30.0  # how long a head that is not ready yet is given to take a job
SUBMIT_RETRY_EVERY_S = 0.5  # a dashboard busy for a moment is not a cluster gone
MIRROR_FINISH_S = 10.0  # for the live tail, when Ray cannot give the whole log
STOP_MARGIN_S = 5.0  # Ray sends SIGTERM, then SIGKILL after 3 s of its own
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# What a job gets of the submitter's environment on top of the module's env: what finds
# its code and how it writes. The rest (PATH, HOME, the GPUs) belongs to this machine.
CHILD_SETTINGS = ("PYTHONUNBUFFERED", "PYTHONIOENCODING", "PYTHONPATH", "NBRUNNER_RUN_ID")
# A modules.toml module runs in the nbrunner home by default: never upload its logs and db.
HOME_EXCLUDES = ["/logs/", "/nbrunner.db*"]


def loopback_head_env(directory: Path) -> dict[str, str]:
    """Environment for a `ray start --head` that must stay on this machine's loopback.

    Even with --node-ip-address 127.0.0.1, Ray advertises the machine's LAN address on
    Linux, and its dashboard asks cloud metadata servers which cloud it runs on, unless a
    cluster config in HOME says so. A one-workstation head needs neither.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ray_bootstrap_config.yaml").write_text("provider:\n  type: local\n")
    return {
        **os.environ,
        "HOME": str(directory),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # i.e. no cluster: use the loopback address
        "RAY_USAGE_STATS_ENABLED": "0",
    }


# -- submit-time checks (in the submitting process: no Ray import, which takes seconds) ------
def normalize_address(address: str | None) -> str:
    """The dashboard URL for an address as a user writes it (host:port is fine)."""
    text = (address or "").strip() or DEFAULT_ADDRESS
    url = text if "://" in text else f"http://{text}"
    parts = urlsplit(url)
    try:
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number, or out of range
        valid = False
    if not valid:
        raise BadInput(f"Ray address {address!r} is not a Ray dashboard URL like {DEFAULT_ADDRESS}")
    return url.rstrip("/")


def check_cluster(address: str | None) -> str:
    """The cluster's dashboard URL, once Ray is installed here and the cluster answers."""
    url = normalize_address(address)
    if importlib.util.find_spec("ray") is None:
        raise BackendUnavailable(f"the Ray backend needs the ray package; {INSTALL_HINT}")
    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=CHECK_TIMEOUT_S) as reply:
            json.load(reply)["ray_version"]  # proves it is a Ray dashboard
    except OSError as exc:  # refused, timed out, unknown host, an HTTP error status
        why = f"{getattr(exc, 'reason', None) or exc}"
    except (ValueError, KeyError, TypeError):
        why = "it answers, but not as a Ray dashboard"
    else:
        return url
    raise BackendUnavailable(
        f"cannot reach the Ray cluster at {url} ({why}); start it, or point nbrunner at it "
        "with `nbrunner config ray.address URL`"
    )


# -- the job ------------------------------------------------------------------------------------
def job_spec(run: RunRecord, env: Mapping[str, str], address: str) -> dict[str, Any]:
    """submit_job's arguments for a run: entrypoint, runtime_env and resources."""
    runtime_env: dict[str, Any] = {"env_vars": _job_env(run, env)}
    if urlsplit(address).hostname in LOOPBACK_HOSTS:  # in place, through this machine's shell
        entrypoint, launch_env = platform.shell_command(run.argv, run.cwd)
        runtime_env["env_vars"].update(launch_env)
    else:
        entrypoint = shlex.join(_portable(run.argv))
        if run.cwd:  # another machine: the directory is uploaded
            runtime_env["working_dir"] = run.cwd
            if (Path(run.cwd) / "nbrunner.db").exists():
                runtime_env["excludes"] = HOME_EXCLUDES
    resources = {
        "entrypoint_num_cpus": run.resources.get("cpus"),
        "entrypoint_num_gpus": run.resources.get("gpus"),
        "entrypoint_memory": run.resources.get("memory"),
    }
    declared = {key: value for key, value in resources.items() if value}
    return {"entrypoint": entrypoint, "runtime_env": runtime_env, **declared}


def _portable(argv: list[str]) -> list[str]:
    """This machine's interpreter stands for "the cluster's python" on another machine."""
    if argv and argv[0] == sys.executable:
        return ["python", *argv[1:]]
    return argv


def _job_env(run: RunRecord, env: Mapping[str, str]) -> dict[str, str]:
    return {key: env[key] for key in (*run.env, *CHILD_SETTINGS) if key in env}


def start_ray_job(run: RunRecord, log: BinaryIO, env: Mapping[str, str]) -> RayJob:
    """Submit the run as a Ray job; OperationFailed with Ray's message if it is not accepted."""
    address = normalize_address(run.backend_address)
    client = _connect(address)
    submission_id = f"nbrunner-{run.id}-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + SUBMIT_RETRY_S
    while True:
        try:
            client.submit_job(submission_id=submission_id, **job_spec(run, env, address))
            return RayJob(client, submission_id, address, log)
        except Exception as exc:  # refused, HTTP error, bad runtime_env: in every case not taken
            if "already exists" in str(exc):  # an earlier try was taken; its answer was lost
                return RayJob(client, submission_id, address, log)
            if not _not_ready(exc) or time.monotonic() > deadline:
                raise OperationFailed(
                    f"the Ray cluster at {address} did not take the job: {exc}"
                ) from None
        time.sleep(SUBMIT_RETRY_EVERY_S)


def _not_ready(exc: Exception) -> bool:
    """A head that has just (re)started: it drops connections, or answers before its job
    agent is up. Worth another try; anything else is the job's fault."""
    text = str(exc)
    return isinstance(exc, ConnectionError | OSError) or any(
        sign in text for sign in ("try again", "Connection aborted", "Connection refused")
    )


def attach_ray_job(run: RunRecord, log: BinaryIO) -> RayJob:
    """A job an earlier service submitted: follow it on, copying only the rest of its log."""
    address = normalize_address(run.backend_address)
    job = RayJob(_connect(address), str(run.backend_ref), address, log, copied=_chars_in(log))
    job.started = run.status is RunStatus.RUNNING
    return job


def _chars_in(log: BinaryIO) -> int:
    try:
        with open(log.name, "rb") as copy:
            return len(copy.read().decode("utf-8", "replace"))
    except (OSError, AttributeError, TypeError):
        return 0


def _connect(address: str) -> JobSubmissionClient:
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as exc:
        raise BackendUnavailable(
            f"the Ray backend needs Ray's job client ({exc}); {INSTALL_HINT}"
        ) from None
    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # the client checks the cluster's version on creation
        raise BackendUnavailable(f"cannot reach the Ray cluster at {address}: {exc}") from None


class RayJob:
    """A submitted Ray job, as a watch's Child."""

    pid = None

    def __init__(
        self,
        client: JobSubmissionClient,
        submission_id: str,
        address: str,
        log: BinaryIO,
        copied: int = 0,
    ) -> None:
        self.ref = submission_id
        self.started = False
        self._client = client
        self._address = address
        self._stopping = False
        self._unanswered_since: float | None = None
        self._mirror = LogMirror(client, submission_id, log, copied)

    def __repr__(self) -> str:
        return f"<RayJob {self.ref} at {self._address}>"

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while True:
            info = self._info()
            if info is not None:
                self.started = self.started or info.status != "PENDING"
                if info.status.is_terminal():
                    self._mirror.finish()
                    return self._exit_code(info)
            remaining = deadline - time.monotonic()
            if remaining <= STATUS_POLL_S:
                time.sleep(max(remaining, 0))
                return None
            time.sleep(STATUS_POLL_S)

    def stop(self, grace: float) -> int:
        self._stopping = True
        # Unanswered, the wait below ends the run lost once that has lasted.
        with contextlib.suppress(OSError, RuntimeError):
            self._client.stop_job(self.ref)
        code = self.wait(grace + STOP_MARGIN_S)
        if code is None:
            raise ChildEnded(
                RunStatus.LOST,
                f"Ray did not stop job {self.ref} within {grace + STOP_MARGIN_S:g} s",
            )
        return code

    def sample(self) -> Usage | None:
        return None  # the job's processes are the cluster's, out of this machine's sight

    def pause(self, paused: bool) -> None:
        raise OperationFailed("a Ray job cannot be paused; cancel it and restart it later")

    def _info(self) -> JobDetails | None:
        """The job's details, or None while the cluster has not answered for long."""
        try:
            info = self._client.get_job_info(self.ref)
        except (OSError, RuntimeError) as exc:  # connection refused, or an HTTP error status
            now = time.monotonic()
            self._unanswered_since = self._unanswered_since or now
            if now - self._unanswered_since >= LOST_AFTER_S:
                raise ChildEnded(
                    RunStatus.LOST,
                    f"the Ray cluster at {self._address} has not answered about job {self.ref} "
                    f"for {LOST_AFTER_S:g} s ({_root_cause(exc)}); it was probably stopped or "
                    "restarted, and its jobs with it",
                ) from None
            return None
        self._unanswered_since = None
        return info

    def _exit_code(self, info: JobDetails) -> int:
        code = info.driver_exit_code
        if info.status == "SUCCEEDED":
            return 0
        if info.status == "STOPPED":
            # Ray stops a driver with SIGTERM; say so when Ray has no exit code for it.
            code = code if code is not None else -int(signal.SIGTERM)
            if self._stopping:
                return code
            raise ChildEnded(RunStatus.CANCELLED, f"Ray job {self.ref} was stopped in Ray", code)
        if code is None:  # the driver never ran: runtime_env setup failed, or no resources
            raise ChildEnded(RunStatus.FAILED, f"Ray: {info.message}", 1)
        return code


def _root_cause(exc: Exception) -> str:
    """'[Errno 111] Connection refused' rather than the three HTTP client errors around it."""
    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\][^'\")]+", text)
    return errno.group(0) if errno else text


class LogMirror:
    """Copies a job's log into the run's log file while Ray writes it, exactly once.

    Ray's log tail is an async generator over a websocket, so it runs on an event loop in a
    thread of its own. Each tail starts at the beginning of the job's log: after a dropped
    connection the next tail skips what is already copied.
    """

    RETRY_S = 1.0

    def __init__(
        self, client: JobSubmissionClient, submission_id: str, log: BinaryIO, copied: int = 0
    ) -> None:
        self._client = client
        self._id = submission_id
        self._log = log
        self._copied = copied  # characters of the job's log already in the file
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._follow, name=f"log {submission_id}", daemon=True
        )
        self._thread.start()

    def _follow(self) -> None:
        while not self._done.is_set():
            try:
                asyncio.run(self._tail_once())
                return  # the tail ends only after the job has ended and all was sent
            except Exception:  # a dropped connection: tail again, or let finish() fill in
                self._done.wait(self.RETRY_S)

    async def _tail_once(self) -> None:
        position = 0
        async for chunk in self._client.tail_job_logs(self._id):
            position += len(chunk)
            self._write(chunk, position)

    def _write(self, chunk: str, end: int) -> None:
        """Write the part of chunk (which ends at `end` in the job's log) not yet copied."""
        with self._lock:
            new = end - self._copied
            if self._done.is_set() or new <= 0:
                return
            self._log.write(chunk[-new:].encode("utf-8", "replace"))
            self._log.flush()
            self._copied = end

    def finish(self) -> None:
        """Once the job has ended: copy what the live tail has not delivered yet.

        Ray's tail closes seconds after a job ends, while the job's log is final at once: one
        read of it completes the file without holding up the run's end.
        """
        try:
            whole = self._client.get_job_logs(self._id)
        except (OSError, RuntimeError):  # no answer: the tail may still deliver the end
            self._thread.join(MIRROR_FINISH_S)
        else:
            self._write(whole, len(whole))
        self._done.set()
