"""The dashboard end to end: `nbrunner dashboard` (real Voila) driven by headless Chromium.

One server and one page for the module; the tests run in order on the same page, as a user
would: launch, watch, cancel, look things up in History, page through it.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.browser import chromium_page, dashboard_server, require_browser, seed_history

from nbrunner import Runner

pytestmark = pytest.mark.browser

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "dashboard.png"
XSS = "print('<img src=x onerror=window.__pwned=1>'); print('<script>window.__pwned=2</script>')"
SEEDED = 60


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A home with 60 finished runs and a module that prints markup."""
    path = tmp_path_factory.mktemp("browser") / "home"
    runner = Runner(path, start=False)
    seed_history(runner.store, SEEDED)
    runner.register("xss", command=[sys.executable, "-c", XSS])
    yield path
    for record in runner.store.active():  # leave no run behind
        runner.cancel(record.id)
    for record in runner.store.active():
        runner.wait(record.id, timeout=20)


@pytest.fixture(scope="module")
def page(home: Path) -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import expect

    expect.set_options(timeout=20_000)
    with dashboard_server(home, home.parent) as server, chromium_page() as page:
        page.goto(server.url)
        page.wait_for_selector(".nbr-app.nbr-ready", timeout=90_000)
        yield page


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


def last_count(page: Any, run_id: int, label: str) -> int:
    found = re.findall(rf"{label} (\d+)/", page.locator(f".nbr-log-{run_id}").inner_text())
    return int(found[-1]) if found else 0


def expect_log_grows(page: Any, run_id: int, label: str) -> None:
    from playwright.sync_api import expect

    body = page.locator(f".nbr-log-{run_id}")
    expect(body).to_contain_text(f"{label} 2/")
    seen = last_count(page, run_id, label)
    expect(body).to_contain_text(f"{label} {seen + 3}/")


def filter_history(page: Any, module: str) -> None:
    select_tab(page, "History")
    field = page.locator(".nbr-hmodule input")
    field.fill(module)
    field.press("Enter")


def test_launch_watch_cancel_and_find_in_history(page: Any) -> None:
    from playwright.sync_api import expect

    alpha = launch(page, "count", copies=2, n=300, delay=0.2, label="alpha")
    (sleeper,) = launch(page, "sleep", n=300, delay=0.2)
    expect(page.locator(".nbr-card")).to_have_count(3)
    expect(page.locator(".nbr-active-heading")).to_have_text("Active runs (3)")

    page.click(f".nbr-run-{alpha[0]} .nbr-view")
    page.click(f".nbr-run-{sleeper} .nbr-view")
    expect_log_grows(page, sleeper, "count")
    assert "alpha" not in page.locator(f".nbr-log-{sleeper}").inner_text()
    select_tab(page, f"#{alpha[0]} count")
    expect_log_grows(page, alpha[0], "alpha")
    assert "count " not in page.locator(f".nbr-log-{alpha[0]}").inner_text()

    page.click(f".nbr-run-{alpha[1]} .nbr-cancel")
    expect(page.locator(f".nbr-run-{alpha[1]} .nbr-badge")).to_have_text("cancelled")
    expect(page.locator(".nbr-active-heading")).to_have_text("Active runs (2)")
    expect(page.locator(".nbr-toast-cancelled")).to_contain_text(f"#{alpha[1]} count")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    filter_history(page, "count")
    rows = page.locator(".nbr-hrow")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text(f"#{alpha[1]}")
    expect(rows.nth(0)).to_contain_text("cancelled")
    expect(rows.nth(1)).to_contain_text(f"#{alpha[0]}")
    filter_history(page, "sleep")
    expect(rows).to_have_count(1)
    expect(rows.nth(0)).to_contain_text(f"#{sleeper}")


def test_history_pages_through_seeded_runs(page: Any) -> None:
    from playwright.sync_api import expect

    filter_history(page, "seeded")
    label, rows = page.locator(".nbr-page-label"), page.locator(".nbr-hrow")
    expect(label).to_have_text(f"page 1 of 3 · {SEEDED} runs")
    expect(rows).to_have_count(25)
    page.click("button.nbr-next")
    expect(label).to_have_text(f"page 2 of 3 · {SEEDED} runs")
    expect(rows).to_have_count(25)
    page.click("button.nbr-next")
    expect(label).to_have_text(f"page 3 of 3 · {SEEDED} runs")
    expect(rows).to_have_count(10)
    expect(page.locator("button.nbr-next")).to_be_disabled()
    page.click("button.nbr-prev")
    expect(label).to_have_text(f"page 2 of 3 · {SEEDED} runs")


def test_untrusted_output_is_shown_as_text_and_runs_nothing(page: Any) -> None:
    from playwright.sync_api import expect

    (run_id,) = launch(page, "xss")
    page.click(f".nbr-run-{run_id} .nbr-view")
    body = page.locator(f".nbr-log-{run_id}")
    expect(body).to_contain_text("<img src=x onerror=window.__pwned=1>")
    expect(body).to_contain_text("<script>window.__pwned=2</script>")
    expect(page.locator(f".nbr-run-{run_id} .nbr-lastline")).to_have_text(
        "<script>window.__pwned=2</script>"
    )
    time.sleep(0.5)  # give an injected handler the time it would need to fire
    assert page.evaluate("window.__pwned") is None
    assert page.locator(".nbr-app img, .nbr-app script").count() == 0
