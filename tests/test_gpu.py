"""GPUs through NVML: without a driver nothing fails; with one, what NVML reports is sane.

The no-driver tests force that path, so they pass on a machine with a GPU too; the tests
that need a real GPU are skipped where NVML finds none, and never fail there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.procs import python

from nbrunner import Runner, gpu
from nbrunner.gpu import NvmlGpus
from nbrunner.monitor import take_sample

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
    assert [d.index for d in devices] == list(range(len(devices)))
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
    show = "import os; print(os.environ['CUDA_VISIBLE_DEVICES'], os.environ['CUDA_DEVICE_ORDER'])"
    runner.register("gpu", command=python(show), resources={"gpus": 1})
    record = runner.submit("gpu").wait(timeout=60)
    (device,) = record.gpus  # one device, in PCI order among those not masked out
    assert int(device) in {d.index for d in NvmlGpus().devices()}
    assert Path(record.log_path).read_text() == f"{device} PCI_BUS_ID\n"
