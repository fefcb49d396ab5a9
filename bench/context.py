"""What every benchmark gets: the mode, the peers found, and a Ray head started on demand."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from .peers import Peer, RayHead

T = TypeVar("T")


@dataclass
class Context:
    quick: bool
    out_dir: Path
    peers: dict[str, Peer]
    use_ray: bool = True
    ray_start_seconds: float | None = None
    _ray: RayHead | None = field(default=None, repr=False)

    def size(self, full: T, quick: T) -> T:
        """The full-mode value, or the smaller one in quick mode."""
        return quick if self.quick else full

    def has(self, peer: str) -> bool:
        found = self.peers.get(peer)
        return bool(found and found.found and (peer != "ray" or self.use_ray))

    def binary(self, peer: str) -> str:
        return self.peers[peer].command

    def ray(self) -> RayHead | None:
        """The session's local Ray head, started on first use (None without Ray)."""
        if not self.has("ray"):
            return None
        if self._ray is None:
            self._ray = RayHead(cpus=os.cpu_count() or 1)
            self.ray_start_seconds = self._ray.start_seconds
        return self._ray

    def close(self) -> None:
        if self._ray is not None:
            self._ray.stop()
            self._ray = None
