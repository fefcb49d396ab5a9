"""The Ray backend against a real local Ray head (one for the session, see conftest), no mocks.

The cluster-restart test stops and restarts the head, so it comes last.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import stop_everything
from helpers.notebooks import write_notebook
from helpers.procs import wait_until
from helpers.ray_head import RayHead, free_port, require_ray
from helpers.sampling import MaxSampler

from nbrunner import Runner
from nbrunner.backends.ray import LOST_AFTER_S, job_spec
from nbrunner.cli import main as cli
from nbrunner.errors import BackendUnavailable, BadInput
from nbrunner.models import RunRecord
from nbrunner.states import RunStatus

pytestmark = pytest.mark.ray

RUN_TIMEOUT_S = 90.0  # a Ray job takes seconds to start on a small machine
LIVE_STATES = {"PENDING", "RUNNING"}


@pytest.fixture(scope="module", autouse=True)
def ray_available() -> None:
    require_ray()


@pytest.fixture(scope="module")
def head(ray_head: RayHead) -> RayHead:
    return ray_head


@pytest.fixture(scope="module")
def ray_jobs(head: RayHead) -> Any:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(head.address)


@pytest.fixture
def ray_runner(home: Path, head: RayHead) -> Iterator[Runner]:
    with Runner(home, backend="ray", address=head.address) as runner:
        yield runner
        stop_everything(runner)


def wait_for_log(runner: Runner, run_id: int, text: str) -> None:
    wait_until(lambda: text in runner.logs(run_id), timeout=RUN_TIMEOUT_S, interval=0.2,
               what=f"{text!r} in the log of run {run_id}")  # fmt: skip


def concurrency_sampler(runner: Runner, ray_jobs: Any) -> MaxSampler:
    """Samples how many runs hold a slot and how many jobs Ray has live."""
    return MaxSampler(
        {
            "store": lambda: len(runner.store.holding_slot()),
            "ray": lambda: sum(job.status in LIVE_STATES for job in ray_jobs.list_jobs()),
        },
        interval=0.2,
    )


def assert_counted_log(text: str, label: str, n: int) -> None:
    """Every step of one count run, each exactly once, and nobody else's lines."""
    lines = [line for line in text.splitlines() if re.fullmatch(r"\S+ \d+/\d+", line)]
    assert lines == [f"{label} {i}/{n}" for i in range(1, n + 1)]


def test_four_runs_two_slots_logs_codes_cancel_restart_history(
    ray_runner: Runner, ray_jobs: Any
) -> None:
    ray_runner.config("max_concurrent", 2)
    ray_runner.register("exit3", command=[sys.executable, "-c",
                                          "import sys; print('bye'); sys.exit(3)"])  # fmt: skip
    with concurrency_sampler(ray_runner, ray_jobs) as sampler:
        doomed = ray_runner.submit("count", {"n": 600, "delay": 0.1, "label": "tokA"})
        counted = ray_runner.submit("count", {"n": 40, "delay": 0.05, "label": "tokB"})
        failing = ray_runner.submit("exit3")
        last = ray_runner.submit("count", {"n": 30, "delay": 0.05, "label": "tokD"})
        wait_for_log(ray_runner, doomed.id, "tokA 5/600")
        wait_until(lambda: doomed.status is RunStatus.RUNNING, what="run 1 running")
        doomed.cancel()
        ended = {run.id: run.wait(RUN_TIMEOUT_S) for run in (doomed, counted, failing, last)}
    assert sampler.most["store"] == 2
    assert 1 <= sampler.most["ray"] <= 2

    assert ended[doomed.id].status is RunStatus.CANCELLED
    assert ray_jobs.get_job_status(ended[doomed.id].backend_ref) == "STOPPED"
    assert "tokA 600/600" not in doomed.logs()
    assert (ended[counted.id].status, ended[counted.id].exit_code) == (RunStatus.SUCCEEDED, 0)
    assert (ended[failing.id].status, ended[failing.id].exit_code) == (RunStatus.FAILED, 3)
    assert ended[failing.id].reason == "exited with code 3"
    assert (ended[last.id].status, ended[last.id].exit_code) == (RunStatus.SUCCEEDED, 0)
    assert_counted_log(counted.logs(), "tokB", 40)
    assert_counted_log(last.logs(), "tokD", 30)
    assert "bye" in failing.logs() and "tok" not in failing.logs()

    again = counted.restart()
    redone = again.wait(RUN_TIMEOUT_S)
    assert (redone.status, redone.restart_of, redone.backend) == (
        RunStatus.SUCCEEDED,
        counted.id,
        "ray",
    )
    assert redone.backend_ref != ended[counted.id].backend_ref
    assert_counted_log(again.logs(), "tokB", 40)

    history = ray_runner.history(limit=10)
    assert sorted(history["id"]) == sorted([*ended, again.id])
    assert set(history["backend"]) == {"ray"}
    assert all(ref.startswith("nbrunner-") for ref in history["backend_ref"])
    known_to_ray = {job.submission_id for job in ray_jobs.list_jobs()}
    assert set(history["backend_ref"]) <= known_to_ray


def test_a_modules_cpus_and_env_reach_its_ray_job(ray_runner: Runner) -> None:
    show = "import os; print(os.environ['MY_SETTING'], os.environ.get('OMP_NUM_THREADS'))"
    ray_runner.register("envshow", command=[sys.executable, "-c", show], env={"MY_SETTING": "42"},
                        resources={"cpus": 2, "memory": "100MB"})  # fmt: skip
    record = ray_runner.submit("envshow").wait(RUN_TIMEOUT_S)
    assert (record.status, record.backend) == (RunStatus.SUCCEEDED, "ray"), record.reason
    # the module's env, and the thread count Ray gives an entrypoint that holds 2 CPUs (else 1)
    assert ray_runner.logs(record.id).splitlines()[-1] == "42 2"


def test_unreachable_cluster_fails_the_submit_and_queues_nothing(
    runner: Runner, capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"http://127.0.0.1:{free_port()}"
    assert cli(["--home", str(runner.home), "config", "ray.address", address]) == 0
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match=re.escape(address)) as failure:
        runner.submit("count", backend="ray")
    assert time.monotonic() - started < 10
    assert "refused" in str(failure.value).lower()
    assert runner.count() == 0

    capsys.readouterr()
    assert cli(["--home", str(runner.home), "run", "count", "--backend", "ray"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("nbrunner: failed: cannot reach the Ray cluster at " + address)
    assert "\n" not in error
    assert runner.count() == 0


def test_malformed_address_is_bad_input(runner: Runner) -> None:
    assert cli(["--home", str(runner.home), "config", "backend", "ray"]) == 0
    runner.config("ray.address", "http://127.0.0.1:port")
    with pytest.raises(BadInput, match="not a Ray dashboard URL"):
        runner.submit("count")
    assert cli(["--home", str(runner.home), "run", "count"]) == 2
    assert runner.count() == 0


def test_without_ray_installed_the_error_names_the_extra(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # how Python hides an uninstalled package
    with pytest.raises(BackendUnavailable, match=re.escape('pip install "nbrunner[ray]"')):
        Runner(runner.home, backend="ray", address=f"127.0.0.1:{free_port()}",
               start=False).submit("count")  # fmt: skip
    assert runner.count() == 0


def spec_for(tmp_path: Path, address: str, **fields: Any) -> dict[str, Any]:
    run = RunRecord(id=7, module="m", params={}, status=RunStatus.STARTING, submitted_at=0.0,
                    log_path=str(tmp_path / "7.log"),
                    argv=[sys.executable, "-m", "pkg.train", "--lr", "0.1 0.2"],
                    env={"OMP_NUM_THREADS": "4"}, cwd=str(tmp_path), **fields)  # fmt: skip
    supervisor_env = {**os.environ, **run.env, "PYTHONUNBUFFERED": "1",
                      "PYTHONIOENCODING": "utf-8", "CUDA_VISIBLE_DEVICES": "0"}  # fmt: skip
    return job_spec(run, supervisor_env, address)


def test_job_spec_on_this_machine_runs_the_local_argv_in_place(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, "http://127.0.0.1:8265",
                    resources={"cpus": 2, "memory": 2_000_000_000, "gpus": 0})  # fmt: skip
    assert spec["entrypoint"] == f"cd {tmp_path} && {sys.executable} -m pkg.train --lr '0.1 0.2'"
    assert spec["runtime_env"] == {
        "env_vars": {"OMP_NUM_THREADS": "4", "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
    }
    assert (spec["entrypoint_num_cpus"], spec["entrypoint_memory"]) == (2, 2_000_000_000)
    assert "entrypoint_num_gpus" not in spec


def test_job_spec_for_a_remote_cluster_uploads_the_directory(tmp_path: Path) -> None:
    (tmp_path / "nbrunner.db").touch()  # the directory is an nbrunner home
    spec = spec_for(tmp_path, "http://ray-head.example:8265", resources={"gpus": 1})
    assert spec["entrypoint"] == "python -m pkg.train --lr '0.1 0.2'"
    assert spec["runtime_env"]["working_dir"] == str(tmp_path)
    assert spec["runtime_env"]["excludes"] == ["/logs/", "/nbrunner.db*"]
    assert spec["entrypoint_num_gpus"] == 1


def test_a_notebook_runs_as_a_ray_job(home: Path, head: RayHead, tmp_path: Path) -> None:
    source = write_notebook(
        tmp_path / "on_ray.ipynb", "print(f'ray says {word}')", "1 / 0", parameters="word = 'hi'"
    )
    with Runner(home, backend="ray", address=head.address) as runner:
        runner.register("on_ray", notebook=str(source))
        run = runner.submit("on_ray", params={"word": "hello"})
        record = run.wait(timeout=RUN_TIMEOUT_S)
        stop_everything(runner)
    log = run.logs()
    assert (record.status, record.backend, record.exit_code) == (RunStatus.FAILED, "ray", 1), log
    assert "ray says hello" in log
    assert "failed: ZeroDivisionError: division by zero" in log.rstrip("\n").rsplit("\n", 1)[-1]
    executed = nbformat.read(record.notebook_path or "", as_version=4)
    assert executed.cells[-1].outputs[-1]["ename"] == "ZeroDivisionError"


def test_cluster_restart_ends_a_running_run_lost_and_history_survives(
    ray_runner: Runner, head: RayHead
) -> None:
    survivor = ray_runner.submit("count", {"n": 3, "delay": 0.05, "label": "tokS"})
    running = ray_runner.submit("count", {"n": 600, "delay": 0.1, "label": "tokL"})
    assert survivor.wait(RUN_TIMEOUT_S).status is RunStatus.SUCCEEDED
    wait_for_log(ray_runner, running.id, "tokL 3/600")

    head.stop()
    lost = running.wait(LOST_AFTER_S + RUN_TIMEOUT_S)  # generous: the machine may be busy
    assert lost.status is RunStatus.LOST
    assert lost.reason.startswith(
        f"the Ray cluster at {head.address} has not answered about job {lost.backend_ref} for "
        f"{LOST_AFTER_S:g} s ("
    )
    assert lost.reason.endswith("); it was probably stopped or restarted, and its jobs with it")
    assert "tokL 3/600" in running.logs()

    head.start()
    assert [r.status for r in (survivor.record, running.record)] == [RunStatus.SUCCEEDED,
                                                                     RunStatus.LOST]  # fmt: skip
    assert "tokS 3/3" in survivor.logs()
    fresh = ray_runner.submit("count", {"n": 2, "delay": 0.05, "label": "tokF"})
    assert fresh.wait(RUN_TIMEOUT_S).status is RunStatus.SUCCEEDED
