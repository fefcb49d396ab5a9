"""Real Voila + headless Chromium for the browser tests, and history seeding for the UI tests.

Chromium is Debian's (`/usr/bin/chromium`), driven by Python Playwright without a download.
Missing either skips the tests on a workstation but fails them under CI=true, where the
browser tests are part of what must pass.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from nbrunner.store import Store

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium floods a closed network with retries.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1280, "height": 800}


def require_browser() -> None:
    """Skip (or fail under CI=true) unless Chromium and Playwright are both here."""
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("Python Playwright (pip install playwright)")
    if missing:
        message = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running `nbrunner dashboard`: its process, port and the URL it printed."""

    process: subprocess.Popen[bytes]
    port: int
    url: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def kernels(self) -> list[psutil.Process]:
        found = []
        for child in self.descendants():
            with suppress(psutil.Error):
                if "ipykernel_launcher" in " ".join(child.cmdline()):
                    found.append(child)
        return found


def printed_url(out_file: Path, process: subprocess.Popen[bytes], timeout: float = 120) -> str:
    """The URL `nbrunner dashboard` prints once Voila listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in out_file.read_text().splitlines():
            if line.startswith("http://"):
                return line.strip()
        if process.poll() is not None:
            raise AssertionError(f"the dashboard server exited with status {process.returncode}")
        time.sleep(0.1)
    raise AssertionError(f"the dashboard server printed no URL in {timeout} s")


@contextmanager
def dashboard_server(home: Path, log_dir: Path) -> Iterator[Server]:
    """`nbrunner dashboard` on a free port; stops it with SIGTERM to that process alone
    (it must stop Voila and the page kernels), then sweeps its group if anything is left."""
    port = free_port()
    command = [
        sys.executable,
        "-c",
        "import sys; from nbrunner.cli import main; sys.exit(main())",
        "dashboard",
        "--home",
        str(home),
        "--port",
        str(port),
        "--no-browser",
    ]
    log_dir.mkdir(parents=True, exist_ok=True)
    out_file = log_dir / f"dashboard-{port}.out"
    with open(out_file, "wb") as out, open(log_dir / f"dashboard-{port}.log", "wb") as log:
        process = subprocess.Popen(command, stdout=out, stderr=log, start_new_session=True)
        try:
            yield Server(process, port, printed_url(out_file, process))
        finally:
            stop_server(process)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # a leftover would outlive the test session
    process.wait(timeout=5)


@contextmanager
def chromium_page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser.new_page(viewport=VIEWPORT)
        finally:
            browser.close()


def seed_history(store: Store, count: int, module: str = "seeded") -> list[int]:
    """Finished runs written straight into the store, for paging tests (nothing is run)."""
    now = time.time()
    rows = [
        {
            "module": module,
            "params": {"i": i},
            "argv": [],
            "env": {},
            "status": "succeeded",
            "exit_code": 0,
            "submitted_at": now - 60 + i * 0.01,
            "started_at": now - 60 + i * 0.01,
            "ended_at": now - 30 + i * 0.01,
        }
        for i in range(count)
    ]
    return store.insert_runs(rows)
