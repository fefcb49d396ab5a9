"""Real Voila + headless Chromium for the browser tests, and history seeding for the UI tests.

Chromium is Debian's (`/usr/bin/chromium`), driven by Python Playwright without a download.
Missing either skips the tests on a workstation but fails them under CI=true, where the
browser tests are part of what must pass.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from nbrunner.store import Store
from nbrunner.ui.serve import listening_ports

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium floods a closed network with retries.
# Containers give /dev/shm 64 MB, too little for Chromium's renderers (pages crash at random):
# --disable-dev-shm-usage puts that memory in the temp directory instead.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# Chromium resolves this name to 127.0.0.1, as a DNS-rebinding attacker's name would.
REBIND_HOST = "rebind.test"
CHROMIUM_ARGS.append(f"--host-resolver-rules=MAP {REBIND_HOST} 127.0.0.1")
VIEWPORT = {"width": 1280, "height": 800}
READY = ".nbr-app.nbr-ready"


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
    printed: tuple[Path, ...] = ()  # where its stdout and stderr went

    def output(self) -> str:
        """Everything it printed so far, stdout then stderr."""
        return "".join(path.read_text(errors="replace") for path in self.printed)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def wait_for_exit(self, timeout: float) -> int:
        """Its exit status; if it is still alive after timeout, a failure that says why:
        its state, the signals it ignores and catches, and every thread's stack."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
            state = [line for line in status.splitlines() if line.startswith(("State", "Sig"))]
            self.process.send_signal(signal.SIGUSR1)  # faulthandler: the stacks to stderr
            time.sleep(2)
            raise AssertionError(
                f"nbrunner dashboard still runs {timeout} s after the signal: {state}\n"
                + self.output()[-6000:]
            ) from None

    def kernels(self) -> list[psutil.Process]:
        found = []
        for child in self.descendants():
            with suppress(psutil.Error):
                if "ipykernel_launcher" in " ".join(child.cmdline()):
                    found.append(child)
        return found


class ServerExited(AssertionError):
    """The server ended before it listened (with port_retries=0: the port was taken)."""


def printed_url(out_file: Path, process: subprocess.Popen[bytes], timeout: float = 120) -> str:
    """The URL `nbrunner dashboard` prints once Voila listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in out_file.read_text().splitlines():
            if line.startswith("http://"):
                return line.strip()
        if process.poll() is not None:
            raise ServerExited(f"the dashboard server exited with status {process.returncode}")
        time.sleep(0.1)
    raise AssertionError(f"the dashboard server printed no URL in {timeout} s")


@contextmanager
def dashboard_server(home: Path, log_dir: Path) -> Iterator[Server]:
    """`nbrunner dashboard` on a free port (started again on another if a program took it
    meanwhile: Voila is told not to move); stops it with SIGTERM to that process alone (it
    must stop Voila and the page kernels), then sweeps its group if anything is left."""
    log_dir.mkdir(parents=True, exist_ok=True)

    def printed(port: int) -> tuple[Path, Path]:
        return log_dir / f"dashboard-{port}.out", log_dir / f"dashboard-{port}.log"

    def start(port: int) -> subprocess.Popen[bytes]:
        out_file, err_file = printed(port)
        with open(out_file, "wb") as out, open(err_file, "wb") as log:
            argv = _dashboard_argv(home, port)
            return subprocess.Popen(argv, stdout=out, stderr=log, start_new_session=True)

    process, port = start_on_free_port(
        start, ready=lambda port, process: printed_url(printed(port)[0], process)
    )
    try:
        yield Server(process, port, printed_url(printed(port)[0], process), printed(port))
    finally:
        stop_server(process)


def _dashboard_argv(home: Path, port: int) -> list[str]:
    return [
        sys.executable,
        "-c",
        # as from a terminal, whatever started the tests: Ctrl-C interrupts (a background
        # job of a script inherits SIGINT ignored); SIGUSR1 prints every thread's stack
        "import faulthandler, signal, sys; faulthandler.register(signal.SIGUSR1, all_threads=True)"
        "; signal.signal(signal.SIGINT, signal.default_int_handler)"
        "; from nbrunner.cli import main; sys.exit(main())",
        "dashboard",
        "--home",
        str(home),
        "--port",
        str(port),
        "--no-browser",
    ]


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # a leftover would outlive the test session
    process.wait(timeout=5)


@contextmanager
def chromium(extra_args: tuple[str, ...] = ()) -> Iterator[Any]:
    """A headless Chromium; pages come from `browser.new_page(viewport=VIEWPORT)`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_ARGS, *extra_args]
        )
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def chromium_page() -> Iterator[Any]:
    with chromium() as browser:
        yield browser.new_page(viewport=VIEWPORT)


@contextmanager
def jupyterlab_server(
    root: Path, cells: list[str], theme: str = "JupyterLab Dark"
) -> Iterator[str]:
    """Real JupyterLab in `theme`, serving `root/dashboard.ipynb` made of `cells`; yields
    the notebook's URL (the token of this test server travels in its environment)."""
    settings = root / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "themes.jupyterlab-settings").write_text(json.dumps({"theme": theme}))
    notebooks = root / "notebooks"
    notebooks.mkdir()
    (notebooks / "dashboard.ipynb").write_text(json.dumps(_notebook(cells)))
    token = secrets.token_hex(16)
    env = dict(
        os.environ,
        JUPYTER_TOKEN=token,
        JUPYTERLAB_SETTINGS_DIR=str(root / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(root / "workspaces"),
    )
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={notebooks}",
    ]
    with open(root / "jupyterlab.log", "wb") as log:
        process, port = start_on_free_port(
            lambda port: subprocess.Popen(
                [*command, f"--port={port}"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        try:
            yield f"http://127.0.0.1:{port}/lab/tree/dashboard.ipynb?token={token}"
        finally:
            stop_server(process)


def _notebook(cells: list[str]) -> dict[str, Any]:
    return {
        "cells": [
            {
                "cell_type": "code",
                "id": f"cell-{i}",
                "metadata": {},
                "source": source,
                "outputs": [],
                "execution_count": None,
            }
            for i, source in enumerate(cells)
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Until `process` itself listens on `port`: a connect alone would also reach another
    program that took the port after free_port() let it go."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerExited(f"the server exited with status {process.returncode}")
        if port in (listening_ports(process.pid) or ()):
            return
        time.sleep(0.1)
    raise AssertionError(f"the server did not listen on port {port} in {timeout} s")


def start_on_free_port(
    start: Callable[[int], subprocess.Popen[bytes]],
    ready: Callable[[int, subprocess.Popen[bytes]], object] = wait_for_port,
    attempts: int = 3,
) -> tuple[subprocess.Popen[bytes], int]:
    """A server started on a port that was free a moment ago, once `ready` says it serves
    there. Told not to try other ports (port_retries=0), it exits if another program took
    the port meanwhile (tests and Ray run side by side): it is then started on another."""
    for attempt in range(1, attempts + 1):
        port = free_port()
        process = start(port)
        try:
            ready(port, process)
        except BaseException as failed:
            stop_server(process)
            if isinstance(failed, ServerExited) and attempt < attempts:
                continue
            raise
        return process, port
    raise ValueError(f"attempts must be at least 1, got {attempts}")


def run_cell(page: Any, index: int) -> None:
    """Run a JupyterLab notebook cell in place (Ctrl+Enter in its editor), once the
    notebook's kernel is up: a run asked for before that can be dropped."""
    from playwright.sync_api import expect

    expect(page.get_by_text(re.compile(r"\| Idle$"))).to_have_count(1, timeout=120_000)
    page.locator(".jp-Notebook .jp-Cell .cm-content").nth(index).click()
    page.keyboard.press("Control+Enter")


def restart_kernel(page: Any) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="Kernel").click()
    page.locator(".lm-Menu-itemLabel", has_text="Restart Kernel…").click()
    page.locator(".jp-Dialog button.jp-mod-accept").click()


def open_dashboard(browser: Any, url: str) -> Any:
    """A new page on the dashboard, once its widgets are built."""
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(url)
    page.wait_for_selector(READY, timeout=120_000)
    return page


def error_boxes(page: Any) -> list[str]:
    """Where the widget manager drew a box for a widget it could not build (a model named a
    child it never learnt of, say), by the classes of the widget holding it: none should."""
    return list(page.evaluate(_ERROR_BOXES_JS))


_ERROR_BOXES_JS = """
() => [...document.querySelectorAll('.jupyter-widgets-error-widget')]
  .map((e) => e.parentElement.closest('[class*="nbr-"]')?.className ?? 'outside the dashboard')
"""


def launch(page: Any, module: str, copies: int = 1, **params: object) -> list[int]:
    """Fill the launcher form and press Run; returns the ids the launcher reports."""
    from playwright.sync_api import expect

    page.select_option(".nbr-module-picker select", module)
    page.wait_for_selector(f".nbr-form-{module}", state="attached")
    for name, value in params.items():
        field = page.locator(f".nbr-form-{module} .nbr-field-{name} input")
        field.fill(str(value))
        field.press("Tab")
    page.locator(".nbr-copies input").fill(str(copies))
    page.locator(".nbr-copies input").press("Tab")
    page.click("button.nbr-run-button")
    message = page.locator(".nbr-launch-message")
    expect(message).to_contain_text(f"Queued {copies} run{'s' if copies > 1 else ''} of {module}")
    first, *last = map(int, re.findall(r"#(\d+)", message.inner_text()))
    return list(range(first, (last[0] if last else first) + 1))


def select_tab(page: Any, title: str) -> None:
    page.locator(".nbr-tabs .lm-TabBar-tab", has_text=title).click()


# The contrast of each selector's text with the background it is drawn on (the first
# ancestor with an opaque one), per WCAG 2: (L1 + 0.05) / (L2 + 0.05).
_CONTRAST_JS = """
(selectors) => {
  const rgba = (c) => { const v = c.match(/[\\d.]+/g).map(Number); return v.length === 3 ? [...v, 1] : v; };
  const channel = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const luminance = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  const backdrop = (el) => {
    for (; el; el = el.parentElement) {
      const c = rgba(getComputedStyle(el).backgroundColor);
      if (c[3] > 0.5) return c;
    }
    return [255, 255, 255, 1];
  };
  const out = {};
  for (const selector of selectors) {
    const el = document.querySelector(selector);
    if (!el) { out[selector] = null; continue; }
    const bg = backdrop(el);
    const fg = rgba(getComputedStyle(el).color);
    const seen = [0, 1, 2].map((i) => fg[3] * fg[i] + (1 - fg[3]) * bg[i]);
    const [a, b] = [luminance(seen), luminance(bg)];
    out[selector] = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  }
  return out;
}
"""


def contrast_ratios(page: Any, wanted: dict[str, float]) -> dict[str, tuple[float, float]]:
    """(measured, wanted) contrast per selector; a selector that matches nothing fails once
    it has had the expect timeout to show up (a run card's chart comes with its
    run's first reported points, a tick or two after its progress)."""
    from playwright.sync_api import expect

    for selector in wanted:
        expect(page.locator(selector).first).to_be_attached()
    measured = page.evaluate(_CONTRAST_JS, list(wanted))
    missing = [selector for selector, ratio in measured.items() if ratio is None]
    assert not missing, f"nothing matches {missing}"
    return {selector: (measured[selector], ratio) for selector, ratio in wanted.items()}


_HISTORY_LAYOUT_JS = """
() => {
  const all = (s) => [...document.querySelectorAll(s)];
  const box = (e) => e.getBoundingClientRect();
  const buttons = all('.nbr-hactions .widget-button');
  return {
    scrollers: all('.nbr-history, .nbr-history *')
      .filter((e) => e.scrollWidth > e.clientWidth + 1
        && ['auto', 'scroll'].includes(getComputedStyle(e).overflowX))
      .map((e) => e.className),
    tableRight: box(document.querySelector('.nbr-htable')).right,
    buttonsLeft: Math.min(...buttons.map((b) => box(b).left)),
    truncatedButtons: buttons.some((b) => b.scrollWidth > b.clientWidth + 1
      || b.scrollHeight > b.clientHeight + 1),
    headerWidths: all('.nbr-htable th').map((th) => box(th).width),
    rows: all('.nbr-htable tbody tr').map((tr) => [box(tr).top, box(tr).bottom]),
    actionCentres: all('.nbr-hactions-row').map((a) => (box(a).top + box(a).bottom) / 2),
    // what else the button column holds (a child that is no row of buttons: what it says)
    strangers: all('.nbr-hactions > *').filter((c) => !c.classList.contains('nbr-hactions-row'))
      .map((c) => [c.className, Math.round(box(c).height), c.textContent.trim().slice(0, 300)]),
  };
}
"""


def history_layout(page: Any) -> dict[str, Any]:
    """Where History's table, rows and buttons are, and whether anything scrolls sideways."""
    return dict(page.evaluate(_HISTORY_LAYOUT_JS))


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


def take_screenshots(folder: Path) -> list[Path]:
    """docs/dashboard.png and docs/dashboard-dark.png: a scratch home with some history and
    a few runs going, shown light, then in JupyterLab's dark theme."""
    import tempfile

    from playwright.sync_api import expect

    from nbrunner import Runner, contact

    folder.mkdir(parents=True, exist_ok=True)
    shots = [folder / "dashboard.png", folder / "dashboard-dark.png"]
    with tempfile.TemporaryDirectory(prefix="nbrunner-shots-") as scratch:
        home = Path(scratch) / "home"
        with Runner(home) as runner:
            seed_history(runner.store, 30, module="count")
            with dashboard_server(home, Path(scratch)) as server, chromium() as browser:
                runs = [
                    runner.submit("train", {"epochs": 2, "steps": 200, "step_time": 0.3}),
                    runner.submit("count", {"n": 500, "delay": 0.2, "label": "batch"}),
                ]
                for shot, theme in zip(shots, ("", "&theme=dark"), strict=True):
                    page = open_dashboard(browser, server.url + theme)
                    quick = {"epochs": 1, "steps": 4, "step_time": 0.1, "fail": True}
                    runs.append(runner.submit("train", quick))  # ends while shown: a toast
                    expect(page.locator(".nbr-toast")).to_have_count(1, timeout=60_000)
                    expect(page.locator(f".nbr-run-{runs[0].id} .nbr-progress")).to_be_visible()
                    page.click(f".nbr-run-{runs[0].id} .nbr-view")
                    expect(page.locator(f".nbr-log-{runs[0].id}")).to_contain_text("epoch 1")
                    select_tab(page, "History")
                    page.screenshot(path=str(shot), full_page=True)
                    page.close()
                for record in runner.store.active():
                    runner.cancel(record.id)
        contact.stop(home)  # the home goes with the folder: so does its service
    return shots


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="refresh the README's dashboard screenshots")
    parser.add_argument("--screenshots", type=Path, required=True, metavar="FOLDER")
    args = parser.parse_args(argv)
    require_browser()
    for shot in take_screenshots(args.screenshots):
        print(shot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
