"""GPUs as the user sees them: a mask, devices that fail alone, memory others hold, per-run
GPU memory, and NVML itself. Real runs use a declared inventory (NBRUNNER_GPUS); NVML's
failures are played by a stand-in pynvml module. The no-driver tests force that path, so they
pass on a machine with a GPU too; the tests that need a real GPU are skipped where NVML finds
none, and never fail there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from helpers.procs import python

from nbrunner import Runner, gpu
from nbrunner.backends import Usage
from nbrunner.errors import InvalidConfig, ResourceRequestError
from nbrunner.gpu import (
    GpuInfo,
    GpuSample,
    NvmlGpus,
    devices_for_runs,
    memory_used_by_others,
    visible,
)
from nbrunner.models import RunRecord
from nbrunner.monitor import take_sample
from nbrunner.resources import Capacity, Device, Ledger, Resources
from nbrunner.service import Service
from nbrunner.states import RunStatus
from nbrunner.supervisor import LocalWatch

GB = 10**9
HOLD = "import os, time; print(os.environ['CUDA_VISIBLE_DEVICES']); time.sleep(1.5)"


def inventory(monkeypatch: pytest.MonkeyPatch, *devices: dict[str, str]) -> None:
    monkeypatch.setenv("NBRUNNER_GPUS", json.dumps(list(devices)))


def three_gpus() -> list[GpuInfo]:
    return [GpuInfo(i, "RTX 5090", f"GPU-{i}aaa", 32 * GB) for i in range(3)]


@pytest.mark.parametrize(
    ("mask", "cuda_visible", "kept"),
    [
        ("", None, [0, 1, 2]),
        ("0,2", None, [0, 2]),
        ("none", None, []),
        ("", "1", [1]),
        ("", "GPU-2a,0", [0, 2]),  # UUID prefixes, as CUDA takes them
        ("", "2,-1,0", [2]),  # CUDA stops at the first entry that names no device
        ("", "", []),
        ("0,2", "1,2", [2]),  # both apply
    ],
)
def test_the_mask_and_cuda_visible_devices_decide_which_gpus_runs_get(
    mask: str, cuda_visible: str | None, kept: list[int]
) -> None:
    assert [d.index for d in visible(three_gpus(), mask, cuda_visible)] == kept


@pytest.mark.parametrize(("value", "stored"), [("2, 0", "0,2"), ("", ""), ("NONE", "none")])
def test_the_gpus_setting_is_indices_none_or_empty(runner: Runner, value: str, stored: str) -> None:
    assert runner.config("gpus", value) == stored


def test_a_gpus_setting_that_is_not_indices_is_refused(runner: Runner) -> None:
    with pytest.raises(InvalidConfig, match="gpus must be GPU indices like 0,2"):
        runner.config("gpus", "first")


@pytest.fixture
def gpu_runner(runner: Runner, monkeypatch: pytest.MonkeyPatch) -> Runner:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    inventory(monkeypatch, *[{"name": "RTX 5090", "memory": "32GB"}] * 3)
    runner.register(
        "gpu",
        command=python(HOLD),
        resources={"gpus": 1},
        params={"n": {"type": "int", "default": 0}},
    )
    return runner


def test_runs_never_land_on_a_gpu_the_setting_keeps_out(gpu_runner: Runner) -> None:
    gpu_runner.config("gpus", "0,2")
    runs = [gpu_runner.submit("gpu", {"n": i}) for i in range(3)]
    records = [r.wait(timeout=30) for r in runs]
    assert sorted(r.gpus[0] for r in records[:2]) == ["0", "2"]
    assert records[2].gpus[0] in ("0", "2")
    assert records[2].started_at >= min(r.ended_at for r in records[:2])  # it waited
    gpu_runner.config("gpus", "none")
    with pytest.raises(ResourceRequestError, match="1 GPU"):
        gpu_runner.submit("gpu")


def test_the_services_cuda_visible_devices_is_honoured(
    gpu_runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # before the service starts: it inherits it
    records = [r.wait(timeout=30) for r in [gpu_runner.submit("gpu", {"n": i}) for i in range(2)]]
    assert [r.gpus for r in records] == [["1"], ["1"]]
    assert [Path(r.log_path).read_text() for r in records] == ["1\n", "1\n"]
    assert records[1].started_at >= records[0].ended_at


def test_shares_fit_in_what_other_processes_leave_of_a_gpu(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory(monkeypatch, {"name": "RTX 5090", "memory": "32GB", "used": "3GB"})  # a desktop
    runner.register(
        "share",
        command=python(HOLD),
        resources={"gpu_memory": "15GB"},
        params={"n": {"type": "int", "default": 0}},
    )
    first, second = (runner.submit("share", {"n": i}).wait(timeout=30) for i in range(2))
    assert second.started_at >= first.ended_at  # 15 + 15 > 32 - 3: one at a time


def test_memory_used_by_others_leaves_out_what_our_runs_use() -> None:
    sample = GpuSample(0, "g", "GPU-0", 32 * GB, memory_used=10 * GB, processes={7: 6 * GB})
    assert memory_used_by_others(sample, ours={7}) == 4 * GB
    assert memory_used_by_others(sample, ours=set()) == 10 * GB
    wddm = GpuSample(0, "g", "GPU-0", 32 * GB, memory_used=10 * GB, processes={7: None})
    assert memory_used_by_others(wddm, ours={7}) == 0  # ours cannot be told apart
    ledger = Ledger(Capacity(8, 64 * GB, 64 * GB, (Device(0, 32 * GB, memory_others=2 * GB),)))
    assert ledger.fit(Resources(gpu_memory=31 * GB)) is None
    assert ledger.fit(Resources(gpu_memory=30 * GB)) is not None


# -- NVML, played by a stand-in pynvml ---------------------------------------------------------
class NVMLError_NoPermission(Exception):
    pass


class NVMLError_GpuIsLost(Exception):
    pass


def fake_nvml(broken: dict[int, Exception]) -> types.ModuleType:
    nvml = types.ModuleType("pynvml")

    def memory(handle: int) -> Any:
        if handle in broken:
            raise broken[handle]
        return types.SimpleNamespace(total=24 * GB, used=GB)

    def handle_by_index(index: int) -> int:
        return index

    nvml.nvmlInit = lambda: None  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetCount = lambda: 3  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByIndex = handle_by_index  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetMemoryInfo = memory  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetName = lambda h: b"RTX 4090"  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetUUID = lambda h: f"GPU-{h}"  # type: ignore[attr-defined]
    for name in ("UtilizationRates", "Temperature", "PowerUsage"):
        setattr(nvml, f"nvmlDeviceGet{name}", lambda *a: None)
    nvml.nvmlDeviceGetComputeRunningProcesses = lambda h: [  # type: ignore[attr-defined]
        types.SimpleNamespace(pid=100 + h, usedGpuMemory=None if h == 2 else GB)
    ]
    nvml.nvmlDeviceGetGraphicsRunningProcesses = lambda h: []  # type: ignore[attr-defined]
    return nvml


def test_a_failing_gpu_is_left_out_named_and_probed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    broken: dict[int, Exception] = {1: NVMLError_NoPermission("Insufficient Permissions")}
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(broken))
    now = [0.0]
    source = NvmlGpus(clock=lambda: now[0])
    assert [d.index for d in source.devices()] == [0, 2] and source.available
    assert "GPU 1 left out (NVMLError_NoPermission: Insufficient Permissions)" in source.reason
    broken[0] = NVMLError_GpuIsLost("GPU is lost")
    assert [s.index for s in source.sample()] == [2]  # lost while sampled: the others go on
    assert "GPU 0 left out (NVMLError_GpuIsLost" in source.reason
    assert "per-run GPU memory not available on Windows WDDM" in source.reason  # GPU 2 hides it
    broken.clear()
    assert [d.index for d in source.devices()] == [2]  # not yet due
    now[0] += NvmlGpus.REPROBE_S
    assert [d.index for d in source.devices()] == [0, 1, 2]
    assert "left out" not in source.reason


# -- per-run GPU memory ------------------------------------------------------------------------
def watched(home: Path, resources: dict[str, Any]) -> LocalWatch:
    record = RunRecord(
        id=1, module="m", params={}, status=RunStatus.RUNNING, submitted_at=0.0, log_path="",
        gpus=["0"], resources=resources,
    )  # fmt: skip
    watch = LocalWatch(record, str(home))
    watch.usage = Usage(rss=0, cpu_time=0.0, cpu_percent=0.0, pids=(100, 101))
    return watch


def test_a_runs_gpu_memory_is_recorded_where_nvml_tells_and_said_missing_where_not(
    home: Path,
) -> None:
    owner = Service(home)
    figures: dict[int, dict[str, Any]] = {}
    told = [GpuSample(0, "g", "GPU-0", 32 * GB, processes={100: 2 * GB, 101: GB, 7: 5 * GB})]
    assert owner._check_gpu_share(watched(home, {}), told, figures) is None
    assert figures == {1: {"gpu_memory": 3 * GB}}
    figures.clear()
    hidden = [GpuSample(0, "g", "GPU-0", 32 * GB, processes={100: None})]
    owner._check_gpu_share(watched(home, {"gpu_memory": 8 * GB}), hidden, figures)
    assert "not available on Windows WDDM" in figures[1]["warning"]
    assert "gpu_memory" not in figures[1]


needs_gpu = pytest.mark.skipif(not NvmlGpus().available, reason="NVML finds no GPU here")


@pytest.fixture
def no_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    """NVML as on a machine without an NVIDIA driver, whatever this machine has."""
    import pynvml

    def missing_library() -> None:
        raise pynvml.NVMLError_LibraryNotFound()

    monkeypatch.setattr(pynvml, "nvmlInit", missing_library)
    real_nvml(monkeypatch)


def real_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    """No declared inventory, and no GPU source cached from before: NVML is asked again."""
    monkeypatch.delenv(gpu.INVENTORY_ENV, raising=False)
    monkeypatch.setattr(gpu, "_SOURCE", None)


def test_without_a_driver_nvml_degrades_to_no_gpu(no_driver: None) -> None:
    source = NvmlGpus()
    assert source.available is False
    assert source.reason == "no GPU detected (NVMLError_LibraryNotFound)"
    assert source.devices() == [] and source.sample() == []


def test_system_sample_says_no_gpu_plainly(no_driver: None) -> None:
    sample = take_sample()
    assert sample.gpus == () and sample.gpu_status.startswith("no GPU detected")
    assert 0 <= sample.cpu_percent <= 100 and len(sample.per_core) == os.cpu_count()
    assert 0 < sample.memory_used < sample.memory_total


def test_the_gpu_probe_reports_what_nvml_sees() -> None:
    probe = Path(__file__).parent.parent / "scripts" / "gpu_probe.py"
    result = subprocess.run(
        [sys.executable, str(probe), "--seconds", "1.2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "system samples in" in result.stdout
    if NvmlGpus().available:  # a machine with a driver: each device is listed
        assert "GPU 0:" in result.stdout and "via NVML" in result.stdout
    else:
        assert "NVML: no GPU detected" in result.stdout and "0 GPU(s)" in result.stdout


@needs_gpu
def test_nvml_lists_each_gpu_with_its_memory() -> None:
    source = NvmlGpus()
    devices = source.devices()
    assert source.reason == f"{len(devices)} GPU(s) via NVML"
    indices = [d.index for d in devices]  # a device NVML may not open is left out: gaps
    assert indices == sorted(set(indices)) and all(i >= 0 for i in indices)
    for device in devices:
        assert device.name and device.uuid.startswith(("GPU-", "MIG-"))
        assert device.memory_total > 2**30


@needs_gpu
def test_nvml_samples_are_within_their_ranges() -> None:
    source = NvmlGpus()
    samples = source.sample()
    assert [s.uuid for s in samples] == [d.uuid for d in source.devices()]
    for sample in samples:  # None where the card does not say (NotSupported)
        assert sample.memory_used is None or 0 <= sample.memory_used <= sample.memory_total
        assert sample.utilization is None or 0 <= sample.utilization <= 100
        assert sample.temperature is None or 0 < sample.temperature < 130
        assert sample.power_w is None or 0 <= sample.power_w < 2000


@needs_gpu
def test_the_system_sample_shows_every_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    real_nvml(monkeypatch)
    sample = take_sample()
    assert len(sample.gpus) == len(NvmlGpus().devices()) > 0
    assert sample.gpu_status.endswith("GPU(s) via NVML")


@needs_gpu
def test_a_gpu_run_gets_one_real_device(runner: Runner) -> None:
    # what this machine lets runs have: CUDA_VISIBLE_DEVICES may be empty (no GPU for us) or
    # name MIG instances, which are not whole devices nbrunner could hand out
    ours = {d.index for d in devices_for_runs()}
    if not ours:
        reason = f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}"
        pytest.skip(f"{reason} leaves no whole GPU to hand out")
    show = "import os; print(os.environ['CUDA_VISIBLE_DEVICES'], os.environ['CUDA_DEVICE_ORDER'])"
    runner.register("gpu", command=python(show), resources={"gpus": 1})
    record = runner.submit("gpu").wait(timeout=60)
    (device,) = record.gpus  # one device, in PCI order among those not masked out
    assert int(device) in ours
    assert Path(record.log_path).read_text() == f"{device} PCI_BUS_ID\n"


# -- GPUs others use: a whole GPU goes only where their memory leaves room -------------------


def test_a_whole_gpu_needs_what_the_run_declared_or_a_mostly_free_device() -> None:
    busy, idle = Device(0, 24 * GB, memory_others=20 * GB), Device(1, 24 * GB, memory_others=GB)
    ledger = Ledger(Capacity(4, 64 * GB, 64 * GB, (busy, idle)))
    assert ledger.fit(Resources(gpus=1)).gpus == (1,)  # 96 % free: mostly free
    assert ledger.fit(Resources(gpus=2)) is None
    assert ledger.refusal == (
        "waits for a GPU: GPU 0 has 4.0 GB free (other processes hold 20.0 GB of 24.0 GB), "
        "gpu_min_free 90% is 21.6 GB"
    )
    assert ledger.fit(Resources(gpus=2, gpu_memory=3 * GB)).gpus == (0, 1)  # declared: fits
    assert ledger.fit(Resources(gpus=2, gpu_memory=5 * GB)) is None
    assert "the run's gpu_memory is 5.0 GB" in (ledger.refusal or "")
    sized = Ledger(Capacity(4, 64 * GB, 64 * GB, (busy,)), gpu_min_free="4GB")
    assert sized.fit(Resources(gpus=1)).gpus == (0,)
    ledger.take(Resources(gpus=1), ledger.fit(Resources(gpus=1)))  # GPU 1 is ours now
    assert ledger.fit(Resources(gpus=2)) is None
    assert ledger.refusal is None  # waiting for our own run is no news


def test_a_gpu_run_waits_with_its_reason_while_others_hold_the_free_gpu(
    runner: Runner, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from helpers.cli import cli, cli_json
    from helpers.procs import wait_until

    inventory(
        monkeypatch,
        {"name": "RTX 4090", "memory": "24GB", "used": "20GB"},  # a kernel holds a model
        {"name": "RTX 4090", "memory": "24GB"},
    )
    wait_for = "import os, sys, time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.05)"
    runner.register(
        "train", command=[*python(wait_for), str(tmp_path / "go")], resources={"gpus": 1}
    )
    first, second = runner.submit("train"), runner.submit("train")
    try:
        wait_until(lambda: first.status is RunStatus.RUNNING, what="the first run")
        assert first.record.gpus == ["1"]
        why = (
            "waits for a GPU: GPU 0 has 4.0 GB free (other processes hold 20.0 GB of "
            "24.0 GB), gpu_min_free 90% is 21.6 GB"
        )
        wait_until(lambda: runner.get(second.id).record.reason == why, what="the reason")
        assert f"run {second.id} {why}" in cli(home, "ps").stdout.splitlines()
        assert cli_json(home, "show", str(second.id))["reason"] == why
        assert second.status is RunStatus.QUEUED

        runner.config("gpu_min_free", "3GB")  # what this user's runs need
        wait_until(lambda: second.status is RunStatus.RUNNING, what="the second run")
        assert second.record.gpus == ["0"] and second.record.reason is None
        bad = cli(home, "config", "gpu_min_free", "most", check=False)
        assert bad.returncode == 2 and "like 90%" in bad.stderr
    finally:
        (tmp_path / "go").touch()
        for run in (first, second):
            run.wait(timeout=60)
