"""Compare in a real browser: a sweep of 4 live runs, opened in one click, draws 4 growing lines."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers.browser import chromium_page, dashboard_server, require_browser
from helpers.procs import wait_until

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
        with dashboard_server(home, tmp_path / "voila") as server, chromium_page() as page:
            page.goto(server.url)
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
            page.wait_for_function(  # every line grows while its run reports
                "before => [...document.querySelectorAll('.nbr-cfigure .curve path.line')]"
                ".every((p, i) => (p.getAttribute('d') || '').length > before[i])",
                arg=before,
                timeout=60_000,
            )
            assert len(path_lengths(page)) == 4
            legend = page.eval_on_selector(".nbr-cfigure", "figure => figure.textContent")
            for run_id, lr in zip(sweep.ids, (0.1, 0.2, 0.4, 0.8), strict=True):
                assert f"#{run_id} live lr={lr}" in legend
    finally:
        for run in sweep:
            runner.cancel(run.id)
        for run in sweep:
            runner.wait(run.id, timeout=20)


# The y axis's labelled ticks: their vertical positions, from the tick groups' transforms.
_Y_TICKS_JS = """
() => {
  const axes = [...document.querySelectorAll('.nbr-cfigure g.axis')];
  const y = axes.find((a) => [...a.querySelectorAll('.tick')].some((t) =>
    /translate\\(0[,\\s]/.test(t.getAttribute('transform') || '')));
  if (!y) return [];
  return [...y.querySelectorAll('.tick')]
    .filter((t) => (t.textContent || '').trim() && getComputedStyle(t).display !== 'none')
    .map((t) => Number((t.getAttribute('transform').match(/[\\d.-]+/g) || [0, 0])[1]));
}
"""


def uneven(positions: list[float]) -> bool:
    """Whether labelled ticks are spaced unevenly, as on a log axis (a linear one: evenly)."""
    gaps = [round(abs(b - a)) for a, b in itertools.pairwise(positions)]
    return max(gaps) - min(gaps) > 2


def pick(choices: Any, *run_ids: int) -> None:
    """Choose these runs in the run list (its options are labelled "#id module status …")."""
    labels = [choices.locator("option", has_text=f"#{i} ").inner_text() for i in run_ids]
    choices.select_option(label=labels)


def wait_for_axis(page: Any, log: bool) -> list[float]:
    """Until the y axis has labelled ticks spaced as a log (or a linear) axis spaces them."""

    def drawn() -> list[float] | None:
        ticks = page.evaluate(_Y_TICKS_JS)
        return ticks if len(ticks) >= 3 and uneven(ticks) == log else None

    return wait_until(drawn, timeout=30, what=f"a {'log' if log else 'linear'} y axis")


def test_log_scale_redraws_its_axis_and_a_run_without_metrics_says_so(tmp_path: Path) -> None:
    """Log scale on: a log axis (uneven ticks) under the lines; off: labelled ticks again.
    A chosen run that reported nothing is named; each run keeps its colour; the list says
    a run's status as it is now."""
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
    runner.register("quiet", command=[sys.executable, "-c", "import time; time.sleep(600)"])
    live, quiet = runner.submit("live", {"lr": 0.5}), runner.submit("quiet")
    try:
        with dashboard_server(home, tmp_path / "voila") as server, chromium_page() as page:
            page.goto(server.url)
            page.wait_for_selector(".nbr-app.nbr-ready", timeout=90_000)
            page.locator(".nbr-tabs .lm-TabBar-tab", has_text="Compare").click()
            choices = page.locator(".nbr-cruns select")
            expect(choices.locator("option", has_text=f"#{quiet.id} quiet running")).to_have_count(
                1
            )
            pick(choices, live.id)
            lines = page.locator(".nbr-cfigure .curve path.line")
            page.wait_for_function(
                "() => document.querySelector("
                "'.nbr-cfigure .curve path.line')?.getAttribute('d')?.length > 40"
            )
            colour = lines.first.evaluate("p => getComputedStyle(p).stroke")
            wait_for_axis(page, log=False)
            log_scale = page.locator(".nbr-compare .widget-checkbox input")
            log_scale.check()
            wait_for_axis(page, log=True)
            log_scale.uncheck()
            wait_for_axis(page, log=False)  # with its tick labels back

            pick(choices, live.id, quiet.id)
            message = page.locator(".nbr-cmessage")
            expect(message).to_contain_text(f"No loss reported by #{quiet.id} quiet")
            pick(choices, quiet.id)  # drop the live run, then pick it again
            expect(lines).to_have_count(0)
            pick(choices, live.id, quiet.id)
            expect(lines).to_have_count(1)
            assert lines.first.evaluate("p => getComputedStyle(p).stroke") == colour

            runner.cancel(quiet.id)
            expect(
                choices.locator("option", has_text=f"#{quiet.id} quiet cancelled")
            ).to_have_count(1)
    finally:
        for run in (live, quiet):
            if not runner.store.get(run.id).is_done:
                runner.cancel(run.id)
            runner.wait(run.id, timeout=20)
