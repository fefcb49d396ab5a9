"""Compare in a real browser: a sweep of 4 live runs, opened in one click, draws 4 growing lines."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from helpers.browser import chromium_page, dashboard_server, require_browser

from nbrunner import Runner

pytestmark = pytest.mark.browser

LIVE = """\
import sys, time
from nbrunner import report
lr = float(sys.argv[2])
for step in range(100000):
    report(step=step, loss=1 / (1 + lr * step))
    time.sleep(0.25)  # slow enough that the lines stay under the downsampling limit
"""


def path_lengths(page: object) -> list[int]:
    """The length of each drawn line's SVG path (it grows with its points)."""
    return page.eval_on_selector_all(  # type: ignore[attr-defined]
        ".nbr-cfigure .curve path.line",
        "paths => paths.map(p => (p.getAttribute('d') || '').length)",
    )


def test_a_sweep_of_four_runs_draws_four_growing_lines(tmp_path: Path) -> None:
    require_browser()
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)
    home = tmp_path / "home"
    runner = Runner(home, start=False)
    (tmp_path / "live.py").write_text(LIVE)
    runner.register(
        "live",
        command=[sys.executable, str(tmp_path / "live.py")],
        params={"lr": {"type": "float", "default": 0.1}},
    )
    sweep = runner.sweep("live", grid={"lr": [0.1, 0.2, 0.4, 0.8]})
    try:
        with dashboard_server(home, tmp_path / "voila.log") as url, chromium_page() as page:
            page.goto(url)
            page.wait_for_selector(".nbr-app.nbr-ready", timeout=90_000)
            page.locator(".nbr-tabs .lm-TabBar-tab", has_text="Compare").click()
            label = f"{sweep.id} · live · 4 runs"
            sweep_picker = page.locator(".nbr-csweep select")
            expect(sweep_picker.locator("option", has_text=label)).to_have_count(1)
            sweep_picker.select_option(label=label)  # the one click
            lines = page.locator(".nbr-cfigure .curve path.line")
            expect(lines).to_have_count(4, timeout=30_000)
            page.wait_for_function(
                "() => [...document.querySelectorAll('.nbr-cfigure .curve path.line')]"
                ".every(p => (p.getAttribute('d') || '').length > 20)",
                timeout=30_000,
            )
            before = path_lengths(page)
            time.sleep(5)
            after = path_lengths(page)
            assert len(after) == 4 and all(a > b for a, b in zip(after, before, strict=True)), (
                before,
                after,
            )
            legend = page.eval_on_selector(".nbr-cfigure", "figure => figure.textContent")
            for run_id, lr in zip(sweep.ids, (0.1, 0.2, 0.4, 0.8), strict=True):
                assert f"#{run_id} live lr={lr}" in legend
    finally:
        for run in sweep:
            runner.cancel(run.id)
        for run in sweep:
            runner.wait(run.id, timeout=20)
