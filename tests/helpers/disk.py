"""Small filesystems of a given size, as root can mount them: full disks on demand."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (mount's -o size=, e.g. "64k") at `mount`, made if need be. CI
    must be able to mount one (the full-disk tests would otherwise never run there)."""
    mount.mkdir(exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True
    )
    if result.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must be able to mount a tmpfs: {result.stderr!r}")
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> None:
    """A file at path that takes every byte left on its filesystem."""
    with contextlib.suppress(OSError), open(path, "ab") as out:
        while True:
            out.write(b"x" * 4096)
            out.flush()
