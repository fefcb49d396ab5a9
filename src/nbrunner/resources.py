"""What a run declares it needs, what the machine has, and who may start now.

Declared needs are reservations: a run is admitted only when the slots, unreserved memory
(also checked against what the OS says is available), CPUs and GPUs all allow it. Measured
free GPU memory alone is not a safe test: a run that just started has not allocated yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import checks
from .errors import ResourceRequestError
from .gpu import Device, devices_for_runs
from .units import format_size, parse_size

# How a queued run's reason starts while others' memory keeps it from a GPU.
GPU_WAIT = "waits for a GPU: "
# A cgroup's limits and usage are read at most this often: a burst of submissions is claimed
# every few milliseconds, and each read walks the cgroup hierarchy (0.2-0.3 ms a controller);
# a run admitted within the last second has hardly allocated its memory yet anyway.
CGROUP_FRESH_S = 1.0
_cgroup_reads: dict[str, tuple[float, Any]] = {}
T = TypeVar("T")
_KEYS = ("cpus", "memory", "gpus", "gpu_memory", "pin", "gpu_memory_strict")


@dataclass(frozen=True)
class Resources:
    """A run's reservation. gpus: whole devices; gpu_memory alone: a share of one device."""

    cpus: float = 0
    memory: int = 0
    gpus: int = 0
    gpu_memory: int = 0
    pin: bool = False  # pin the run to `cpus` distinct cores
    gpu_memory_strict: bool = False  # stop a run that goes over its GPU memory share

    @property
    def fits_any_machine(self) -> bool:
        """Whether every machine could start it (one CPU at most, whole if pinned, no memory
        or GPU asked for), so that checking it at submit needs no look at this one."""
        whole = not self.pin or self.cpus == int(self.cpus)
        return self.cpus <= 1 and whole and not (self.memory or self.gpus or self.gpu_memory)

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None) -> Resources:
        if not data:  # most runs ask for nothing; a claim reads every slot holder's
            return NOTHING
        data = dict(data)
        unknown = set(data) - set(_KEYS)
        if unknown:
            raise ResourceRequestError(
                f"unknown resource {sorted(unknown)[0]!r}; use {', '.join(_KEYS)}"
            )
        cpus = data.get("cpus", 0)
        gpus = data.get("gpus", 0)
        if not checks.is_number(cpus) or cpus < 0:
            raise ResourceRequestError(f"cpus must be a number ≥ 0, got {cpus!r}")
        if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
            raise ResourceRequestError(f"gpus must be a whole number ≥ 0, got {gpus!r}")
        for flag in ("pin", "gpu_memory_strict"):
            if not isinstance(data.get(flag, False), bool):
                raise ResourceRequestError(f"{flag} must be true or false, got {data[flag]!r}")
        return cls(
            cpus=cpus,
            memory=parse_size(data.get("memory", 0), "memory"),
            gpus=gpus,
            gpu_memory=parse_size(data.get("gpu_memory", 0), "gpu_memory"),
            pin=data.get("pin", False),
            gpu_memory_strict=data.get("gpu_memory_strict", False),
        )

    def merged(self, override: dict[str, Any] | None) -> Resources:
        if not override:
            return self
        return Resources.from_mapping({**self.to_dict(), **override})

    def to_dict(self) -> dict[str, Any]:
        """Its fields, all scalars: asdict() would deep-copy each, for every run submitted."""
        return {key: getattr(self, key) for key in _KEYS}

    @property
    def shares_a_gpu(self) -> bool:
        return self.gpus == 0 and self.gpu_memory > 0


@dataclass(frozen=True)
class Capacity:
    """What this machine has for nbrunner: the CPUs it may use (`cores`, capped by a cgroup
    quota in `cpus`), memory, and the GPUs not masked out, in PCI order."""

    cpus: float
    memory_total: int
    memory_available: int
    devices: tuple[Device, ...] = ()
    cores: tuple[int, ...] = ()  # which CPUs; empty: 0 .. cpus - 1

    @property
    def usable_cores(self) -> tuple[int, ...]:
        return self.cores or tuple(range(int(self.cpus)))

    def check_possible(self, need: Resources) -> None:
        """Refuse, at submit, what could never start here instead of queueing it forever."""
        problems = []
        if need.cpus > self.cpus:
            problems.append(f"{need.cpus:g} CPUs but this machine has {self.cpus:g}")
        if need.memory > self.memory_total:
            problems.append(
                f"{format_size(need.memory)} of memory but this machine has "
                f"{format_size(self.memory_total)}"
            )
        if need.gpus > len(self.devices):
            problems.append(f"{need.gpus} GPU(s) but this machine has {len(self.devices)}")
        largest = max((d.memory_total for d in self.devices), default=0)
        if need.shares_a_gpu and need.gpu_memory > largest:
            problems.append(
                f"{format_size(need.gpu_memory)} of one GPU's memory but the "
                f"largest GPU here has {format_size(largest)}"
            )
        if need.pin and need.cpus != int(need.cpus):
            problems.append(f"pinning to {need.cpus:g} CPUs: pinned runs need whole CPUs")
        if problems:
            raise ResourceRequestError("this run asks for " + "; ".join(problems))


NOTHING = Resources()


@dataclass(frozen=True)
class Assignment:
    gpus: tuple[int, ...] = ()
    cores: tuple[int, ...] = ()


@dataclass
class Ledger:
    """Reservations held by running runs; `fit` finds room for one more, `take` books it."""

    capacity: Capacity
    cpus: float = 0
    memory: int = 0
    whole_gpus: set[int] = field(default_factory=set)
    shared_gpu_memory: dict[int, int] = field(default_factory=dict)
    pinned_cores: set[int] = field(default_factory=set)
    # Memory booked by runs admitted in this pass: not yet allocated, so not yet missing
    # from what the OS reports as available.
    admitted_memory: int = 0
    # How much of a GPU others (processes not ours) must leave free for a whole-GPU run
    # that declares no gpu_memory: a share like "90%" or a size (the gpu_min_free setting).
    gpu_min_free: str = "90%"
    # Why the last `fit` found no GPU, when memory others hold is the cause (else None).
    refusal: str | None = None

    def take(self, need: Resources, assignment: Assignment, admitted: bool = False) -> None:
        self.cpus += need.cpus
        self.memory += need.memory
        self.admitted_memory += need.memory if admitted else 0
        self.pinned_cores.update(assignment.cores)
        if need.shares_a_gpu:
            for index in assignment.gpus:
                self.shared_gpu_memory[index] = (
                    self.shared_gpu_memory.get(index, 0) + need.gpu_memory
                )
        else:
            self.whole_gpus.update(assignment.gpus)

    def fit(self, need: Resources) -> Assignment | None:
        """Where the run would go now, or None if it must wait."""
        if self.cpus + need.cpus > self.capacity.cpus:
            return None
        if need.memory and (
            self.memory + need.memory > self.capacity.memory_total
            or self.admitted_memory + need.memory > self.capacity.memory_available
        ):
            return None
        gpus = self._fit_gpus(need)
        cores = self._fit_cores(need)
        if gpus is None or cores is None:
            return None
        return Assignment(gpus, cores)

    def _fit_gpus(self, need: Resources) -> tuple[int, ...] | None:
        self.refusal = None
        untouched = [
            d
            for d in self.capacity.devices
            if d.index not in self.whole_gpus and d.index not in self.shared_gpu_memory
        ]
        if need.gpus:
            fits = [d for d in untouched if free_enough(d, need, self.gpu_min_free) is None]
            if len(fits) >= need.gpus:
                return tuple(d.index for d in fits[: need.gpus])
            if len(untouched) >= need.gpus:  # free of our runs, but others hold memory
                busy = (free_enough(d, need, self.gpu_min_free) for d in untouched)
                self.refusal = GPU_WAIT + "; ".join(filter(None, busy))
            return None
        if need.shares_a_gpu:
            for device in self.capacity.devices:
                used = self.shared_gpu_memory.get(device.index, 0)
                if device.index not in self.whole_gpus and (
                    used + need.gpu_memory <= device.memory_for_shares
                ):
                    return (device.index,)
            return None
        return ()

    def _fit_cores(self, need: Resources) -> tuple[int, ...] | None:
        if not need.pin or not need.cpus:
            return ()
        free = [c for c in self.capacity.usable_cores if c not in self.pinned_cores]
        wanted = int(need.cpus)
        return tuple(free[:wanted]) if len(free) >= wanted else None


def free_enough(device: Device, need: Resources, min_free: str) -> str | None:
    """None if what others leave free on `device` covers a whole-GPU run (its gpu_memory,
    else `min_free` of the device), else what is missing, in words."""
    free = device.memory_total - device.memory_others
    if need.gpu_memory:
        wanted, what = need.gpu_memory, "the run's gpu_memory"
    elif min_free.endswith("%"):
        wanted = int(device.memory_total * float(min_free[:-1]) / 100)
        what = f"gpu_min_free {min_free}"
    else:
        wanted, what = (
            min(parse_size(min_free, "gpu_min_free"), device.memory_total),
            (f"gpu_min_free {min_free}"),
        )
    if free >= wanted:
        return None
    return (
        f"GPU {device.index} has {format_size(free)} free (other processes hold "
        f"{format_size(device.memory_others)} of {format_size(device.memory_total)}), "
        f"{what} is {format_size(wanted)}"
    )


def machine_capacity(
    with_gpus: bool = True, gpu_mask: str = "", ours: Collection[int] | None = None
) -> Capacity:
    """This machine now: the CPUs this process may use, psutil for memory, the GPUs not
    masked out (see gpu.devices_for_runs; `ours` are the pids of this home's runs).

    GPU discovery is skipped when nobody involved asks for a GPU, so CPU-only claims never
    pay for loading NVML.
    """

    from . import platform

    cores = platform.usable_cpus()
    quota = _cgroup_fact("cpu", platform.cgroup_cpu_limit)
    cpus = min(len(cores), max(quota, 1.0)) if quota is not None else len(cores)
    memory_total, memory_available = memory_capacity()
    devices: tuple[Device, ...] = ()
    if with_gpus:
        devices = devices_for_runs(gpu_mask, ours)
    return Capacity(cpus, memory_total, memory_available, devices, cores)


def memory_capacity() -> tuple[int, int]:
    """(total, available) memory for runs now: the machine's, or its container's where the
    cgroup limit is smaller (psutil sees the whole host from inside a container)."""
    import psutil

    from . import platform

    memory = psutil.virtual_memory()
    cgroup = _cgroup_fact("memory", platform.cgroup_memory_limit)
    return capped_memory(int(memory.total), int(memory.available), cgroup)


def _cgroup_fact(controller: str, read: Callable[[], T]) -> T:
    """What `read` says of this process's cgroup, read again once CGROUP_FRESH_S passed."""
    now = time.monotonic()
    found = _cgroup_reads.get(controller)
    if found is None or now - found[0] >= CGROUP_FRESH_S:
        found = (now, read())
        _cgroup_reads[controller] = found
    return found[1]  # type: ignore[no-any-return]


def capped_memory(
    total: int, available: int, cgroup: tuple[int, int | None] | None
) -> tuple[int, int]:
    """The machine's (total, available) within a cgroup's (limit, usage): what the cgroup
    has left is its limit minus its usage (reclaimable page cache already left out)."""
    if cgroup is None or cgroup[0] >= total:
        return total, available
    limit, usage = cgroup
    left = limit - usage if usage is not None else limit
    return limit, max(0, min(available, left))
