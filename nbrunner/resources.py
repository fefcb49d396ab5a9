"""What a run declares it needs: the reservation model shared by admission and the UI."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from .errors import ResourceRequestError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def parse_size(value: object, what: str = "memory") -> int:
    """Bytes from 4GB / 512MB / 1.5GiB / a plain number of bytes."""
    if isinstance(value, bool):
        raise ResourceRequestError(f"{what} must be a size like '4GB' or '512MB', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ResourceRequestError(f"{what} must not be negative, got {value!r}")
        return int(value)
    match = _SIZE.match(str(value))
    if not match:
        raise ResourceRequestError(f"{what} must be a size like '4GB' or '512MB', got {value!r}")
    number, unit = float(match.group(1)), (match.group(2) or "").lower()
    binary = "i" in unit
    base = 1024 if binary else 1000
    scale = base ** "bkmgt".index(unit[0]) if unit else 1
    return int(number * scale)


def format_size(n_bytes: float | None) -> str:
    if n_bytes is None:
        return "-"
    size = float(n_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


@dataclass(frozen=True)
class Resources:
    cpus: float = 0
    memory: int = 0
    gpus: int = 0
    gpu_memory: int = 0

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None) -> Resources:
        data = dict(data or {})
        unknown = set(data) - {"cpus", "memory", "gpus", "gpu_memory"}
        if unknown:
            raise ResourceRequestError(
                f"unknown resource {sorted(unknown)[0]!r}; use cpus, memory, gpus or gpu_memory"
            )
        cpus = data.get("cpus", 0)
        gpus = data.get("gpus", 0)
        if isinstance(cpus, bool) or not isinstance(cpus, int | float) or cpus < 0:
            raise ResourceRequestError(f"cpus must be a number ≥ 0, got {cpus!r}")
        if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
            raise ResourceRequestError(f"gpus must be a whole number ≥ 0, got {gpus!r}")
        return cls(
            cpus=cpus,
            memory=parse_size(data.get("memory", 0), "memory"),
            gpus=gpus,
            gpu_memory=parse_size(data.get("gpu_memory", 0), "gpu_memory"),
        )

    def merged(self, override: dict[str, Any] | None) -> Resources:
        if not override:
            return self
        return Resources.from_mapping({**self.to_dict(), **override})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
