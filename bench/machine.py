"""What the results were measured on: the machine, the date, and every version involved."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import psutil

from .harness import REPO_ROOT
from .peers import Peer


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except OSError:
        return ""
    return out.stdout.strip()


def describe(peers: dict[str, Peer]) -> dict[str, str]:
    """Machine facts and versions, in the order RESULTS.md shows them."""
    memory = psutil.virtual_memory().total / 2**30
    commit = _commit()
    facts = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{_cpu_model()}: {os.cpu_count()} logical cores",
        "memory": f"{memory:.1f} GiB",
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "nbrunner": _version("nbrunner") + (f" (commit {commit})" if commit else ""),
        "SQLite": sqlite3.sqlite_version,
        "psutil": _version("psutil"),
        "ipywidgets": _version("ipywidgets"),
    }
    for peer in peers.values():
        facts[peer.name] = peer.version if peer.found else f"not found — {peer.install}"
    return facts
