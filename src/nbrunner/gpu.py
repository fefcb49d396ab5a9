"""GPU discovery and sampling behind one small interface.

The default is NVML (`nvidia-ml-py`, imported as pynvml). NVML may be missing (no driver),
partial (NotSupported on consumer cards) or blind to per-process memory (Windows WDDM), so
every call degrades to None instead of raising. For machines without a GPU, a declared
inventory (NBRUNNER_GPUS='[{"name": "RTX 5090", "memory": "32GB"}]', optionally with the
memory other processes hold, `"used": "2GB"`) replaces discovery:
admission, assignment and the UI then run their real code paths against it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from .errors import BadInput
from .units import parse_size


@dataclass(frozen=True)
class Device:
    index: int
    memory_total: int
    memory_others: int = 0  # held by processes nbrunner does not own (a desktop, ...)

    @property
    def memory_for_shares(self) -> int:
        return self.memory_total - self.memory_others


T = TypeVar("T")
log = logging.getLogger("nbrunner.gpu")
INVENTORY_ENV = "NBRUNNER_GPUS"


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    uuid: str
    memory_total: int


@dataclass(frozen=True)
class GpuSample:
    index: int
    name: str
    uuid: str
    memory_total: int
    memory_used: int | None = None
    utilization: float | None = None
    temperature: float | None = None
    power_w: float | None = None
    processes: dict[int, int | None] = field(default_factory=dict)  # pid -> bytes (None: hidden)


class GpuSource(Protocol):
    """What admission, assignment and the gauges need to know about GPUs."""

    available: bool
    reason: str

    def devices(self) -> list[GpuInfo]: ...

    def sample(self) -> list[GpuSample]: ...


class DeclaredGpus:
    """A declared inventory: the honest stand-in on machines without a GPU."""

    available = True
    reason = "declared in " + INVENTORY_ENV

    def __init__(self, spec: str) -> None:
        try:
            entries = json.loads(spec)
            if not isinstance(entries, list):
                raise ValueError("not a list")
            self._devices = [
                GpuInfo(
                    i,
                    str(e.get("name", f"GPU {i}")),
                    str(e.get("uuid", f"GPU-fake-{i}")),
                    parse_size(e.get("memory", "16GB")),
                )
                for i, e in enumerate(entries)
            ]
            self._used = [parse_size(e.get("used", 0)) for e in entries]
        except (ValueError, AttributeError) as exc:
            raise BadInput(
                f"{INVENTORY_ENV} must be a JSON list like "
                f'[{{"name": "RTX 5090", "memory": "32GB"}}], got {spec!r} ({exc})'
            ) from None

    def devices(self) -> list[GpuInfo]:
        return list(self._devices)

    def sample(self) -> list[GpuSample]:
        return [
            GpuSample(d.index, d.name, d.uuid, d.memory_total, memory_used=used, utilization=0.0)
            for d, used in zip(self._devices, self._used, strict=True)
        ]


class NvmlGpus:
    """Real GPUs through NVML; `available` is False, with the reason, when none is usable.

    Devices are probed one by one: one that fails (NoPermission, GpuIsLost) is left out and
    named in `reason` while the others work, and failed devices (or NVML itself, after a
    transient driver mismatch) are probed again every REPROBE_S seconds.
    """

    REPROBE_S = 60.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.available = False
        self.reason = "no GPU detected"
        self._clock = clock
        self._lock = threading.Lock()
        self._nvml: Any = None
        self._working: dict[int, tuple[Any, GpuInfo]] = {}  # index -> (handle, info)
        self._failed: dict[int, str] = {}  # index -> why
        self._hidden = False  # the driver hides per-process memory (Windows WDDM)
        self._next_probe: float | None = 0.0  # None: nothing to probe again
        self._probe()

    def _probe(self) -> None:
        try:
            if self._nvml is None:
                import pynvml

                pynvml.nvmlInit()
                self._nvml = pynvml
            count = self._nvml.nvmlDeviceGetCount()
        except ImportError:
            self.reason = "no GPU detected (nvidia-ml-py is not installed)"
            self._next_probe = None
            return
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, a mismatch
            self.reason = f"no GPU detected ({type(exc).__name__})"
            self._next_probe = self._clock() + self.REPROBE_S
            return
        for index in range(count):
            if index not in self._working:
                self._probe_device(index)
        self._next_probe = self._clock() + self.REPROBE_S if self._failed else None
        self._describe(count)

    def _probe_device(self, index: int) -> None:
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        except Exception as exc:  # NVMLError_NoPermission, NVMLError_GpuIsLost, ...
            self._fail(index, exc)
            return
        info = GpuInfo(
            index,
            _text(self._call(nvml.nvmlDeviceGetName, handle)) or f"GPU {index}",
            _text(self._call(nvml.nvmlDeviceGetUUID, handle)) or f"GPU-{index}",
            int(memory.total),
        )
        self._working[index] = (handle, info)
        self._failed.pop(index, None)

    def _fail(self, index: int, exc: Exception) -> None:
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self._failed.get(index) != why:
            log.warning("nbrunner: GPU %s left out: %s", index, why)
        self._failed[index] = why
        self._working.pop(index, None)
        if self._next_probe is None:
            self._next_probe = self._clock() + self.REPROBE_S
        self._describe()

    def _describe(self, count: int | None = None) -> None:
        self.available = bool(self._working)
        if count == 0:
            self.reason = "NVML found no GPU"
            return
        parts = [f"{len(self._working)} GPU(s) via NVML"]
        parts += [f"GPU {i} left out ({why})" for i, why in sorted(self._failed.items())]
        if self._hidden:
            parts.append("per-run GPU memory not available on Windows WDDM")
        self.reason = "; ".join(parts)

    def _reprobe_if_due(self) -> None:
        if self._next_probe is not None and self._clock() >= self._next_probe:
            self._probe()

    def _call(self, fn: Callable[..., T], *args: Any) -> T | None:
        try:
            return fn(*args)
        except Exception:  # NVMLError subclasses: NotSupported on consumer cards
            return None

    def devices(self) -> list[GpuInfo]:
        with self._lock:
            self._reprobe_if_due()
            return [info for _, info in sorted(self._working.values(), key=lambda w: w[1].index)]

    def sample(self) -> list[GpuSample]:
        with self._lock:
            self._reprobe_if_due()
            samples = [self._sample(handle, info) for handle, info in list(self._working.values())]
            return sorted((s for s in samples if s is not None), key=lambda s: s.index)

    def _sample(self, handle: Any, info: GpuInfo) -> GpuSample | None:
        nvml = self._nvml
        try:
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        except Exception as exc:  # the device is gone (GpuIsLost) or forbidden now
            self._fail(info.index, exc)
            return None
        rates = self._call(nvml.nvmlDeviceGetUtilizationRates, handle)
        temp = self._call(nvml.nvmlDeviceGetTemperature, handle, 0)  # 0: the GPU die
        power = self._call(nvml.nvmlDeviceGetPowerUsage, handle)
        return GpuSample(
            info.index,
            info.name,
            info.uuid,
            info.memory_total,
            memory_used=int(memory.used),
            utilization=float(rates.gpu) if rates else None,
            temperature=float(temp) if temp is not None else None,
            power_w=power / 1000 if power is not None else None,
            processes=self._processes(handle),
        )

    def _processes(self, handle: Any) -> dict[int, int | None]:
        nvml = self._nvml
        found: dict[int, int | None] = {}
        for getter in (
            "nvmlDeviceGetComputeRunningProcesses",
            "nvmlDeviceGetGraphicsRunningProcesses",
        ):
            for proc in self._call(getattr(nvml, getter), handle) or []:
                used = getattr(proc, "usedGpuMemory", None)
                found[int(proc.pid)] = int(used) if used is not None else None  # WDDM: None
        if not self._hidden and None in found.values():
            self._hidden = True
            self._describe()
        return found


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def visible(devices: list[GpuInfo], mask: str, cuda_visible: str | None) -> list[GpuInfo]:
    """The devices nbrunner may hand out: those the `gpus` setting keeps ("": all, "none",
    or indices like "0,2") and, when it is set, that this process's CUDA_VISIBLE_DEVICES
    names (indices in PCI order, or UUIDs; as CUDA does, the list ends at the first entry
    that names no device)."""
    kept = devices
    if mask:
        wanted = set() if mask == "none" else {int(i) for i in mask.split(",")}
        kept = [d for d in kept if d.index in wanted]
    if cuda_visible is None:
        return kept
    named: set[int] = set()
    for entry in (e.strip() for e in cuda_visible.split(",")):
        if entry.isdigit():
            named.add(int(entry))
            continue
        by_uuid = [d.index for d in devices if entry[:4] == "GPU-" and d.uuid.startswith(entry)]
        if not by_uuid:
            break
        named.update(by_uuid)
    return [d for d in kept if d.index in named]


def memory_used_by_others(sample: GpuSample, ours: Collection[int]) -> int:
    """What the device's memory holds for processes nbrunner does not own (a desktop, another
    user's job). Where the driver hides per-process use (WDDM) and a run of ours is on it,
    ours cannot be told apart: 0, and the reservations alone decide."""
    mine = [used for pid, used in sample.processes.items() if pid in ours]
    if sample.memory_used is None or None in mine:
        return 0
    return max(0, sample.memory_used - sum(mine))  # type: ignore[arg-type]


def devices_for_runs(mask: str = "", ours: Collection[int] | None = None) -> tuple[Device, ...]:
    """The GPUs runs may get, in PCI order; given `ours` (the pids of this home's runs), each
    with the memory other processes hold on it (a sample, so only when shares are fitted)."""
    source = gpu_source()
    kept = visible(source.devices(), mask, os.environ.get("CUDA_VISIBLE_DEVICES"))
    others: dict[int, int] = {}
    if ours is not None and kept:
        others = {s.index: memory_used_by_others(s, ours) for s in source.sample()}
    return tuple(Device(d.index, d.memory_total, others.get(d.index, 0)) for d in kept)


_SOURCE: GpuSource | None = None
_SOURCE_KEY: str | None = None


def gpu_source() -> GpuSource:
    """The process's GPU source: the declared inventory when set, else NVML."""
    global _SOURCE, _SOURCE_KEY
    key = os.environ.get(INVENTORY_ENV)
    if _SOURCE is None or key != _SOURCE_KEY:
        _SOURCE = DeclaredGpus(key) if key else NvmlGpus()
        _SOURCE_KEY = key
    return _SOURCE
