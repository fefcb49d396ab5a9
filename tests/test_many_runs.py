"""Working with many runs: flags a script declared, groups everywhere, readable params,
restart with changes, priorities, and logs as a terminal shows them; CLI and API."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers.cli import cli, cli_json

from nbrunner import Runner
from nbrunner.errors import InvalidParameter, InvalidTransition

# A script written the way scikit-learn examples are: argparse options with dashes.
SK_SCRIPT = """\
import argparse
parser = argparse.ArgumentParser()
parser.add_argument("--n-estimators", type=int, required=True)
parser.add_argument("--learning-rate", type=float, default=0.1)
parser.add_argument("--depth", type=int, default=3)
parser.add_argument("--no-warm-start", dest="warm_start", action="store_false")
args = parser.parse_args()
print(args.n_estimators, args.learning_rate, args.depth, args.warm_start)
"""
BARS = "import sys; sys.stdout.write('start\\n 10%\\r 50%\\r100%\\ndone\\n')"
MODULES = f"""\
[modules.sk]
script = "sk.py"
flags = "dashes"
[modules.sk.params]
n_estimators = {{ type = "int", default = 10, help = "trees" }}
learning_rate = {{ type = "float", default = 0.1 }}
max_depth = {{ type = "int", default = 3, flag = "--depth" }}
warm_start = {{ type = "bool", default = true }}

[modules.echo]
command = [{json.dumps(sys.executable)}, "-c", "import sys; print(*sys.argv[1:])"]
[modules.echo.params]
hidden = {{ type = "int", default = 64 }}
lr = {{ type = "float", default = 0.001 }}
note = {{ type = "str", default = "a fairly long note that will not fit a narrow terminal" }}

[modules.bars]
command = [{json.dumps(sys.executable)}, "-c", {json.dumps(BARS)}]

[modules.fails]
command = [{json.dumps(sys.executable)}, "-c", "raise SystemExit(3)"]
"""


@pytest.fixture
def home(home: Path) -> Path:
    """A home whose modules are the ones above (its modules.toml, as a user would edit)."""
    (home / "sk.py").write_text(SK_SCRIPT)
    (home / "modules.toml").write_text(MODULES)
    return home


def submit(home: Path, *args: str) -> int:
    return int(cli(home, "run", *args).stdout)


def test_names_become_the_flags_an_argparse_script_declared(home: Path) -> None:
    run_id = submit(home, "sk", "-p", "n_estimators=5", "-p", "max_depth=7", "-p", "warm_start=no")
    assert cli(home, "wait", str(run_id)).returncode == 0
    assert cli(home, "logs", str(run_id)).stdout == "5 0.1 7 False\n"
    with Runner(home, start=False) as runner:
        spec = runner.modules()["sk"]
        assert spec.argv(spec.validate_params({"warm_start": False}))[2:] == [
            "--n-estimators",
            "10",
            "--learning-rate",
            "0.1",
            "--depth",
            "3",
            "--no-warm-start",
        ]
    help_text = cli(home, "run", "sk", "--help").stdout
    assert "-p max_depth=" in help_text and "(passed as --depth)" in help_text


def test_groups_filter_ps_history_cancel_and_the_api(home: Path) -> None:
    cli(home, "config", "paused", "true")
    sweep = [submit(home, "echo", "-p", f"hidden={h}", "--group", "sweep1") for h in (64, 128)]
    other = submit(home, "echo", "--group", "other")
    assert [r["id"] for r in cli_json(home, "ps", "--group", "sweep1")] == sweep
    assert [r["id"] for r in cli_json(home, "history", "--group", "other")] == [other]
    assert [r["id"] for r in cli_json(home, "history", "--text", "sweep1")] == sweep[::-1]
    with Runner(home, start=False) as runner:
        assert list(runner.active(group="sweep1")["id"]) == sweep
        assert list(runner.history(group="other")["id"]) == [other]
        assert runner.count(group="sweep1") == 2
    cancelled = cli(home, "cancel", "--group", "sweep1").stdout
    assert cancelled == "".join(f"run {i} cancelled\n" for i in sweep)
    assert [r["id"] for r in cli_json(home, "ps")] == [other]
    refused = cli(home, "cancel", "--group", "sweep1", check=False)
    assert refused.returncode == 2
    assert refused.stderr == (
        "nbrunner: error: group 'sweep1' has no active runs; nothing to cancel\n"
    )


def test_wait_takes_many_ids_and_a_group_one_line_each(home: Path) -> None:
    ok = submit(home, "echo", "--group", "g")
    failing = submit(home, "fails", "--group", "g")
    result = cli(home, "wait", str(ok), str(failing), check=False)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"run {ok} succeeded (exit code 0)",
        f"run {failing} failed (exit code 3): exited with code 3",
    ]
    by_group = cli(home, "wait", "--group", "g", "--json", check=False)
    assert by_group.returncode == 1
    assert [r["status"] for r in json.loads(by_group.stdout)] == ["succeeded", "failed"]
    assert cli(home, "wait", str(ok)).returncode == 0
    assert cli(home, "wait", "--group", "nosuch", check=False).returncode == 2


def test_history_text_finds_params_as_they_are_shown(home: Path) -> None:
    cli(home, "config", "paused", "true")
    small, big = (submit(home, "echo", "-p", f"hidden={h}") for h in (64, 256))
    assert [r["id"] for r in cli_json(home, "history", "--text", "hidden=256")] == [big]
    assert [r["id"] for r in cli_json(home, "history", "--text", "lr=0.001")] == [big, small]
    with Runner(home, start=False) as runner:
        assert list(runner.history(text="hidden=64")["id"]) == [small]


def test_the_params_column_fits_the_terminal_and_can_show_only_what_differs(
    home: Path,
) -> None:
    cli(home, "config", "paused", "true")
    for hidden in (64, 128):
        submit(home, "echo", "-p", f"hidden={hidden}")
    wide = cli(home, "history", env={"COLUMNS": "250"}).stdout.splitlines()
    assert wide[1].endswith("note=a fairly long note that will not fit a narrow terminal")
    narrow = cli(home, "history", env={"COLUMNS": "90"}).stdout.splitlines()
    assert all(len(line) <= 90 for line in narrow)
    assert narrow[1].endswith("…")
    differing = cli(home, "history", "--diff", env={"COLUMNS": "90"}).stdout.splitlines()
    assert [line.split()[-1] for line in differing] == ["PARAMS", "hidden=128", "hidden=64"]


def test_ps_shows_priority_and_place_and_priority_can_change(home: Path) -> None:
    cli(home, "config", "paused", "true")
    first, second = submit(home, "echo"), submit(home, "echo")
    assert cli(home, "priority", str(second), "5").stdout == (
        f"run {second} has priority 5 (place 1 in the queue)\n"
    )
    header, *rows = cli(home, "ps").stdout.splitlines()
    assert header.split()[6:8] == ["PRI", "QUEUE"]
    assert [row.split()[:1] + row.split()[7:9] for row in rows] == [
        [str(first), "0", "2"],
        [str(second), "5", "1"],
    ]
    with Runner(home, start=False) as runner:
        assert runner.set_priority(first, 9).priority == 9
        runner.cancel(first)
        with pytest.raises(InvalidTransition, match="only a queued run's priority can change"):
            runner.set_priority(first, 1)
        with pytest.raises(InvalidParameter, match="priority must be a whole number"):
            runner.set_priority(second, 10**20)
    refused = cli(home, "priority", str(first), "1", check=False)
    assert refused.returncode == 2 and "is cancelled" in refused.stderr


def test_logs_collapse_progress_redraws_and_raw_keeps_the_bytes(home: Path) -> None:
    run_id = str(submit(home, "bars", "--wait"))
    assert cli(home, "logs", run_id).stdout == "start\n100%\ndone\n"
    assert cli(home, "logs", run_id, "--tail", "2").stdout == "100%\ndone\n"
    raw = cli(home, "logs", run_id, "--raw")
    assert raw.stdout == "start\n 10%\n 50%\n100%\ndone\n"  # text mode reads \r as \n
    with Runner(home, start=False) as runner:
        assert runner.logs(int(run_id), raw=True).count("\r") == 2


def test_restart_with_changed_params_keeps_the_lineage(home: Path) -> None:
    cli(home, "config", "paused", "true")
    old = submit(home, "echo", "-p", "hidden=64")
    new = int(cli(home, "restart", str(old), "-p", "lr=3e-3", "--priority", "2").stdout)
    record = cli_json(home, "show", str(new))
    assert record["restart_of"] == old and record["priority"] == 2
    assert record["params"]["lr"] == 0.003 and record["params"]["hidden"] == 64
    assert record["argv"][-6:-2] == ["--hidden", "64", "--lr", "0.003"]
    refused = cli(home, "restart", str(old), "-p", "lr=fast", check=False)
    assert refused.returncode == 2
    assert "parameter 'lr' of module 'echo' must be a float, got 'fast'" in refused.stderr
    with Runner(home, start=False) as runner:
        again = runner.get(new).restart({"hidden": 512})
        assert again.record.restart_of == new
        assert again.record.params == {**record["params"], "hidden": 512}
        assert runner.count() == 3  # the refused restart queued nothing
