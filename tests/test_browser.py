"""The dashboard end to end: `nbrunner dashboard` (real Voila) driven by headless Chromium.

One server and one page for the module; the tests run in order on the same page, as a user
would: launch, watch, cancel, look things up in History, page through it. Other pages come
and go beside it: without the token, through a rebinding host name, in the dark theme.
Screenshots go to the test's temporary folder; `python -m tests.helpers.browser
--screenshots docs/` refreshes the ones in the README.
"""

from __future__ import annotations

import contextlib
import csv
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.browser import (
    READY,
    REBIND_HOST,
    VIEWPORT,
    Server,
    chromium,
    contrast_ratios,
    dashboard_server,
    error_boxes,
    history_layout,
    jupyterlab_server,
    launch,
    open_dashboard,
    require_browser,
    restart_kernel,
    run_cell,
    seed_history,
    select_tab,
)
from helpers.procs import wait_for_file, wait_until

from nbrunner import Runner
from nbrunner.errors import InvalidTransition
from nbrunner.ui.gauges import SPARK_HEIGHT

pytestmark = pytest.mark.browser

XSS = "print('<img src=x onerror=window.__pwned=1>'); print('<script>window.__pwned=2</script>')"
LINES = "import time\nfor i in range(3000):\n    print('line', i, flush=True)\n    time.sleep(0.05)"
LABELLED = {
    "learning-rate": {"type": "float", "default": 0.01},
    "epochs": {"type": "int", "default": 1},
    "seed": {"type": "int", "default": 0},
}
SEEDED = 60
TEXT_CONTRAST = 4.5  # WCAG AA for body text
MUTED_CONTRAST = 3.0  # secondary text, as JupyterLab's own font-color2


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A home with 60 finished runs and a module that prints markup."""
    path = tmp_path_factory.mktemp("browser") / "home"
    runner = Runner(path, start=False)
    seed_history(runner.store, SEEDED)
    runner.register("xss", command=[sys.executable, "-c", XSS])
    runner.register("lines", command=[sys.executable, "-c", LINES])
    runner.register("labelled", command=[sys.executable, "-c", "pass"], params=LABELLED)
    yield path
    for record in runner.store.active():  # leave no run behind
        runner.cancel(record.id)
    for record in runner.store.active():
        runner.wait(record.id, timeout=20)


@pytest.fixture(scope="module")
def runner(home: Path) -> Iterator[Runner]:
    """Runs started outside the page (a script, the CLI) to watch the page follow them."""
    with Runner(home) as r:
        yield r


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[Server]:
    require_browser()
    with dashboard_server(home, home.parent) as running:
        yield running


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[Any]:
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)
    with chromium() as running:
        yield running


@pytest.fixture(scope="module")
def page(browser: Any, server: Server) -> Iterator[Any]:
    shown = open_dashboard(browser, server.url)
    yield shown
    assert error_boxes(shown) == []  # after every test of the module has used the page


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def last_count(page: Any, run_id: int, label: str) -> int:
    found = re.findall(rf"{label} (\d+)/", page.locator(f".nbr-log-{run_id}").inner_text())
    return int(found[-1]) if found else 0


def expect_log_grows(page: Any, run_id: int, label: str) -> None:
    from playwright.sync_api import expect

    body = page.locator(f".nbr-log-{run_id}")
    expect(body).to_contain_text(f"{label} 2/")
    seen = last_count(page, run_id, label)
    expect(body).to_contain_text(f"{label} {seen + 3}/")


def assert_whole(button: Any, label: str) -> None:
    """The button shows its whole label (not "×.." nor "V…")."""
    from playwright.sync_api import expect

    expect(button).to_have_text(label)
    assert button.evaluate("b => b.scrollWidth <= b.clientWidth"), f"{label!r} is cut"


def filter_history(page: Any, module: str) -> None:
    select_tab(page, "History")
    field = page.locator(".nbr-hmodule input")
    field.fill(module)
    field.press("Enter")


def test_launch_watch_cancel_and_find_in_history(page: Any, shots: Path) -> None:
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
    expect(page.locator(f".nbr-run-{alpha[0]} .nbr-progress")).to_contain_text("%")

    page.click(f".nbr-run-{alpha[1]} .nbr-cancel")
    expect(page.locator(f".nbr-run-{alpha[1]} .nbr-badge")).to_have_text("cancelled")
    expect(page.locator(".nbr-active-heading")).to_have_text("Active runs (2)")
    expect(page.locator(".nbr-toast-cancelled")).to_contain_text(f"#{alpha[1]} count")
    assert_whole(page.locator(".nbr-toast-cancelled .nbr-dismiss"), "×")
    page.screenshot(path=str(shots / "dashboard.png"), full_page=True)

    filter_history(page, "cou")  # the start of a name is enough
    rows = page.locator(".nbr-hrow")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text(f"#{alpha[1]}")
    expect(rows.nth(0)).to_contain_text("cancelled")
    expect(rows.nth(1)).to_contain_text(f"#{alpha[0]}")
    expect(rows.nth(1).locator(".nbr-progress")).to_contain_text("%")  # live, as its card
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


def test_history_is_one_table_that_fits_at_1024_px(page: Any) -> None:
    from playwright.sync_api import expect

    page.set_viewport_size({"width": 1024, "height": 800})
    try:
        filter_history(page, "")
        expect(page.locator(".nbr-hrow")).to_have_count(25)
        expect(page.locator(".nbr-hactions-row")).to_have_count(25)
        layout = history_layout(page)
    finally:
        page.set_viewport_size(VIEWPORT)
    assert layout["scrollers"] == [], "nothing in History scrolls sideways"
    assert layout["tableRight"] <= layout["buttonsLeft"], "buttons cover no cell"
    assert not layout["truncatedButtons"], "View / Restart are shown whole"
    assert min(layout["headerWidths"]) > 20, "no column vanishes"
    for (top, bottom), centre in zip(layout["rows"], layout["actionCentres"], strict=True):
        assert top <= centre <= bottom, "each row's buttons sit beside it"


def test_a_history_row_follows_a_run_started_elsewhere(page: Any, runner: Runner) -> None:
    from playwright.sync_api import expect

    gate = runner.home.parent / "elsewhere-gate"  # halfway, the run waits to be seen running
    halfway = f"print('elsewhere 1/2', flush=True)\n{wait_for_file(gate)}print('elsewhere 2/2')"
    runner.register("halfway", command=[sys.executable, "-c", halfway])
    filter_history(page, "")
    runner.config("paused", True)
    try:
        run_id = runner.submit("halfway").id
        row = page.locator(f".nbr-hrun-{run_id}")
        expect(row.locator(".nbr-badge")).to_have_text("queued")
    finally:
        runner.config("paused", False)
    expect(row.locator(".nbr-badge")).to_have_text("running")
    expect(row.locator(".nbr-progress")).to_contain_text("%")
    gate.touch()
    expect(row.locator(".nbr-badge")).to_have_text("succeeded")
    expect(row.locator(".nbr-c-exit")).to_have_text("0")


def test_a_failed_runs_row_says_why_it_failed(page: Any, runner: Runner) -> None:
    """The final exception line, not "exited with code 1" (the log needs no opening)."""
    from playwright.sync_api import expect

    raises = "import sys\nprint('fitting')\nraise ValueError('C must be positive, got -1')"
    runner.register("raises", command=[sys.executable, "-c", raises])
    filter_history(page, "raises")
    run = runner.submit("raises")
    assert run.wait(timeout=60).status.value == "failed"
    row = page.locator(f".nbr-hrun-{run.id}")
    expect(row.locator(".nbr-badge")).to_have_text("failed")
    expect(row.locator(".nbr-c-detail")).to_contain_text("ValueError: C must be positive, got -1")


def test_a_cards_restart_button_starts_the_same_run_again(page: Any, runner: Runner) -> None:
    from playwright.sync_api import expect

    (first,) = launch(page, "count", n=300, delay=0.2, label="again")
    before = {r.id for r in runner.store.active()}
    page.click(f".nbr-run-{first} .nbr-restart")
    again = wait_until(
        lambda: [r for r in runner.store.active() if r.id not in before and r.restart_of == first],
        what="the restarted run",
    )[0]
    assert again.params == runner.get(first).record.params
    expect(page.locator(f".nbr-run-{again.id}")).to_be_visible()
    for run_id in (first, again.id):
        runner.cancel(run_id)


def test_the_gauges_sparklines_move(page: Any) -> None:
    spark = page.locator(".nbr-gauges polyline").first
    spark.wait_for()
    first = spark.get_attribute("points")
    page.wait_for_function(
        "p => document.querySelector('.nbr-gauges polyline').getAttribute('points') !== p",
        arg=first,
    )
    points = [tuple(map(float, xy.split(","))) for xy in spark.get_attribute("points").split()]
    assert len(points) >= 2 and all(0 <= y <= SPARK_HEIGHT for _, y in points)


def test_history_exports_what_it_shows_as_csv(page: Any, home: Path) -> None:
    from playwright.sync_api import expect

    filter_history(page, "seeded")
    page.click("button.nbr-export")
    message = page.locator(".nbr-export-message")
    expect(message).to_contain_text("runs → ")
    count, path = message.inner_text().split(" runs → ")
    with open(path.strip(), newline="") as exported:
        rows = list(csv.DictReader(exported))
    assert len(rows) == int(count) >= SEEDED and {r["module"] for r in rows} == {"seeded"}


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
    # An image of our own that fails to load, as the injected one would: once its onerror
    # has fired, an injected handler would have fired too.
    page.evaluate("() => { const i = new Image(); i.onerror = () => { window.__control = 1 }; "
                  "i.src = 'x-' + Date.now(); }")  # fmt: skip
    page.wait_for_function("window.__control === 1")
    assert page.evaluate("window.__pwned") is None
    assert page.locator(".nbr-app img, .nbr-app script").count() == 0


# Where the log's text is in its scroller: how far the view is from the end (a column-reverse
# scroller counts scrollTop from its end: 0 there, negative above), how much is out of view,
# and where the text's last line is against the box's bottom and its first against its top.
_LOG_VIEW_JS = """
(selector) => {
  const box = document.querySelector(selector + ' .widget-html-content');
  const pre = box.querySelector('pre');
  const reversed = getComputedStyle(box).flexDirection === 'column-reverse';
  const hidden = box.scrollHeight - box.clientHeight;
  const b = box.getBoundingClientRect(), p = pre.getBoundingClientRect();
  return {
    fromEnd: reversed ? -box.scrollTop : hidden - box.scrollTop,
    hidden,
    bottomGap: b.bottom - p.bottom,
    topGap: p.top - b.top,
  };
}
"""


def log_view(page: Any, run_id: int) -> dict[str, float]:
    return dict(page.evaluate(_LOG_VIEW_JS, f".nbr-log-{run_id}"))


def test_follow_keeps_the_newest_line_in_view(page: Any, runner: Runner) -> None:
    from playwright.sync_api import expect

    run = runner.submit("lines")
    try:
        page.click(f".nbr-run-{run.id} .nbr-view")
        page.wait_for_selector(f".nbr-log-{run.id} pre")
        wait_for_view(page, run.id, lambda v: v["hidden"] > 100, "lines out of view")
        start = log_view(page, run.id)["hidden"]
        grown = wait_for_view(
            page, run.id, lambda v: v["hidden"] >= start + 200, "200 px of new lines"
        )
        assert grown["fromEnd"] <= 1, grown  # the scroller is at its end
        assert 0 <= grown["bottomGap"] <= 12, grown  # the last line sits at the box's bottom
        assert grown["topGap"] < -200, grown  # and the oldest lines went out of view

        page.click(".nbr-follow >> visible=true")  # off: the text holds still, and scrolls
        page.wait_for_selector(f".nbr-log-{run.id}.nbr-nofollow")
        held = log_view(page, run.id)
        assert held["fromEnd"] <= 1, held  # not a jump to line 1
        scroller = page.locator(f".nbr-log-{run.id} .widget-html-content")
        scroller.evaluate("e => { e.scrollTop -= 150; }")
        scrolled = log_view(page, run.id)
        assert scrolled["fromEnd"] >= 149, scrolled
        expect(page.locator(".nbr-log-waiting >> visible=true")).to_contain_text("new lines")
        assert log_view(page, run.id) == scrolled  # lines arrived, and nothing moved

        page.click(".nbr-follow >> visible=true")  # on: the newest line, pinned
        expect(page.locator(f".nbr-log-{run.id}")).not_to_have_class(re.compile("nbr-nofollow"))
        pinned = wait_for_view(page, run.id, lambda v: v["fromEnd"] <= 1, "the end in view")
        assert 0 <= pinned["bottomGap"] <= 12, pinned
        assert scroller.evaluate("e => getComputedStyle(e).overflowY") == "hidden"  # no drift
    finally:
        run.cancel()


def wait_for_view(
    page: Any, run_id: int, ready: Any, what: str, timeout: float = 60
) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = log_view(page, run_id)
        if ready(view):
            return view
        time.sleep(0.2)
    raise AssertionError(f"no {what} in {timeout} s: {view}")


def test_launcher_labels_are_whole_and_tied_to_their_inputs(page: Any, runner: Runner) -> None:
    from playwright.sync_api import expect

    launcher = page.locator(".nbr-launcher")
    launcher.get_by_label("Module").select_option("labelled")
    page.wait_for_selector(".nbr-form-labelled", state="attached")
    for name in LABELLED:
        field = page.locator(f".nbr-field-{name}")
        label, box = field.locator(".widget-label"), field.locator("input")
        expect(label).to_have_text(name)
        assert label.evaluate("l => l.scrollWidth <= l.clientWidth"), f"{name!r} is cut"
        assert label.bounding_box()["x"] + label.bounding_box()["width"] <= box.bounding_box()["x"]
        by_label = launcher.get_by_label(name, exact=True)
        expect(by_label).to_have_count(1)
        assert by_label.evaluate(f"e => !!e.closest('.nbr-field-{name}')"), name
    for label, value in (("epochs", "4"), ("seed", "10"), ("Copies", "2")):
        launcher.get_by_label(label, exact=True).fill(value)
        launcher.get_by_label(label, exact=True).press("Tab")
    launcher.get_by_label("vary seed").check()
    runner.config("paused", True)
    try:
        page.click("button.nbr-run-button")
        message = page.locator(".nbr-launch-message")
        expect(message).to_contain_text("Queued 2 runs of labelled")
        first, last = map(int, re.findall(r"#(\d+)", message.inner_text()))
        for run_id, seed in ((first, 10), (last, 11)):  # queued cards show their params
            expect(page.locator(f".nbr-run-{run_id} .nbr-params")).to_contain_text(
                f"epochs=4 seed={seed}"
            )
    finally:
        for record in runner.store.active():
            if record.module == "labelled":
                runner.cancel(record.id)
        runner.config("paused", False)
    launcher.get_by_label("Copies").fill("1")
    launcher.get_by_label("Copies").press("Tab")
    launcher.get_by_label("vary seed").uncheck()


def test_without_the_token_the_login_page_and_no_kernel(browser: Any, server: Server) -> None:
    from playwright.sync_api import expect

    kernels = len(server.kernels())
    stranger = browser.new_page(viewport=VIEWPORT)
    try:
        stranger.goto(server.base)
        expect(stranger).to_have_url(re.compile(r"/login"))
        expect(stranger.locator("#password_input")).to_be_visible()
        assert stranger.locator(".nbr-app").count() == 0
        assert len(server.kernels()) == kernels
    finally:
        stranger.close()


def test_a_rebinding_host_name_is_refused(browser: Any, server: Server) -> None:
    """Chromium resolves REBIND_HOST to 127.0.0.1, as DNS rebinding would."""
    kernels = len(server.kernels())
    attacker = browser.new_page(viewport=VIEWPORT)
    try:
        token = server.url.split("?", 1)[1]
        response = attacker.goto(f"http://{REBIND_HOST}:{server.port}/?{token}")
        assert response is not None and response.status == 403
        assert attacker.locator(".nbr-app").count() == 0
        assert len(server.kernels()) == kernels
    finally:
        attacker.close()


def test_jupyterlab_dark_theme_is_readable(
    browser: Any, server: Server, runner: Runner, shots: Path
) -> None:
    from playwright.sync_api import expect

    # running until cancelled below: the checks may outlast a short run on a busy machine
    run = runner.submit("train", {"epochs": 1, "steps": 3000, "step_time": 0.2})
    dark = open_dashboard(browser, server.url + "&theme=dark")
    try:
        expect(dark.locator(f".nbr-run-{run.id} .nbr-progress")).to_contain_text("%")
        select_tab(dark, "History")
        expect(dark.locator(".nbr-hrow").first).to_be_visible()
        assert dark.evaluate("getComputedStyle(document.body).backgroundColor") != (
            "rgb(255, 255, 255)"
        )
        ratios = contrast_ratios(
            dark,
            {
                ".nbr-launcher .nbr-field .widget-label": TEXT_CONTRAST,
                ".nbr-launcher h3": TEXT_CONTRAST,
                f".nbr-run-{run.id} b": TEXT_CONTRAST,
                ".nbr-active-heading h3": TEXT_CONTRAST,
                ".nbr-counts .nbr-chips": TEXT_CONTRAST,
                ".nbr-gauge b": TEXT_CONTRAST,
                ".nbr-chart b": TEXT_CONTRAST,
                ".nbr-htable td.nbr-c-module": TEXT_CONTRAST,
                ".nbr-page-label": TEXT_CONTRAST,
                ".nbr-gauge .nbr-muted": MUTED_CONTRAST,
            },
        )
        dark.screenshot(path=str(shots / "dashboard-dark.png"), full_page=True)
    finally:
        dark.close()
        run.cancel()
    too_low = {selector: ratio for selector, (ratio, wanted) in ratios.items() if ratio < wanted}
    assert not too_low, f"unreadable in the dark theme: {too_low}"


def test_a_dead_kernel_leaves_a_clear_message_not_dead_widgets(
    browser: Any, server: Server
) -> None:
    from playwright.sync_api import expect

    before = {k.pid for k in server.kernels()}
    doomed = open_dashboard(browser, server.url)
    try:
        (kernel,) = [k for k in server.kernels() if k.pid not in before]
        kernel.send_signal(signal.SIGKILL)
        app = doomed.locator(".nbr-app")
        expect(app).to_have_class(re.compile(r"\bjupyter-widgets-disconnected\b"))
        expect(doomed.locator(".nbr-body")).to_be_hidden()
        message = app.evaluate("e => getComputedStyle(e, '::after').content")
        assert "kernel is gone: re-run the cell" in message
    finally:
        doomed.close()


# -- nothing cut, nothing wrong: light and dark, 1280 and 1024 px -------------------------------
NARROW = {"width": 1024, "height": 768}
LONG = "x" * 150
_CARD_FIT_JS = """
(selector) => {
  const card = document.querySelector(selector);
  const box = card.getBoundingClientRect();
  const within = (e) => { const b = e.getBoundingClientRect();
    return b.width > 0 && b.left >= box.left - 1 && b.right <= box.right + 1; };
  const cut = (s) => { const e = card.querySelector(s);
    return !!e && within(e) && getComputedStyle(e).textOverflow === 'ellipsis'
      && e.scrollWidth > e.clientWidth; };
  return {
    body: within(card.querySelector('.widget-html-content')),
    meta: [...card.querySelectorAll('.nbr-meta span')].every(within),
    label: within(card.querySelector('.nbr-progress-label')),
    params: cut('.nbr-params'),
    lastline: cut('.nbr-lastline'),
  };
}
"""
_CELLS_JS = """
() => [...document.querySelectorAll('.nbr-htable th, .nbr-htable td.nbr-c-id,'
    + ' .nbr-htable td.nbr-c-exit, .nbr-htable td.nbr-c-submitted')]
  .filter((c) => c.scrollWidth > c.clientWidth).map((c) => c.textContent)
  .concat([...document.querySelectorAll('.nbr-htable .nbr-badge')]
    .filter((b) => { const o = b.closest('td').getBoundingClientRect();
      const i = b.getBoundingClientRect(); return i.right > o.right + 0.5
        || b.scrollWidth > b.clientWidth; })
    .map((b) => 'badge ' + b.textContent))
"""


def test_cards_are_whole_and_show_the_runs_progress(
    browser: Any, server: Server, runner: Runner
) -> None:
    """A card shows its progress %, its ETA and every figure; long params and the last line
    end in "…" inside the card. Nested bars give the run's percent, not the epoch's."""
    from playwright.sync_api import expect

    long = runner.submit("count", {"n": 3000, "delay": 0.1, "label": LONG})
    train = runner.submit("train", {"epochs": 3, "steps": 300, "step_time": 0.1})
    dark = open_dashboard(browser, server.url + "&theme=dark")
    try:
        for shown in (dark, open_dashboard(browser, server.url)):
            for size in (VIEWPORT, NARROW):
                shown.set_viewport_size(size)
                label = shown.locator(f".nbr-run-{long.id} .nbr-progress-label")
                expect(label).to_contain_text("ETA")
                fit = shown.evaluate(_CARD_FIT_JS, f".nbr-run-{long.id}")
                assert all(fit.values()), (size, fit)
            card = shown.locator(f".nbr-run-{train.id}")
            expect(card.locator(".nbr-lastline")).to_contain_text("epoch 1/3")
            expect(card.locator(".nbr-progress-label")).to_contain_text("%")
            seen = card.inner_text()  # one update carries the line and the percent
            epoch = int(re.findall(r"epoch (\d)/3", seen)[-1])
            percent = int(
                re.findall(r"(\d+)%", card.locator(".nbr-progress-label").inner_text())[0]
            )
            assert percent <= 34 * epoch, seen
            shown.close()
    finally:
        long.cancel()
        train.cancel()


def test_toasts_float_and_text_is_readable_light_and_dark(
    browser: Any, server: Server, runner: Runner
) -> None:
    """Toasts cover a corner and move nothing; white on status colours, dimmed text on an
    ended card and the summary all reach 4.5:1, in the light and the dark theme."""
    from playwright.sync_api import expect

    for record in runner.store.active():  # only this test's runs on the page (no folding)
        with contextlib.suppress(InvalidTransition):  # it may end on its own meanwhile
            runner.cancel(record.id)
        runner.wait(record.id, timeout=60)
    for theme in ("", "&theme=dark"):  # one page at a time: each sees its own runs end
        shown = open_dashboard(browser, server.url + theme)
        try:
            box = shown.locator("button.nbr-run-button").bounding_box()
            runs = [
                runner.submit("count", {"n": 1, "delay": 0, "label": f"t{i}"}) for i in range(4)
            ]
            for run in runs:
                run.wait(timeout=60)
            expect(shown.locator(".nbr-toast")).to_have_count(4)
            expect(shown.locator(f".nbr-run-{runs[-1].id} .nbr-badge")).to_have_text("succeeded")
            ratios = contrast_ratios(
                shown,
                {
                    ".nbr-toast-succeeded .widget-html-content": TEXT_CONTRAST,
                    f".nbr-run-{runs[-1].id} .nbr-status-succeeded": TEXT_CONTRAST,
                    f".nbr-run-{runs[-1].id} .nbr-meta": TEXT_CONTRAST,
                    f".nbr-run-{runs[-1].id} .nbr-muted": TEXT_CONTRAST,
                    ".nbr-counts .nbr-chips": TEXT_CONTRAST,
                },
            )
            assert shown.locator("button.nbr-run-button").bounding_box() == box
            overlay = shown.locator(".nbr-overlay")
            assert overlay.evaluate("e => getComputedStyle(e).position") == "fixed"
            expect(shown.locator(".nbr-counts")).not_to_contain_text("no runs")
            too_low = {s: r for s, (r, wanted) in ratios.items() if r < wanted}
            assert not too_low, (theme, too_low)
        finally:
            shown.close()


def buttons_beside_rows(layout: dict[str, Any]) -> dict[str, Any] | None:
    """The layout, if each row's buttons sit beside it; else None."""
    rows, centres = layout["rows"], layout["actionCentres"]
    beside = len(rows) == len(centres) and all(
        top <= centre <= bottom for (top, bottom), centre in zip(rows, centres, strict=True)
    )
    return layout if beside else None


def settled_history_layout(page: Any, shots: Path, timeout: float = 60.0) -> dict[str, Any]:
    """History's layout once each row's buttons sit beside it; else a failure that shows
    where the rows and the buttons were last seen."""
    seen: list[dict[str, Any]] = []

    def settled() -> dict[str, Any] | None:
        seen[:] = [history_layout(page)]
        return buttons_beside_rows(seen[0])

    try:
        return wait_until(settled, timeout=timeout, what="each row's buttons beside it")
    except AssertionError as failed:
        rows, centres, strangers = (seen[0][k] for k in ("rows", "actionCentres", "strangers"))
        shot = shots / "history-unsettled.png"
        page.screenshot(path=str(shot), full_page=True)
        raise AssertionError(
            f"{failed}; rows (top, bottom): {rows}; buttons: {centres}; the button column's "
            f"other children (class, height, text): {strangers}; the page: {shot}"
        ) from None


def test_history_at_1024_by_768_cuts_no_id_header_or_badge(
    browser: Any, server: Server, runner: Runner, shots: Path
) -> None:
    from playwright.sync_api import expect

    # the newest row a succeeded one, whichever tests ran before (a cancelled run's is shorter)
    runner.submit("labelled").wait(timeout=60)
    for theme in ("", "&theme=dark"):
        shown = browser.new_page(viewport=NARROW)
        try:
            shown.goto(server.url + theme)
            shown.wait_for_selector(READY, timeout=120_000)
            select_tab(shown, "History")
            expect(shown.locator(".nbr-hrow")).to_have_count(25)
            expect(shown.locator(".nbr-hrow").first).to_contain_text("succeeded")
            assert shown.evaluate(_CELLS_JS) == []
            # the table and its buttons are two widgets: a reload (a run of another test
            # ended) moves one a message before the other, so the page is measured settled
            layout = settled_history_layout(shown, shots)
            assert layout["scrollers"] == [] and not layout["truncatedButtons"]
            assert error_boxes(shown) == []
        finally:
            shown.close()


def test_closing_a_log_tab_keeps_the_others_titles_and_the_selection(
    page: Any, runner: Runner
) -> None:
    from playwright.sync_api import expect

    runs = [runner.submit("count", {"n": 3000, "delay": 0.2, "label": f"tab{i}"}) for i in range(3)]
    try:
        for run in runs:
            page.click(f".nbr-run-{run.id} .nbr-view")
            page.wait_for_selector(f".nbr-log-{run.id}")
        tabs = page.locator(".nbr-tabs .lm-TabBar-tab")
        current = page.locator(".nbr-tabs .lm-TabBar-tab.lm-mod-current")
        first, second, third = (f"#{run.id} count" for run in runs)
        titles = [t.strip() for t in tabs.all_inner_texts()]
        select_tab(page, first)
        page.locator(".nbr-close-tab >> visible=true").click()
        titles.remove(first)
        expect(tabs).to_have_text(titles)  # none blank, none shifted
        expect(current).to_have_count(1)
        expect(current).to_have_text(titles[titles.index(second) - 1])  # its left neighbour
        select_tab(page, third)
        page.locator(".nbr-close-tab >> visible=true").click()  # the last one
        titles.remove(third)
        expect(tabs).to_have_text(titles)
        expect(current).to_have_text(second)
        page.locator(".nbr-close-tab >> visible=true").click()
    finally:
        for run in runs:
            run.cancel()


def test_a_refused_priority_or_copies_is_said_in_the_error_colour_and_nothing_runs(
    page: Any, runner: Runner
) -> None:
    from playwright.sync_api import expect

    page.set_viewport_size({"width": 1280, "height": 900})
    launcher = page.locator(".nbr-launcher")
    launcher.get_by_label("Module").select_option("train")
    page.wait_for_selector(".nbr-form-train", state="attached")
    before = runner.count()
    try:
        for label, typed in (("Priority", "2.7"), ("Copies", "1000")):
            launcher.get_by_label(label, exact=True).fill(typed)
            launcher.get_by_label(label, exact=True).press("Tab")
        steps = launcher.get_by_label("steps", exact=True)
        steps.fill("")
        steps.press("Tab")
        errors = launcher.locator(".nbr-error .widget-html-content, .nbr-error")
        expect(launcher.locator(".nbr-invalid")).to_have_count(3)
        expect(launcher).to_contain_text("got '2.7'")
        expect(launcher).to_contain_text("steps is empty")
        body = launcher.locator("h3").evaluate("e => getComputedStyle(e).color")
        colours = {
            e.evaluate("e => getComputedStyle(e).color") for e in errors.all() if e.is_visible()
        }
        assert colours and body not in colours, (body, colours)
        page.locator("button.nbr-run-button").scroll_into_view_if_needed()
        page.click("button.nbr-run-button")
        message = page.locator(".nbr-launch-message")
        expect(message).to_contain_text("nothing was submitted")
        box = message.bounding_box()
        assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 900, box
        assert runner.count() == before
    finally:
        for label, value in (("Priority", "0"), ("Copies", "1")):
            launcher.get_by_label(label, exact=True).fill(value)
            launcher.get_by_label(label, exact=True).press("Tab")
        launcher.get_by_label("Module").select_option("count")
        page.set_viewport_size(VIEWPORT)


# -- in a real JupyterLab, dark theme ------------------------------------------------------------
THREADS = "import threading\nsum(t.name == 'nbrunner-dashboard' for t in threading.enumerate())"


@pytest.fixture(scope="module")
def lab(browser: Any, home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The dashboard in a JupyterLab notebook cell, JupyterLab's dark theme on."""
    cells = [f"from nbrunner import Runner\nRunner({str(home)!r}).dashboard()", THREADS]
    with jupyterlab_server(tmp_path_factory.mktemp("lab"), cells) as url:
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url)
        run_cell(page, 0)
        page.wait_for_selector(READY, timeout=120_000)
        yield page
        page.close()


def test_jupyterlab_dark_cell_is_readable(lab: Any, runner: Runner) -> None:
    from playwright.sync_api import expect

    run = runner.submit("sleep", {"n": 60})
    try:
        expect(lab.locator(f".nbr-run-{run.id} .nbr-badge")).to_have_text("running")
        ratios = contrast_ratios(
            lab,
            {
                ".nbr-launcher .nbr-field .widget-label": TEXT_CONTRAST,
                ".nbr-launcher h3": TEXT_CONTRAST,
                f".nbr-run-{run.id} b": TEXT_CONTRAST,
                ".nbr-counts .nbr-chips": TEXT_CONTRAST,
                ".nbr-gauge b": TEXT_CONTRAST,
                ".nbr-htable td.nbr-c-module": TEXT_CONTRAST,
                ".nbr-muted": MUTED_CONTRAST,
            },
        )
    finally:
        run.cancel()
    assert_whole(lab.locator(f".nbr-toast-cancelled:has-text('#{run.id}') .nbr-dismiss"), "×")
    assert lab.evaluate("document.body.dataset.jpThemeLight") == "false"
    too_low = {selector: ratio for selector, (ratio, wanted) in ratios.items() if ratio < wanted}
    assert not too_low, f"unreadable in JupyterLab's dark theme: {too_low}"


def test_jupyterlab_history_keeps_badges_and_buttons_on_their_rows(lab: Any) -> None:
    """In a notebook cell (~1090 px wide, JupyterLab's own table styles around it)."""
    from playwright.sync_api import expect

    select_tab(lab, "History")
    expect(lab.locator(".nbr-hrow")).to_have_count(25)
    assert lab.evaluate(_CELLS_JS) == []
    layout = history_layout(lab)
    assert layout["tableRight"] <= layout["buttonsLeft"], "buttons cover no cell"
    for (top, bottom), centre in zip(layout["rows"], layout["actionCentres"], strict=True):
        assert top <= centre <= bottom, "each row's buttons sit beside it"


def test_rerunning_the_cell_leaves_one_refresh_thread(lab: Any) -> None:
    from playwright.sync_api import expect

    for _ in range(2):
        run_cell(lab, 0)
        expect(lab.locator(READY)).to_have_count(1)
    run_cell(lab, 1)
    count = lab.locator(".jp-Notebook .jp-Cell").nth(1).locator(".jp-OutputArea-output")
    expect(count).to_have_text("1")


def test_a_kernel_restart_says_re_run_the_cell(lab: Any) -> None:
    from playwright.sync_api import expect

    restart_kernel(lab)
    app = lab.locator(".nbr-app")
    expect(app).to_have_class(re.compile(r"\bjupyter-widgets-disconnected\b"))
    expect(lab.locator(".nbr-body")).to_be_hidden()
    message = app.evaluate("e => getComputedStyle(e, '::after').content")
    assert "kernel is gone: re-run the cell" in message


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)]
)
def test_a_missing_browser_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    import helpers.browser

    monkeypatch.setattr(helpers.browser, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="apt-get install chromium"):
        require_browser()
