"""The nbrunner command end to end: every verb, --json parsed, exit statuses."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from helpers.cli import cli, cli_json
from helpers.counting import counts_on, last_count
from helpers.procs import wait_until

from nbrunner import Runner, RunStatus
from nbrunner.errors import InvalidParameter
from nbrunner.store import HistoryFilter, Store


def test_modules_lists_the_demo_modules_of_a_new_home(home: Path) -> None:
    names = {m["name"] for m in cli_json(home, "modules")}
    assert {"train", "count", "sleep"} <= names
    assert "count" in cli(home, "modules").stdout


def test_run_wait_logs_show_history_ps(home: Path) -> None:
    run_id = cli(home, "run", "count", "-p", "n=3", "-p", "delay=0", "-p", "label=cli").stdout
    run_id = run_id.strip()
    waited = cli_json(home, "wait", run_id)
    assert waited["status"] == "succeeded" and waited["exit_code"] == 0
    assert cli(home, "logs", run_id).stdout == "cli 1/3\ncli 2/3\ncli 3/3\n"
    assert cli(home, "logs", run_id, "--tail", "1").stdout == "cli 3/3\n"
    shown = cli_json(home, "show", run_id)
    for field in (
        "id",
        "module",
        "params",
        "status",
        "exit_code",
        "reason",
        "pid",
        "priority",
        "submitted_at",
        "started_at",
        "ended_at",
        "duration_s",
        "log_path",
        "restart_of",
        "gpus",
    ):
        assert field in shown
    assert shown["params"] == {"n": 3, "delay": 0.0, "label": "cli"}
    assert shown["submitted_at"].endswith("+00:00")
    history = cli_json(home, "history", "--module", "count", "--status", "succeeded")
    assert [r["id"] for r in history] == [int(run_id)]
    assert cli_json(home, "ps") == []


def test_run_with_wait_exits_with_the_outcome(home: Path) -> None:
    ok = cli(home, "run", "count", "-p", "n=1", "-p", "delay=0", "--wait")
    assert ok.stdout.strip().isdigit() and "succeeded" in ok.stderr
    timed_out = cli(
        home, "run", "count", "-p", "delay=1", "--timeout", "0.3", "--wait", check=False
    )
    assert timed_out.returncode == 1 and "timed_out" in timed_out.stderr
    # a whole number of seconds past what SQLite's integers hold is still a timeout
    patient = cli(home, "run", "count", "-p", "n=1", "--timeout", "9" * 20, "--wait")
    shown = json.loads(cli(home, "show", patient.stdout.strip(), "--json").stdout)
    assert (shown["status"], shown["timeout"]) == ("succeeded", float("9" * 20))


def test_follow_streams_until_the_run_ends(home: Path) -> None:
    run_id = cli(home, "run", "count", "-p", "n=5", "-p", "delay=0.2").stdout.strip()
    follow = cli(home, "logs", run_id, "--follow")
    assert follow.stdout.splitlines() == [f"count {i}/5" for i in range(1, 6)]


def test_cancel_restart_and_ps(home: Path) -> None:
    run_id = cli(home, "run", "count", "-p", "n=100", "-p", "delay=0.1").stdout.strip()
    wait_until(
        lambda: cli_json(home, "ps") and cli_json(home, "ps")[0]["status"] == "running",
        what="running",
    )
    assert "cancel" in cli(home, "cancel", run_id).stdout
    record = json.loads(cli(home, "wait", run_id, "--json", check=False).stdout)
    assert record["status"] == "cancelled"
    new_id = cli(home, "restart", run_id).stdout.strip()
    assert cli_json(home, "show", new_id)["restart_of"] == int(run_id)
    cli(home, "cancel", new_id)


def test_config_reads_and_sets(home: Path) -> None:
    assert cli_json(home, "config")["max_concurrent"] == 10
    assert cli(home, "config", "max_concurrent", "3").stdout.strip() == "3"
    assert cli(home, "config", "max_concurrent").stdout.strip() == "3"
    assert cli_json(home, "config", "paused") == {"paused": False}


def test_worker_keeps_the_queue_moving_headless(home: Path) -> None:
    store = Store(home)
    (run_id,) = store.insert_runs(
        [
            {
                "module": "echo",
                "params": {},
                "env": {},
                "cwd": None,
                "argv": [sys.executable, "-c", "print('from worker')"],
            }
        ]
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "nbrunner", "worker", "--home", str(home)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: store.get(run_id).is_done, timeout=30, what="worker to run it")
    finally:
        worker.terminate()
        worker.wait(timeout=10)
    assert store.get(run_id).status.value == "succeeded"
    assert Path(store.get(run_id).log_path).read_text() == "from worker\n"


BAD_INPUTS = [
    (["run", "nosuch"], "unknown module 'nosuch'; known modules: count, explore, sleep, train"),
    (["run", "count", "-p", "bogus=1"], "unknown parameter 'bogus' for module 'count'"),
    (
        ["run", "count", "-p", "n=ten"],
        "parameter 'n' of module 'count' must be an int ≥ 0 and ≤ 1000000, got 'ten'",
    ),
    (["run", "count", "-p", "n=-1"], "must be an int ≥ 0 and ≤ 1000000, got -1"),
    (["run", "count", "-p", "n"], "parameters are given as -p KEY=VALUE, got 'n'"),
    (["run", "count", "--timeout", "-5"], "timeout must be a positive number of seconds"),
    (["show", "4242"], "unknown run id 4242"),
    (["logs", "abc"], "run ids are whole numbers like 42, got 'abc'"),
    (["cancel", "4242"], "unknown run id 4242"),
    (["config", "max_concurrent", "-1"], "max_concurrent must be a whole number ≥ 1, got '-1'"),
    (["config", "nonsense", "1"], "unknown config key 'nonsense'"),
    (["history", "--limit", "-1"], "limit must be a whole number ≥ 0, got -1"),
    (["history", "--status", "finished"], "unknown status 'finished'"),
    (
        ["sweep", "count", "-p", "n=1,2", "--random", "0"],
        "argument --random: the number of points must be a whole number ≥ 1, got 0",
    ),
    # bytes that are not UTF-8, as a terminal passes them
    (["history", "--text", "caf\udce9"], "search text must be UTF-8, got b'caf\\xe9'"),
    (["ps", "--group", "\udcff"], "group must be UTF-8, got b'\\xff'"),
    (["run", "count", "--group", "\udcff"], "group must be UTF-8, got b'\\xff'"),
]


def test_cancel_all_with_nothing_active_is_no_error(home: Path) -> None:
    quiet = cli(home, "cancel", "--all")
    assert (quiet.stdout, quiet.stderr) == ("", "no active runs; nothing to cancel\n")
    assert json.loads(cli(home, "cancel", "--all", "--json").stdout) == {
        "cancelled": [],
        "refused": [],
    }


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS)
def test_bad_input_is_one_clear_line_exit_two_and_nothing_queued(
    home: Path, args: list[str], message: str
) -> None:
    result = cli(home, *args, check=False)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert Store(home).count_history(HistoryFilter()) == 0


def test_a_broken_modules_file_is_reported_with_its_path(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[modules.x\n")
    result = cli(home, "modules", "--modules", str(bad), check=False)
    assert result.returncode == 2
    assert f"modules file {bad} is not valid TOML" in result.stderr


def test_history_pages_newest_first(home: Path) -> None:
    store = Store(home)
    store.insert_runs(
        [{"module": f"m{i % 2}", "params": {"i": i}, "argv": ["true"], "env": {}} for i in range(7)]
    )
    page = cli_json(home, "history", "--limit", "3", "--offset", "2")
    assert [r["id"] for r in page] == [5, 4, 3]
    assert [r["id"] for r in cli_json(home, "history", "--module", "m1")] == [6, 4, 2]
    assert [r["id"] for r in cli_json(home, "history", "--text", '"i": 3')] == [4]
    future = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400 * 2))
    assert cli_json(home, "history", "--since", future) == []


def test_cancel_many_reports_which_were_done_and_which_not(home: Path) -> None:
    cli(home, "config", "paused", "true")
    first = cli(home, "run", "count").stdout.strip()
    second = cli(home, "run", "count").stdout.strip()
    result = cli(home, "cancel", first, "4242", second, "--json", check=False)
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert [r["id"] for r in report["cancelled"]] == [int(first), int(second)]
    assert report["refused"] == [
        {"id": "4242", "error": "unknown run id 4242; `nbrunner history` lists the runs"}
    ]
    assert "unknown run id 4242" in result.stderr
    third = cli(home, "run", "count").stdout.strip()
    assert cli(home, "cancel", "--all").stdout == f"run {third} cancelled\n"
    assert cli(home, "cancel", check=False).returncode == 2


def submit(home: Path, *args: str) -> str:
    return cli(home, "run", *args).stdout.strip()


def status_of(home: Path, run_id: str) -> str:
    return cli_json(home, "show", run_id)["status"]


def at(record: dict, field: str) -> datetime:
    return datetime.fromisoformat(record[field])


COUNTING = ("count", "-p", "n=400", "-p", "delay=0.05")  # 20 s at most, if a test fails


def test_pause_and_resume_suspend_and_continue_a_run(home: Path) -> None:
    run_id, witness = submit(home, *COUNTING), submit(home, *COUNTING)
    log, witness_log = (Path(cli_json(home, "show", i)["log_path"]) for i in (run_id, witness))
    wait_until(lambda: last_count(log.read_text()) >= 3, what="counting")
    assert cli(home, "pause", run_id).stdout == f"run {run_id} pausing (its tree is suspended)\n"
    wait_until(lambda: status_of(home, run_id) == "paused", what="paused")
    frozen = last_count(log.read_text())
    counts_on(witness_log.read_text, 10)
    assert last_count(log.read_text()) <= frozen + 1  # at most one line was in flight
    refused = cli(home, "pause", run_id, check=False)
    assert refused.returncode == 2 and "only a running run can be asked to pause" in refused.stderr
    assert cli(home, "resume", run_id).stdout == f"run {run_id} resuming\n"
    wait_until(lambda: status_of(home, run_id) == "running", what="running again")
    wait_until(lambda: last_count(log.read_text()) > frozen + 3, what="counting again")
    cli(home, "cancel", "--all")


def test_priority_and_front_order_the_queue(home: Path) -> None:
    cli(home, "config", "paused", "true")
    cli(home, "config", "max_concurrent", "1")
    ids = [submit(home, "count", "-p", "n=0", "--priority", p) for p in ("3", "0", "5")]
    assert [cli_json(home, "show", i)["priority"] for i in ids] == [3, 0, 5]
    assert cli(home, "front", ids[1]).stdout == f"run {ids[1]} is next in the queue (priority 6)\n"
    cli(home, "config", "paused", "false")
    records = cli_json(home, "wait", *ids)
    assert [r["id"] for r in sorted(records, key=lambda r: at(r, "started_at"))] == [
        int(ids[1]),
        int(ids[2]),
        int(ids[0]),
    ]
    refused = cli(home, "front", ids[0], check=False)
    assert refused.returncode == 2 and "only queued runs can move" in refused.stderr


def test_a_group_keeps_its_limit_and_after_waits_for_success(home: Path) -> None:
    cli(home, "config", "group.solo", "1")
    first, second = (
        submit(home, "count", "-p", "n=4", "-p", "delay=0.1", "--group", "solo") for _ in range(2)
    )
    after_first = submit(home, "count", "-p", "n=1", "-p", "delay=0", "--after", first)
    timed_out = submit(home, *COUNTING, "--timeout", "0.3")
    after_both = submit(home, "count", "-p", "n=1", "--after", first, "--after", timed_out)
    waited = cli(home, "wait", first, second, after_first, after_both, "--json", check=False)
    assert waited.returncode == 1  # one of them was cancelled
    records = {r["id"]: r for r in json.loads(waited.stdout)}
    one, two, three, four = (records[int(i)] for i in (first, second, after_first, after_both))
    assert (one["group"], one["status"], two["status"]) == ("solo", "succeeded", "succeeded")
    assert at(two, "started_at") >= at(one, "ended_at")  # never two of the group at once
    assert three["status"] == "succeeded" and at(three, "started_at") >= at(one, "ended_at")
    assert (four["status"], four["reason"]) == (
        "cancelled",
        f"run {timed_out}, which it depends on, ended timed_out",
    )


ARGV_MODULES = """
[modules.fit]
command = [{python}, "-c", "import sys; print(sys.argv[1:])"]
[modules.fit.params]
depth = {{ type = "int", optional = true, help = "none: unlimited" }}
trees = {{ type = "int", default = 100, optional = true }}
lr = {{ type = "float", default = 0.1 }}
"""


def test_optional_params_take_none_on_the_cli_and_in_python(home: Path, tmp_path: Path) -> None:
    modules = tmp_path / "modules.toml"
    modules.write_text(ARGV_MODULES.format(python=json.dumps(sys.executable)))
    given = ("--modules", str(modules))
    run_id = submit(home, "fit", "-p", "depth=none", "-p", "trees=None", *given)
    assert cli(home, "wait", run_id, *given).returncode == 0
    assert cli(home, "logs", run_id).stdout == "['--lr', '0.1']\n"
    assert cli_json(home, "show", run_id)["params"] == {"depth": None, "trees": None, "lr": 0.1}
    swept = cli_json(home, "sweep", "fit", "-p", "depth=3,none", *given)
    cli(home, "wait", "--sweep", swept["sweep"])
    assert [cli(home, "logs", str(i)).stdout for i in swept["runs"]] == [
        "['--depth', '3', '--trees', '100', '--lr', '0.1']\n",
        "['--trees', '100', '--lr', '0.1']\n",
    ]
    assert "optional" in cli(home, "run", "fit", "--help", *given).stdout
    refused = cli(home, "run", "fit", "-p", "lr=none", *given, check=False)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    with Runner(home, modules) as runner:
        run = runner.submit("fit", {"depth": None, "trees": 7})
        assert run.wait(60).status is RunStatus.SUCCEEDED
        assert run.logs() == "['--trees', '7', '--lr', '0.1']\n"
        with pytest.raises(InvalidParameter, match="'lr' of module 'fit' cannot be None"):
            runner.submit("fit", {"lr": None})


def test_restart_waits_and_a_spaced_param_gets_a_hint(home: Path) -> None:
    first = submit(home, "count", "-p", "n=1", "-p", "delay=0")
    restarted = cli(home, "restart", first, "-p", "n=2", "--wait")
    new_id = restarted.stdout.strip()
    assert restarted.stderr == f"run {new_id} succeeded\n"
    assert cli(home, "logs", new_id).stdout == "count 1/2\ncount 2/2\n"  # ended: all there
    failing = cli(home, "restart", first, "-p", "n=-1", check=False)
    assert failing.returncode == 2
    spaced = cli(home, "run", "count", "-p", "n", "10", check=False)
    assert (spaced.returncode, spaced.stdout) == (2, "")
    assert spaced.stderr == (
        "nbrunner: error: parameters are given as -p KEY=VALUE: write -p n=10\n"
    )


def test_logs_keep_colours_only_when_asked_or_on_a_terminal(home: Path) -> None:
    run_id = submit(home, "train", "-p", "epochs=1", "-p", "steps=2", "-p", "step_time=0")
    cli(home, "wait", run_id)
    piped = cli(home, "logs", run_id).stdout
    assert "\x1b[" not in piped and "epoch 1 done: loss=" in piped
    assert "\x1b[32mepoch 1 done" in cli(home, "logs", run_id, "--color", "always").stdout
    assert "\x1b[" not in cli(home, "logs", run_id, "--color", "never", "--tail", "1").stdout
    assert "\x1b[32m" in cli(home, "logs", run_id, "--raw").stdout  # the bytes as written


def test_service_start_says_the_service_that_runs(home: Path) -> None:
    started = cli(home, "service", "start").stdout
    status = cli_json(home, "service")
    assert status["running"] and started.startswith(f"service pid {status['pid']} on ")
    assert cli(home, "service", "stop").stdout == "stopped\n"
