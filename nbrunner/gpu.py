"""GPU discovery and sampling behind one small interface.

The default is NVML (`nvidia-ml-py`, imported as pynvml). NVML may be missing (no driver),
partial (NotSupported on consumer cards) or blind to per-process memory (Windows WDDM), so
every call degrades to None instead of raising. For machines without a GPU, a declared
inventory (NBRUNNER_GPUS='[{"name": "RTX 5090", "memory": "32GB"}]') replaces discovery:
admission, assignment and the UI then run their real code paths against it.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from .errors import BadInput
from .units import parse_size

T = TypeVar("T")
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
        except (ValueError, AttributeError) as exc:
            raise BadInput(
                f"{INVENTORY_ENV} must be a JSON list like "
                f'[{{"name": "RTX 5090", "memory": "32GB"}}], got {spec!r} ({exc})'
            ) from None

    def devices(self) -> list[GpuInfo]:
        return list(self._devices)

    def sample(self) -> list[GpuSample]:
        return [
            GpuSample(d.index, d.name, d.uuid, d.memory_total, memory_used=0, utilization=0.0)
            for d in self._devices
        ]


class NvmlGpus:
    """Real GPUs through NVML; `available` is False, with the reason, when NVML is not usable."""

    def __init__(self) -> None:
        self.available = False
        self.reason = "no GPU detected"
        self._lock = threading.Lock()
        self._handles: list[Any] = []
        self._devices: list[GpuInfo] = []
        try:
            import pynvml

            self._nvml = pynvml
            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._devices = self._discover()
            self.available = count > 0
            self.reason = f"{count} GPU(s) via NVML" if count else "NVML found no GPU"
        except ImportError:
            self.reason = "no GPU detected (nvidia-ml-py is not installed)"
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            self.reason = f"no GPU detected ({type(exc).__name__})"

    def _call(self, fn: Callable[..., T], *args: Any) -> T | None:
        try:
            return fn(*args)
        except Exception:  # NVMLError subclasses: NotSupported, NoPermission, GpuIsLost
            return None

    def devices(self) -> list[GpuInfo]:
        return list(self._devices)

    def _discover(self) -> list[GpuInfo]:
        nvml = self._nvml
        infos = []
        for index, handle in enumerate(self._handles):
            memory = self._call(nvml.nvmlDeviceGetMemoryInfo, handle)
            infos.append(
                GpuInfo(
                    index,
                    _text(self._call(nvml.nvmlDeviceGetName, handle)) or f"GPU {index}",
                    _text(self._call(nvml.nvmlDeviceGetUUID, handle)) or f"GPU-{index}",
                    int(memory.total) if memory else 0,
                )
            )
        return infos

    def sample(self) -> list[GpuSample]:
        if not self.available:
            return []
        nvml = self._nvml
        with self._lock:
            samples = []
            for info, handle in zip(self._devices, self._handles, strict=True):
                memory = self._call(nvml.nvmlDeviceGetMemoryInfo, handle)
                rates = self._call(nvml.nvmlDeviceGetUtilizationRates, handle)
                temp = self._call(nvml.nvmlDeviceGetTemperature, handle, 0)  # 0: the GPU die
                power = self._call(nvml.nvmlDeviceGetPowerUsage, handle)
                samples.append(
                    GpuSample(
                        info.index,
                        info.name,
                        info.uuid,
                        info.memory_total,
                        memory_used=int(memory.used) if memory else None,
                        utilization=float(rates.gpu) if rates else None,
                        temperature=float(temp) if temp is not None else None,
                        power_w=power / 1000 if power is not None else None,
                        processes=self._processes(handle),
                    )
                )
            return samples

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
        return found


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


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
