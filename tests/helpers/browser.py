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
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Wait until the server listens; a TCP connect, since each page load starts a kernel."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the dashboard server exited with status {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"the dashboard server did not listen on port {port} in {timeout} s")


@contextmanager
def dashboard_server(home: Path, log_file: Path) -> Iterator[str]:
    """`nbrunner dashboard` on a free port; yields its URL; stops it (and its kernels)."""
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
    with open(log_file, "wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_for_port(port, process)
            yield f"http://127.0.0.1:{port}/"
        finally:
            stop_group(process)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM lets Voila shut its kernels down; SIGKILL whatever is left of the group."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
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
