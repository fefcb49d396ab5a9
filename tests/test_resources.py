"""Admission by declared resources, GPU assignment, limits enforced, queue control, metrics.

GPUs come from a declared inventory (NBRUNNER_GPUS), the one stand-in these tests use:
admission, assignment and CUDA_VISIBLE_DEVICES then run their real code paths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.cli import cli, cli_json
from helpers.counting import counts_on, last_count
from helpers.procs import alive, python, wait_for_file, wait_until

from nbrunner import Runner
from nbrunner.errors import InvalidTransition, ResourceRequestError
from nbrunner.gpu import DeclaredGpus
from nbrunner.monitor import SystemSampler
from nbrunner.resources import Capacity, Device, Ledger, Resources, parse_size
from nbrunner.states import RunStatus
from nbrunner.store import Store

SHOW_GPUS = "import os, time; print(repr(os.environ.get('CUDA_VISIBLE_DEVICES')), os.environ.get('CUDA_DEVICE_ORDER')); time.sleep(float(os.environ.get('HOLD', '0')))"
COUNTER = "import time\nfor i in range(10000):\n    print(i, flush=True); time.sleep(0.05)"


def gpus(monkeypatch: pytest.MonkeyPatch, *memories: str) -> None:
    inventory = [{"name": f"RTX 5090 #{i}", "memory": m} for i, m in enumerate(memories)]
    monkeypatch.setenv("NBRUNNER_GPUS", json.dumps(inventory))


@pytest.fixture
def gpu_runner(runner: Runner) -> Runner:
    runner.register("gpu", command=python(SHOW_GPUS), env={"HOLD": "1.5"}, resources={"gpus": 1})
    runner.register("cpu", command=python(SHOW_GPUS))
    return runner


def test_second_gpu_run_waits_while_cpu_runs_start(
    gpu_runner: Runner, monkeypatch, tmp_path: Path
) -> None:
    gpus(monkeypatch, "32GB")
    release = tmp_path / "release"  # GPU runs hold the GPU until the CPU runs are done
    gpu_runner.register(
        "gpu", command=python(SHOW_GPUS + "\n" + wait_for_file(release)), resources={"gpus": 1}
    )
    first, second = gpu_runner.submit("gpu"), gpu_runner.submit("gpu")
    cpu_runs = [gpu_runner.submit("cpu") for _ in range(3)]
    wait_until(lambda: first.status is RunStatus.RUNNING, what="first GPU run")
    cpu_records = [run.wait(timeout=60) for run in cpu_runs]
    assert second.status is RunStatus.QUEUED  # the GPU is still taken
    release.touch()
    assert all(r.status is RunStatus.SUCCEEDED for r in cpu_records)
    assert all(r.ended_at < first.wait(timeout=30).ended_at for r in cpu_records)
    second_record = second.wait(timeout=30)
    assert second_record.started_at >= first.record.ended_at
    for record in (first.record, second_record):
        assert record.gpus == ["0"]
        assert Path(record.log_path).read_text() == "'0' PCI_BUS_ID\n"
    assert (
        Path(cpu_records[0].log_path)
        .read_text()
        .startswith(repr(os.environ.get("CUDA_VISIBLE_DEVICES")))
    )


def test_two_gpus_run_side_by_side_each_with_its_own_device(gpu_runner, monkeypatch) -> None:
    gpus(monkeypatch, "24GB", "24GB")
    runs = [gpu_runner.submit("gpu"), gpu_runner.submit("gpu")]
    records = [r.wait(timeout=30) for r in runs]
    assert sorted(r.gpus[0] for r in records) == ["0", "1"]
    assert records[1].started_at < records[0].ended_at  # they overlapped
    assert {Path(r.log_path).read_text() for r in records} == {
        "'0' PCI_BUS_ID\n",
        "'1' PCI_BUS_ID\n",
    }


def test_gpu_memory_shares_pack_one_device(runner: Runner, monkeypatch) -> None:
    gpus(monkeypatch, "32GB")
    runner.register(
        "share",
        command=python(SHOW_GPUS),
        env={"HOLD": "1.5"},
        params={"n": {"type": "int", "default": 0}},
    )
    small = [runner.submit("share", {"n": i}, resources={"gpu_memory": "12GB"}) for i in range(2)]
    big = runner.submit("share", resources={"gpu_memory": "20GB"})
    wait_until(lambda: all(r.status is RunStatus.RUNNING for r in small), what="both shares")
    assert big.status is RunStatus.QUEUED  # 12 + 12 + 20 > 32
    assert [r.record.gpus for r in small] == [["0"], ["0"]]
    assert big.wait(timeout=30).status is RunStatus.SUCCEEDED


SUBMIT_A_GPU_RUN = """
import os, sys, time
from nbrunner import Runner
home, gate, show = sys.argv[1:]
with Runner(home) as runner:
    runner.register("gpu", command=[sys.executable, "-c", show], env={"HOLD": "1"},
                    resources={"gpus": 1})
    print("ready", flush=True)
    while not os.path.exists(gate):
        time.sleep(0.01)
    print(runner.submit("gpu").id, flush=True)
"""


def test_two_processes_never_hold_the_one_gpu_at_once(
    home: Path, tmp_path: Path, monkeypatch
) -> None:
    gpus(monkeypatch, "32GB")
    gate = tmp_path / "go"
    submitters = [
        subprocess.Popen(
            [*python(SUBMIT_A_GPU_RUN), str(home), str(gate), SHOW_GPUS],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    assert [p.stdout.readline() for p in submitters] == ["ready\n"] * 2
    gate.touch()  # both submit at once
    ids = [int(p.communicate(timeout=60)[0]) for p in submitters]
    store = Store(home)
    records = [
        wait_until(lambda i=i: store.get(i).is_done and store.get(i), what=f"run {i} to end")
        for i in ids
    ]
    first, second = sorted(records, key=lambda r: r.started_at)
    assert [r.status for r in (first, second)] == [RunStatus.SUCCEEDED] * 2
    assert first.gpus == second.gpus == ["0"]
    assert second.started_at >= first.ended_at  # never both on the GPU


def test_cpu_only_runs_hide_gpus_only_when_the_module_asks(runner: Runner, monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    runner.register("hidden", command=python(SHOW_GPUS), hide_gpus=True)
    runner.register("plain", command=python(SHOW_GPUS))
    hidden, plain = runner.submit("hidden").wait(30), runner.submit("plain").wait(30)
    assert Path(hidden.log_path).read_text() == "'' None\n"
    assert Path(plain.log_path).read_text() == "None None\n"


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"gpus": 3}, r"3 GPU\(s\) but this machine has 1"),
        ({"memory": "200GB"}, "200.0 GB of memory but this machine has"),
        ({"cpus": 4096}, "4096 CPUs but this machine has"),
        (
            {"gpu_memory": "64GB"},
            "64.0 GB of one GPU's memory but the largest GPU here has 32.0 GB",
        ),
        ({"gpus": -1}, "gpus must be a whole number ≥ 0"),
        ({"memory": "a lot"}, "memory must be a size like '4GB'"),
        ({"disk": 1}, "unknown resource 'disk'"),
    ],
)
def test_impossible_requests_are_rejected_at_submit(
    runner: Runner, monkeypatch, resources, message
) -> None:
    gpus(monkeypatch, "32GB")
    with pytest.raises(ResourceRequestError, match=message):
        runner.submit("count", resources=resources)
    assert runner.count() == 0


@pytest.mark.parametrize(
    "asked",
    [{}, {"cpus": 1}, {"cpus": 0.5}, {"cpus": 1, "pin": True}, {"cpus": 1.5}, {"memory": 1},
     {"gpus": 1}, {"gpu_memory": 1}, {"cpus": 0.5, "pin": True}],
)  # fmt: skip
def test_a_request_said_to_fit_any_machine_fits_the_smallest(asked: dict) -> None:
    """Submit skips reading the machine for what fits anywhere: never for what might not."""
    needs = Resources.from_mapping(asked)
    smallest = Capacity(cpus=1, memory_total=0, memory_available=0, cores=(0,))
    try:
        smallest.check_possible(needs)
        fits = True
    except ResourceRequestError:
        fits = False
    assert needs.fits_any_machine == fits


def test_a_run_past_its_memory_limit_is_stopped_and_its_neighbour_is_not(
    runner: Runner, tmp_path: Path
) -> None:
    hog = (
        "import time\nblocks = []\nfor _ in range(100):\n"
        "    blocks.append(bytearray(20_000_000)); time.sleep(0.05)\ntime.sleep(60)"
    )
    runner.register("hog", command=python(hog), resources={"memory": "150MB"})
    release = tmp_path / "release"  # the neighbour runs until the hog has been judged
    runner.register("neighbour", command=python(wait_for_file(release)))
    neighbour = runner.submit("neighbour")
    wait_until(lambda: neighbour.status is RunStatus.RUNNING, what="the neighbour running")
    record = runner.submit("hog").wait(timeout=60)
    assert record.status is RunStatus.FAILED
    assert "over its limit of 150.0 MB" in record.reason and "peak" in record.reason
    assert record.peak_rss > 150_000_000
    assert neighbour.status is RunStatus.RUNNING
    release.touch()
    assert neighbour.wait(timeout=60).status is RunStatus.SUCCEEDED


def test_pinned_runs_get_distinct_cores(runner: Runner) -> None:
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("this platform reports no CPU affinity")
    show = "import os, time; print(sorted(os.sched_getaffinity(0))); time.sleep(1)"
    runner.register(
        "pinned",
        command=python(show),
        resources={"cpus": 1, "pin": True},
        params={"n": {"type": "int", "default": 0}},
    )
    records = [r.wait(timeout=30) for r in [runner.submit("pinned", {"n": i}) for i in range(2)]]
    cores = [json.loads(Path(r.log_path).read_text()) for r in records]
    assert [len(c) for c in cores] == [1, 1] and cores[0] != cores[1]
    assert [r.cores for r in records] == cores


def test_groups_have_their_own_limit(runner: Runner) -> None:
    runner.config("group.gpu", 1)
    grouped = [runner.submit("count", {"n": 5, "delay": 0.1}, group="gpu") for _ in range(2)]
    free = runner.submit("count", {"n": 1, "delay": 0})
    assert free.wait(timeout=30).status is RunStatus.SUCCEEDED
    first, second = (r.wait(timeout=30) for r in grouped)
    assert second.started_at >= first.ended_at


def test_dependencies_start_after_success_and_cancel_after_failure(runner: Runner) -> None:
    runner.register("fail", command=python("raise SystemExit(4)"))
    base = runner.submit("count", {"n": 3, "delay": 0.1})
    after_ok = runner.submit("count", {"n": 1, "delay": 0}, after=[base])
    failing = runner.submit("fail")
    after_fail = runner.submit("count", {"n": 1}, after=[failing.id, base.id])
    ok_record = after_ok.wait(timeout=30)
    assert ok_record.status is RunStatus.SUCCEEDED
    assert ok_record.started_at >= base.record.ended_at
    cancelled = after_fail.wait(timeout=30)
    assert cancelled.status is RunStatus.CANCELLED
    assert cancelled.reason == f"run {failing.id}, which it depends on, ended failed"


def _service_acts(witness, times: int) -> None:
    """Wait until the home's service has acted `times` times more: it alone pauses and
    resumes a run, and claims in the same tick."""
    for _ in range(times):
        witness.pause()
        wait_until(lambda: witness.status is RunStatus.PAUSED, what="the witness paused")
        witness.resume()
        wait_until(lambda: witness.status is RunStatus.RUNNING, what="the witness resumed")


def test_pause_stops_the_counter_and_resume_continues_it(runner: Runner) -> None:
    runner.register("counter", command=python(COUNTER))
    run, witness = runner.submit("counter"), runner.submit("counter")
    wait_until(lambda: last_count(run.logs()) >= 3, what="counting")
    assert run.pause().control == "pause"
    wait_until(lambda: run.status is RunStatus.PAUSED, what="paused")
    frozen = last_count(run.logs())
    counts_on(witness.logs, 10)
    assert last_count(run.logs()) <= frozen + 1  # at most one line was in flight
    with pytest.raises(InvalidTransition, match="only a running run can be asked to pause"):
        run.pause()
    run.resume()
    wait_until(lambda: run.status is RunStatus.RUNNING, what="running again")
    wait_until(lambda: last_count(run.logs()) > frozen + 3, what="counting again")
    run.cancel()  # a paused-then-running tree still stops
    assert run.wait(timeout=20).status is RunStatus.CANCELLED


def test_cancelling_a_paused_run_stops_it(runner: Runner) -> None:
    runner.register("counter", command=python(COUNTER))
    run = runner.submit("counter")
    wait_until(lambda: run.status is RunStatus.RUNNING, what="running")
    run.pause()
    wait_until(lambda: run.status is RunStatus.PAUSED, what="paused")
    assert (Path(runner.home) / "runs" / f"{run.id}.pause").exists()  # its timeout stops
    pid = run.pid
    run.cancel()
    assert run.wait(timeout=20).status is RunStatus.CANCELLED
    assert not alive(pid)
    runs = Path(runner.home) / "runs"
    wait_until(
        lambda: not [n for n in os.listdir(runs) if n.startswith(f"{run.id}.")],
        what="no file of the run left (its journal, its pause file)",
    )


def test_drain_lets_running_runs_finish_and_starts_nothing(runner: Runner) -> None:
    runner.register("counter", command=python(COUNTER))
    witness = runner.submit("counter")
    running = runner.submit("count", {"n": 5, "delay": 0.1})
    wait_until(lambda: running.status is RunStatus.RUNNING, what="running")
    runner.config("paused", True)
    waiting = runner.submit("count", {"n": 1})
    assert running.wait(timeout=30).status is RunStatus.SUCCEEDED
    _service_acts(witness, 3)
    counts_on(witness.logs, 40)  # 40 sleeps of 0.05 s: the service's idle ticks passed too
    assert waiting.status is RunStatus.QUEUED
    runner.config("paused", False)
    assert waiting.wait(timeout=30).status is RunStatus.SUCCEEDED


def test_move_to_front(runner: Runner) -> None:
    runner.config("paused", True)
    runner.config("max_concurrent", 1)
    runs = [runner.submit("count", {"n": 0}, priority=p) for p in (3, 0, 5)]
    assert runs[1].move_to_front().priority == 6
    runner.config("paused", False)
    records = [r.wait(timeout=30) for r in runs]
    order = [r.id for r in sorted(records, key=lambda r: r.started_at)]
    assert order == [runs[1].id, runs[2].id, runs[0].id]
    with pytest.raises(InvalidTransition, match="only queued runs can move"):
        runs[0].move_to_front()


def test_metrics_with_ten_active_runs(runner: Runner) -> None:
    runner.register(
        "busy", command=python("import time\nend = time.time() + 8\nwhile time.time() < end: pass")
    )
    runs = [runner.submit("count", {"n": 30, "delay": 0.1}) for _ in range(9)]
    busy = runner.submit("busy")
    wait_until(lambda: runner.metrics()["running"] == 10, what="ten running")
    metrics = runner.metrics()
    assert metrics["queued"] == 0 and metrics["total"] == 10
    wait_until(lambda: busy.record.cpu_percent and busy.record.rss, what="live metrics")
    live = busy.record
    assert 10 < live.cpu_percent < 250 and 1_000_000 < live.rss < 500_000_000
    for run in runs:
        run.wait(timeout=60)
    done = busy.wait(timeout=60)
    assert done.cpu_time > 1.0 and done.peak_rss > 1_000_000 and done.rss is None
    metrics = runner.metrics()
    assert metrics["runs_by_status"]["succeeded"] == 10 and metrics["running"] == 0
    count = metrics["modules"]["count"]
    assert count["runs"] == 9 and 0 <= count["mean_wait_s"] < 30 and 2.5 < count["mean_run_s"] < 30
    assert runner.history(limit=1)["peak_rss"].iloc[0] > 0


def test_metrics_cli_json_and_prometheus(runner: Runner, home: Path) -> None:
    runner.submit("count", {"n": 1, "delay": 0}).wait(timeout=30)
    cli = [sys.executable, "-m", "nbrunner", "metrics", "--home", str(home)]
    data = json.loads(
        subprocess.run([*cli, "--json"], capture_output=True, text=True, check=True).stdout
    )
    assert data["runs_by_status"]["succeeded"] == 1
    text = subprocess.run([*cli, "--prometheus"], capture_output=True, text=True, check=True).stdout
    assert 'nbrunner_runs{status="succeeded"} 1' in text
    assert 'nbrunner_run_seconds_mean{module="count"}' in text


def test_on_done_hooks_python_and_module(runner: Runner, tmp_path: Path) -> None:
    marker = tmp_path / "hook.txt"
    write = f"import sys; open({str(marker)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')"
    runner.register(
        "hooked",
        command=python("raise SystemExit(2)"),
        on_done=[sys.executable, "-c", write, "{id}", "{module}", "{status}", "{exit_code}"],
    )
    seen: list[str] = []
    run = runner.submit("hooked")
    run.on_done(lambda record: seen.append(record.status.value))
    run.wait(timeout=30)
    wait_until(lambda: marker.exists() and marker.read_text(), what="hook output")
    assert marker.read_text() == f"{run.id} hooked failed 2\n"
    wait_until(lambda: seen == ["failed"], what="python callback")
    hook_log = Path(run.log_path).with_suffix(".on_done.log")
    wait_until(
        lambda: "on_done hook exited with code 0" in hook_log.read_text(),
        what="the hook's exit code in its log",
    )


def test_on_done_as_one_quoted_string_as_the_readme_shows(home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "hook.txt"
    write = f"import sys; open({str(marker)!r}, 'w').write(sys.argv[1])"
    hook = f"{shlex.quote(sys.executable)} -c {shlex.quote(write)} "
    hook += "'run {id} of {module}: {status} ({exit_code})'"
    (home / "modules.toml").write_text(
        "[modules.hooked]\n"
        f"command = {json.dumps(python('raise SystemExit(2)'))}\n"
        f"on_done = {json.dumps(hook)}\n"
    )
    run_id = cli(home, "run", "hooked", "--wait", check=False).stdout.strip()
    hook_log = Path(cli_json(home, "show", run_id)["log_path"]).with_suffix(".on_done.log")
    wait_until(lambda: hook_log.exists() and "on_done hook" in hook_log.read_text(), what="hook")
    assert hook_log.read_text().endswith("on_done hook exited with code 0\n")
    assert marker.read_text() == f"run {run_id} of hooked: failed (2)"


def test_a_failing_hook_is_logged_not_raised(runner: Runner) -> None:
    runner.register("badhook", command=["true"], on_done="/nonexistent/notify {status}")
    run = runner.submit("badhook")
    assert run.wait(timeout=30).status is RunStatus.SUCCEEDED
    hook_log = Path(run.log_path).with_suffix(".on_done.log")
    wait_until(hook_log.exists, what="hook log")
    wait_until(lambda: "on_done hook failed" in hook_log.read_text(), what="failure logged")


def test_sampler_keeps_a_rolling_window() -> None:
    sampler = SystemSampler(interval=0.05, window_s=0.2).acquire()
    first = sampler.samples[0]
    wait_until(lambda: all(s is not first for s in sampler.samples), what="samples past the window")
    sampler.release()
    assert 1 <= len(sampler.samples) <= 4
    assert sampler.history(seconds=10) == list(sampler.samples)


def test_a_sampler_held_again_while_winding_down_keeps_sampling() -> None:
    sampler = SystemSampler(interval=0.05, window_s=10)
    sampler.acquire().release()  # its thread is told to stop...
    sampler.acquire()  # ...and a new user comes before it has
    try:
        count = len(sampler.samples)
        wait_until(lambda: len(sampler.samples) >= count + 3, what="samples still coming")
    finally:
        sampler.release()


def test_declared_inventory_is_validated() -> None:
    assert [d.memory_total for d in DeclaredGpus('[{"memory": "8GB"}]').devices()] == [8 * 10**9]
    with pytest.raises(ValueError, match="NBRUNNER_GPUS must be a JSON list like"):
        DeclaredGpus("{oops")


def test_ledger_memory_counts_runs_admitted_in_the_same_pass() -> None:
    ledger = Ledger(
        Capacity(
            cpus=8,
            memory_total=16 * 10**9,
            memory_available=5 * 10**9,
            devices=(Device(0, 8 * 10**9),),
        )
    )
    need = Resources(memory=3 * 10**9)
    ledger.take(need, ledger.fit(need), admitted=True)
    assert ledger.fit(need) is None  # 3 + 3 GB > 5 GB available now


@pytest.mark.parametrize(
    ("text", "size"),
    [("4GB", 4 * 10**9), ("512MB", 512 * 10**6), ("1.5GiB", int(1.5 * 2**30)), (1024, 1024)],
)
def test_sizes(text, size) -> None:
    assert parse_size(text) == size


# -- memory capacity inside a container (cgroup limits) -----------------------------------
def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_cgroup_v2_memory_limit_is_the_tightest_with_its_usage_less_inactive_cache(
    tmp_path: Path,
) -> None:
    from nbrunner import platform

    root = write_tree(
        tmp_path,
        {
            "memory.max": "max\n",
            "user.slice/memory.max": "8000000000\n",
            "user.slice/memory.current": "1\n",
            "user.slice/job/memory.max": "2000000000\n",
            "user.slice/job/memory.current": "700000000\n",
            "user.slice/job/memory.stat": "anon 500000000\ninactive_file 200000000\n",
        },
    )
    assert platform.cgroup_memory_limit(root, "0::/user.slice/job\n") == (
        2_000_000_000,
        500_000_000,
    )
    assert platform.cgroup_memory_limit(root, "0::/\n") is None  # "max": no limit
    assert platform.cgroup_memory_limit(root, "0::/elsewhere\n") is None


def test_a_cgroup_v1_memory_limit_is_read_from_the_memory_controller(tmp_path: Path) -> None:
    from nbrunner import platform

    root = write_tree(
        tmp_path,
        {
            "memory/docker/abc/memory.limit_in_bytes": "2147483648\n",
            "memory/docker/abc/memory.usage_in_bytes": "1073741824\n",
            "memory/memory.limit_in_bytes": "9223372036854771712\n",  # v1's "unlimited"
        },
    )
    membership = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n"
    assert platform.cgroup_memory_limit(root, membership) == (2147483648, 1073741824)
    unlimited = write_tree(
        tmp_path / "host", {"memory/memory.limit_in_bytes": "9223372036854771712\n"}
    )
    assert platform.cgroup_memory_limit(unlimited, membership) is None


def test_memory_capacity_is_the_smaller_of_the_machines_and_the_containers() -> None:
    from nbrunner.resources import capped_memory

    gb = 1_000_000_000
    assert capped_memory(64 * gb, 60 * gb, None) == (64 * gb, 60 * gb)
    assert capped_memory(64 * gb, 60 * gb, (128 * gb, 1 * gb)) == (64 * gb, 60 * gb)
    assert capped_memory(64 * gb, 60 * gb, (2 * gb, gb // 2)) == (2 * gb, 3 * gb // 2)
    assert capped_memory(64 * gb, gb, (2 * gb, None)) == (2 * gb, gb)  # the host is fuller
    assert capped_memory(64 * gb, 60 * gb, (2 * gb, 3 * gb)) == (2 * gb, 0)


BIG_MODULE = """
[modules.big]
command = ["python", "-c", "pass"]
[modules.big.resources]
memory = "2GB"
"""
CAPACITY = (
    "from nbrunner.resources import machine_capacity; "
    "print(machine_capacity(with_gpus=False).memory_total)"
)


@pytest.fixture
def memory_cgroup(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A real cgroup (v1 or v2, whichever this kernel gives memory) limited to 1 GB, below
    this process's own; skipped where it cannot be made (not root, no memory controller)."""
    parent, limit_name = Path("/sys/fs/cgroup"), "memory.max"  # v2 unless v1 has memory
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hierarchy, controllers, path = [*line.split(":", 2), "", ""][:3]
        if "memory" in controllers.split(","):
            parent, limit_name = (
                Path("/sys/fs/cgroup", controllers, path.lstrip("/")),
                ("memory.limit_in_bytes"),
            )
            break
        if hierarchy == "0":
            parent = Path("/sys/fs/cgroup", path.lstrip("/"))
    group = parent / f"nbrunner-test-{os.getpid()}-{request.node.name[-20:]}"
    try:
        group.mkdir()
        (group / limit_name).write_text(str(1 << 30))
    except OSError as exc:
        with contextlib.suppress(OSError):
            group.rmdir()
        pytest.skip(f"no memory cgroup can be made here ({exc})")
    yield group
    wait_until(lambda: not (group / "cgroup.procs").read_text().strip(), timeout=30)
    group.rmdir()


def in_cgroup(
    group: Path, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """argv run inside the cgroup: the shell moves itself in, then becomes the program."""
    script = f"echo $$ > {shlex.quote(str(group / 'cgroup.procs'))} && exec {shlex.join(argv)}"
    return subprocess.run(
        ["sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_inside_a_memory_limited_cgroup_capacity_is_its_limit_and_bigger_runs_are_refused(
    memory_cgroup: Path, home: Path
) -> None:
    inside = in_cgroup(memory_cgroup, sys.executable, "-c", CAPACITY)
    assert inside.returncode == 0, inside.stderr
    assert int(inside.stdout) == 1 << 30
    (home / "modules.toml").write_text(BIG_MODULE)
    refused = in_cgroup(
        memory_cgroup, sys.executable, "-m", "nbrunner", "run", "big", "--home", str(home)
    )
    assert refused.returncode == 2, refused.stderr
    assert "of memory but this machine has 1.1 GB" in refused.stderr
    assert cli_json(home, "history") == []  # nothing queued
    # outside the cgroup the same run is accepted (this machine has more than 2 GB)
    outside = subprocess.run([sys.executable, "-c", CAPACITY], capture_output=True, text=True)
    assert int(outside.stdout) > 2 * 10**9


def test_a_burst_of_claims_reads_the_cgroup_once_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    from nbrunner import platform, resources

    gb = 1_000_000_000
    reads: list[int] = []

    def container() -> tuple[int, int]:
        reads.append(1)
        return (2 * gb, gb)

    monkeypatch.setattr(platform, "cgroup_memory_limit", container)
    monkeypatch.setattr(resources, "_cgroup_reads", {})
    for _ in range(50):
        assert resources.memory_capacity()[0] == 2 * gb
    assert len(reads) == 1
    monkeypatch.setattr(resources, "CGROUP_FRESH_S", 0.0)  # a second later
    resources.memory_capacity()
    assert len(reads) == 2


def test_a_request_as_a_mapping_has_every_field_and_reads_back_the_same() -> None:
    request = Resources.from_mapping({"cpus": 2, "memory": "1G", "pin": True, "gpu_memory": 5})
    assert request.to_dict() == dataclasses.asdict(request)  # a field added is a field kept
    assert Resources.from_mapping(request.to_dict()) == request
