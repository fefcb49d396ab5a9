"""What the dashboard shows of pruned sweeps and of provenance: real Voila, headless Chromium.

A home whose sweep (a script in a git work tree, reporting through `nbrunner.report`) had
its poor run pruned; the page must show that run's `pruned` badge in its own colour, find
it with the status filter, show the commit it ran in its log tab, and offer a prune box
in the sweep launcher.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.browser import (
    chromium,
    dashboard_server,
    open_dashboard,
    require_browser,
    select_tab,
)
from helpers.git import git

from nbrunner import Runner, RunStatus
from nbrunner.ui.theme import STATUS_COLOURS

pytestmark = pytest.mark.browser

RUN_TIMEOUT_S = 60.0
LEARN = """\
import argparse, time
from nbrunner import report
from nbrunner.reporting import flush
parser = argparse.ArgumentParser()
parser.add_argument("--quality", type=float)
args = parser.parse_args()
for step in range(10):
    report(step=step, acc=args.quality * (step + 1) / 10)
flush()
while args.quality < 0.5:  # a poor run goes on until it is stopped
    time.sleep(0.1)
"""


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int, str]]:
    """A home with an ended, pruned sweep: (home, the pruned run's id, the commit it ran)."""
    root = tmp_path_factory.mktemp("pruning")
    repo = root / "project"
    repo.mkdir()
    (repo / "learn.py").write_text(LEARN)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    home = root / "home"
    with Runner(home) as runner:
        runner.register(
            "learn",
            script="learn.py",
            cwd=str(repo),
            params={"quality": {"type": "float", "default": 0.5}},
        )
        runner.config("max_concurrent", 2)  # the poor run is judged against ended runs
        sweep = runner.sweep("learn", {"quality": [0.9, 0.8, 0.85, 0.2]}, prune="acc:max")
        poor = runner.wait(sweep.ids[3], timeout=RUN_TIMEOUT_S)
        assert poor.status is RunStatus.PRUNED, poor
        for run_id in sweep.ids:
            runner.wait(run_id, timeout=RUN_TIMEOUT_S)
    yield home, poor.id, git(repo, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def page(swept: tuple[Path, int, str]) -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)
    home = swept[0]
    with dashboard_server(home, home.parent) as server, chromium() as browser:
        yield open_dashboard(browser, server.url)


def test_a_pruned_run_has_its_badge_filter_and_provenance(
    page: Any, swept: tuple[Path, int, str]
) -> None:
    from playwright.sync_api import expect

    _, pruned, commit = swept
    select_tab(page, "History")
    page.select_option(".nbr-hstatus select", "pruned")
    rows = page.locator(".nbr-hrow")
    expect(rows).to_have_count(1)
    badge = page.locator(f".nbr-hrun-{pruned} .nbr-badge")
    expect(badge).to_have_text("pruned")
    colour = STATUS_COLOURS["pruned"].lstrip("#")  # its own, not the grey of unknown states
    rgb = ", ".join(str(int(colour[i : i + 2], 16)) for i in (0, 2, 4))
    expect(badge).to_have_css("background-color", f"rgb({rgb})")

    page.locator(".nbr-hview").first.click()
    select_tab(page, f"#{pruned} learn")
    expect(page.locator(".nbr-provenance").last).to_contain_text(f"git {commit[:12]} (clean)")
    expect(page.locator(".nbr-provenance").last).to_contain_text(f"python {sys.executable}")


def test_the_sweep_launcher_offers_a_prune_box(page: Any) -> None:
    from playwright.sync_api import expect

    launcher = page.locator(".nbr-launcher")
    launcher.get_by_label("Module").select_option("learn")
    prune = page.locator(".nbr-prune-row")
    expect(prune).to_be_hidden()  # only a sweep prunes
    page.locator(".nbr-sweep input").check()
    expect(prune).to_be_visible()
    expect(launcher.get_by_label("Prune")).to_have_attribute(
        "placeholder", "metric:max or metric:min"
    )
