"""Every command line of the README's terminal section, run as written against a new home, in
order: an example that no longer works fails here, not in a user's terminal."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import stop_everything
from helpers.browser import free_port, stop_server
from helpers.cli import cli

from nbrunner import Runner

README = Path(__file__).parents[1] / "README.md"
# Verbs that serve until stopped, and what they print once they serve.
SERVING = {"worker": "Ctrl-C to stop", "dashboard": "http://"}
SERVE_TIMEOUT_S = 120.0


def terminal_commands(text: str) -> list[list[str]]:
    """The words of each command in the first code block after "## From a terminal"; a line
    may hold several, joined by " · ", and end with a # comment."""
    block = text.split("## From a terminal\n", 1)[1].split("```\n", 2)[1]
    commands: list[list[str]] = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("·") if "·" in words else len(words)
            commands.append(words[:cut])
            words = words[cut + 1 :]
    return commands


def test_the_terminal_commands_are_read_from_the_readme() -> None:
    text = (
        "## From a terminal\n\n```\nnbrunner ps · nbrunner show 1  # two\nnbrunner x 'a b'\n```\n"
    )
    assert terminal_commands(text) == [
        ["nbrunner", "ps"],
        ["nbrunner", "show", "1"],
        ["nbrunner", "x", "a b"],
    ]


def test_every_terminal_example_of_the_readme_runs_in_a_new_home(
    home: Path, tmp_path: Path
) -> None:
    commands = terminal_commands(README.read_text(encoding="utf-8"))
    assert len(commands) >= 30 and all(words[0] == "nbrunner" for words in commands)
    try:
        for words in commands:
            if words[1] in SERVING:
                serve(home, words[1:], tmp_path)
                continue
            result = cli(home, *words[1:], check=False, timeout=300)
            assert result.returncode == 0, f"`{shlex.join(words)}` failed:\n{result.stderr}"
    finally:
        with Runner(home, start=False) as runner:
            stop_everything(runner)


def serve(home: Path, args: list[str], tmp_path: Path) -> None:
    """Start a serving verb (on a free port), wait until it says it serves, then stop it."""
    if "--port" in args:
        args[args.index("--port") + 1] = str(free_port())  # 8866 may be taken here
    out_file = tmp_path / f"{args[0]}.out"
    command = [sys.executable, "-m", "nbrunner", *args, "--home", str(home)]
    with open(out_file, "wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + SERVE_TIMEOUT_S
        while SERVING[args[0]] not in out_file.read_text(errors="replace"):
            assert process.poll() is None, f"`nbrunner {shlex.join(args)}` exited:\n" + (
                out_file.read_text(errors="replace")
            )
            assert time.monotonic() < deadline, f"`nbrunner {shlex.join(args)}` never served"
            time.sleep(0.1)
    finally:
        stop_server(process)


def python_block(text: str, holding: str) -> str:
    """The README's first Python code block holding this text."""
    blocks = text.split("```python\n")[1:]
    return next(block.split("```", 1)[0] for block in blocks if holding in block)


def test_the_readme_sweep_example_runs_on_the_demo_modules(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    charts: list[Any] = []
    compare = runner.compare

    def kept(*args: Any, **options: Any) -> Any:
        charts.append(compare(*args, **options))
        return charts[-1]

    monkeypatch.setattr(runner, "compare", kept)
    code = python_block(README.read_text(encoding="utf-8"), "runner.sweep(")
    names: dict[str, Any] = {"runner": runner}
    try:
        exec(compile(code, "README.md", "exec"), names)
    finally:
        for chart in charts:
            chart.close()  # its refresh thread ends with it
    assert len(charts) == 2
    record, value = names["record"], names["value"]
    assert record.module == "train" and 0 < value < 1
