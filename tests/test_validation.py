"""Every bad input is refused where it enters, as one line, and changes nothing.

One table: each case runs through the real CLI (`python -m nbrunner ... --home HOME`, exit
status 2 for bad input, 1 for a store that cannot be read) and, where Python has the same
door, through the API (a specific nbrunner exception with the same one-line message).
"""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nbrunner import Runner
from nbrunner.errors import (
    BadInput,
    CorruptStore,
    InvalidConfig,
    InvalidHome,
    InvalidParameter,
    ModulesFileError,
    NbrunnerError,
    UnknownRun,
)
from nbrunner.store import HistoryFilter, Store

ApiCall = Callable[[Runner], Any]


@dataclass(frozen=True)
class Case:
    """One bad input; {file} and {home} in `message` stand for the paths the case uses."""

    id: str
    message: str
    cli: tuple[str, ...] = ()
    api: ApiCall | None = None
    error: type[NbrunnerError] = BadInput
    modules: str | None = None  # a modules.toml the case runs with
    home: Callable[[Path], Path] | None = None  # makes an unusual home; default: a new one
    exit_code: int = 2


def toml_case(id: str, table: str, message: str) -> Case:
    """A modules.toml holding module m: `nbrunner modules` and `Runner.modules()` refuse it."""
    return Case(
        id,
        "{file}: " + message,
        cli=("modules",),
        api=lambda runner: runner.modules(),
        error=ModulesFileError,
        modules=table,
    )


def with_param(line: str) -> str:
    return f'[modules.m]\ncommand = ["prog"]\n[modules.m.params]\n{line}\n'


def home_is_a_file(tmp: Path) -> Path:
    path = tmp / "not-a-dir"
    path.write_text("a file where the home should be\n")
    return path


def garbage_store(tmp: Path) -> Path:
    home = tmp / "garbage"
    home.mkdir()
    (home / "nbrunner.db").write_bytes(b"this is no database " * 200)
    return home


def truncated_store(tmp: Path) -> Path:
    """A real store with history, cut in half as a full disk or a bad copy would."""
    home = tmp / "truncated"
    store = Store(home)
    rows = [{"module": "m", "params": {"pad": "x" * 200}, "argv": ["true"], "env": {}}]
    store.insert_runs(rows * 500)
    store.close()
    with sqlite3.connect(home / "nbrunner.db") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db = home / "nbrunner.db"
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    return home


CASES = [
    # -- modules.toml: the types of every key, and the files it names ------------------------
    toml_case(
        "param-min-not-a-number",
        with_param('x = { type = "int", min = "zero" }'),
        "parameter 'x' of module 'm': min must be a number like 0, got 'zero'",
    ),
    toml_case(
        "script-not-text",
        "[modules.m]\nscript = 5\n",
        "module 'm': script must be a path like \"train.py\", got 5",
    ),
    toml_case(
        "cwd-not-text",
        '[modules.m]\ncommand = ["prog"]\ncwd = 5\n',
        "module 'm': cwd must be a directory like \".\", got 5",
    ),
    toml_case(
        "group-a-table",
        '[modules.m]\ncommand = ["prog"]\ngroup = { a = 1 }\n',
        "module 'm': group must be a group name like \"gpu\", got {'a': 1}",
    ),
    toml_case(
        "on-done-unclosed-quote",
        '[modules.m]\ncommand = ["prog"]\non_done = "notify-send \'done"\n',
        "module 'm': on_done \"notify-send 'done\" cannot be split into words "
        "(No closing quotation); close the quote, or give a list of strings",
    ),
    toml_case(
        "module-not-a-table",
        "[modules]\nm = 5\n",
        "module 'm' must be a table ([modules.m] with keys like "
        'python_module = "pkg.train"), got 5',
    ),
    toml_case(
        "choices-a-string",
        with_param('x = { type = "choice", choices = "abc" }'),
        "parameter 'x' of module 'm': choices must be a list like [\"small\", \"large\"], "
        "got 'abc'",
    ),
    toml_case(
        "hide-gpus-text",
        '[modules.m]\ncommand = ["prog"]\nhide_gpus = "no"\n',
        "module 'm': hide_gpus must be true or false, got 'no'",
    ),
    toml_case(
        "python-module-not-text",
        "[modules.m]\npython_module = 5\n",
        "module 'm': python_module must be a dotted module name like \"pkg.train\", got 5",
    ),
    toml_case(
        "script-missing",
        '[modules.m]\nscript = "nope.py"\n',
        "module 'm': script '{dir}/nope.py' is not a file; paths are relative to the "
        "modules file (or the working directory for register())",
    ),
    toml_case(
        "python-module-a-file-name",
        '[modules.m]\npython_module = "train.py"\n',
        "module 'm': python_module must be a dotted module name like \"pkg.train\", got 'train.py' "
        '(for a file, use script = "train.py")',
    ),
    toml_case(
        "cwd-missing",
        '[modules.m]\ncommand = ["prog"]\ncwd = "nowhere"\n',
        "module 'm': cwd '{dir}/nowhere' is not a directory",
    ),
    toml_case(
        "timeout-nan",
        '[modules.m]\ncommand = ["prog"]\ntimeout = nan\n',
        "module 'm': timeout must be a positive number of seconds, got nan",
    ),
    toml_case(
        "unbuffered-a-number",
        '[modules.m]\ncommand = ["prog"]\nunbuffered = 1\n',
        "module 'm': unbuffered must be true or false, got 1",
    ),
    toml_case(
        "description-not-text",
        '[modules.m]\ncommand = ["prog"]\ndescription = 5\n',
        "module 'm': description must be text, got 5",
    ),
    toml_case(
        "env-value-a-list",
        '[modules.m]\ncommand = ["prog"]\nenv = { A = [1] }\n',
        "module 'm': env 'A' must be text like \"4\", got [1]",
    ),
    toml_case(
        "env-name-with-equals",
        '[modules.m]\ncommand = ["prog"]\nenv = { "A=B" = "1" }\n',
        "module 'm': env 'A=B': a variable name cannot contain '='",
    ),
    toml_case(
        "command-with-nul",
        '[modules.m]\ncommand = ["prog\\u0000"]\n',
        "module 'm': command must not contain NUL bytes (\\0), got 'prog\\x00'",
    ),
    toml_case(
        "command-with-a-number",
        '[modules.m]\ncommand = ["prog", 5]\n',
        'module \'m\': command must be a list of strings like ["prog", "--flag"], got 5',
    ),
    toml_case(
        "param-min-above-max",
        with_param('x = { type = "int", min = 5, max = 1 }'),
        "parameter 'x' of module 'm': min 5 is above max 1",
    ),
    toml_case(
        "param-min-on-text",
        with_param('x = { type = "str", min = 1 }'),
        "parameter 'x' of module 'm': min only applies to int and float parameters",
    ),
    toml_case(
        "param-choices-on-int",
        with_param('x = { type = "int", choices = [1, 2] }'),
        "parameter 'x' of module 'm': choices only apply to type = \"choice\"",
    ),
    toml_case(
        "param-name-not-a-flag",
        with_param('"two words" = "int"'),
        "parameter 'two words' of module 'm': a name becomes a --flag, so use letters, "
        "digits, _, - or . (starting with a letter or _)",
    ),
    toml_case(
        "param-max-inf",
        with_param('x = { type = "float", max = inf }'),
        "parameter 'x' of module 'm': max must be a number like 0, got inf",
    ),
    toml_case(
        "resources-cpus-nan",
        '[modules.m]\ncommand = ["prog"]\n[modules.m.resources]\ncpus = nan\n',
        "module 'm': cpus must be a number ≥ 0, got nan",
    ),
    toml_case(
        "resources-memory-inf",
        '[modules.m]\ncommand = ["prog"]\n[modules.m.resources]\nmemory = inf\n',
        "module 'm': memory must be a size ≥ 0 like '4GB', got inf",
    ),
    toml_case(
        "flags-style-unknown",
        '[modules.m]\ncommand = ["prog"]\nflags = "kebab"\n',
        'module \'m\': flags must be "as-is" (--n_estimators) or "dashes" (--n-estimators), '
        "got 'kebab'",
    ),
    toml_case(
        "param-flag-not-an-option",
        with_param('x = { type = "int", flag = "n estimators" }'),
        "parameter 'x' of module 'm': flag must be an option like \"--n-estimators\", "
        "got 'n estimators'",
    ),
    toml_case(
        "resources-not-a-table",
        '[modules.m]\ncommand = ["prog"]\nresources = 5\n',
        "module 'm': resources must be a table like { cpus = 2 }, got 5",
    ),
    toml_case(
        "choice-with-nul",
        with_param('x = { type = "choice", choices = ["a\\u0000"] }'),
        "parameter 'x' of module 'm': choices must be strings (without NUL bytes) or numbers, got 'a\\x00'",
    ),
    # a default the parameter's own bounds refuse: refused at load, not at the first run
    toml_case(
        "param-default-below-min",
        with_param('x = { type = "int", default = -5, min = 0 }'),
        "parameter 'x' of module 'm': default must be an int ≥ 0, got -5",
    ),
    toml_case(
        "param-default-above-max",
        with_param('x = { type = "float", default = 2.5, min = 0, max = 1 }'),
        "parameter 'x' of module 'm': default must be a float ≥ 0 and ≤ 1, got 2.5",
    ),
    toml_case(
        "param-default-not-a-choice",
        with_param('x = { type = "choice", choices = ["small", "large"], default = "huge" }'),
        "parameter 'x' of module 'm': default must be one of 'small', 'large', got 'huge'",
    ),
    Case(
        "register-param-default-below-min",
        "parameter 'n' of module 'm': default must be an int ≥ 0, got -5",
        api=lambda r: r.register(
            "m", command=["prog"], params={"n": {"type": "int", "default": -5, "min": 0}}
        ),
        error=InvalidParameter,
    ),
    toml_case(  # one that was already one line: kept as it was
        "unknown-module-key",
        '[modules.m]\ncommand = ["prog"]\nscirpt = "x.py"\n',
        "module 'm' has unknown key 'scirpt'",
    ),
    # -- the command line and run(): numbers SQLite and the supervisor can hold -------------
    Case(
        "priority-past-int64",
        "priority must be a whole number ≤ 1000000000, got 100000000000000000000",
        cli=("run", "count", "--priority", "100000000000000000000"),
        api=lambda r: r.submit("count", priority=10**20),
        error=InvalidParameter,
    ),
    Case(
        "priority-not-whole",
        "priority must be a whole number ≥ -1000000000, got 2.5",
        cli=("run", "count", "--priority", "2.5"),
        api=lambda r: r.submit("count", priority=2.5),
        error=InvalidParameter,
    ),
    Case(
        "show-id-past-int64",
        "unknown run id 99999999999999999999999; `nbrunner history` lists the runs",
        cli=("show", "99999999999999999999999"),
        api=lambda r: r.get(99999999999999999999999),
        error=UnknownRun,
    ),
    Case(
        "after-id-past-int64",
        "unknown run id 99999999999999999999999",
        cli=("run", "count", "--after", "99999999999999999999999"),
        api=lambda r: r.submit("count", after=[99999999999999999999999]),
        error=UnknownRun,
    ),
    Case(
        "home-is-a-file",
        "home {home} cannot be used (Not a directory); give a directory "
        "(a missing one is created) with --home or NBRUNNER_HOME",
        cli=("ps",),
        api=lambda r: r,
        error=InvalidHome,
        home=home_is_a_file,
    ),
    Case(
        "timeout-nan",
        "timeout must be a positive number of seconds, got nan",
        cli=("run", "count", "--timeout", "nan"),
        api=lambda r: r.submit("count", timeout=math.nan),
        error=InvalidParameter,
    ),
    Case(
        "wait-timeout-inf",
        "timeout must be a positive number of seconds, got inf",
        cli=("wait", "1", "--timeout", "inf"),
    ),
    Case(
        "float-param-nan",
        "parameter 'delay' of module 'count' must be a finite float ≥ 0 and ≤ 60, got nan",
        cli=("run", "count", "-p", "delay=nan"),
        api=lambda r: r.submit("count", {"delay": "nan"}),
        error=InvalidParameter,
    ),
    Case(
        "float-param-inf",
        "parameter 'delay' of module 'count' must be a finite float ≥ 0 and ≤ 60, got inf",
        cli=("run", "count", "-p", "delay=inf"),
        api=lambda r: r.submit("count", {"delay": math.inf}),
        error=InvalidParameter,
    ),
    Case(
        "float-param-minus-inf",
        "parameter 'delay' of module 'count' must be a finite float ≥ 0 and ≤ 60, got -inf",
        cli=("run", "count", "-p", "delay=-inf"),
    ),
    Case(
        "param-given-twice",
        "parameter 'n' is given twice (-p n=...); give it once",
        cli=("run", "count", "-p", "n=1", "-p", "n=2"),
    ),
    Case(
        "logs-negative-tail",
        "argument --tail: lines must be a whole number ≥ 0, got -5",
        cli=("logs", "1", "--tail", "-5"),
    ),
    Case(
        "history-limit-past-int64",
        "argument --limit: limit must be a whole number ≤ 9223372036854775807",
        cli=("history", "--limit", "99999999999999999999"),
    ),
    Case(
        "api-logs-negative-tail",
        "tail must be a whole number ≥ 0, got -5",
        api=lambda r: r.logs(1, tail=-5),
    ),
    Case(
        "api-history-limit-past-int64",
        "limit must be a whole number ≤ 9223372036854775807, got 100000000000000000000",
        api=lambda r: r.history(limit=10**20),
    ),
    Case(
        "modules-file-missing",
        "modules file /nonexistent/absent.toml does not exist; give the path of a modules.toml",
        cli=("modules", "--modules", "/nonexistent/absent.toml"),
    ),
    Case(
        "dashboard-port-out-of-range",
        "argument --port: port must be a whole number ≤ 65535, got 70000",
        cli=("dashboard", "--port", "70000", "--no-browser"),
    ),
    Case(
        "home-empty",
        "argument --home: --home needs a path, got ''",
        cli=("ps", "--home", ""),  # the test's own --home comes last and would win
    ),
    Case(
        "run-without-module",
        "nbrunner run: error: the following arguments are required: module "
        "(see nbrunner run --help)",
        cli=("run",),
    ),
    # -- settings -------------------------------------------------------------------------
    Case(
        "grace-period-inf",
        "grace_period must be a number of seconds ≥ 0 and ≤ 86400, got 'inf'",
        cli=("config", "grace_period", "inf"),
        api=lambda r: r.config("grace_period", "inf"),
        error=InvalidConfig,
    ),
    Case(
        "grace-period-nan",
        "grace_period must be a number of seconds ≥ 0 and ≤ 86400, got nan",
        api=lambda r: r.config("grace_period", math.nan),
        error=InvalidConfig,
    ),
    Case(
        "grace-period-nan-text",
        "grace_period must be a number of seconds ≥ 0 and ≤ 86400, got 'nan'",
        cli=("config", "grace_period", "nan"),
    ),
    Case(
        "max-concurrent-huge",
        "max_concurrent must be a whole number ≤ 100000, got '100000000000000000000'",
        cli=("config", "max_concurrent", "100000000000000000000"),
        api=lambda r: r.config("max_concurrent", "100000000000000000000"),
        error=InvalidConfig,
    ),
    Case(
        "max-log-size-one-byte",
        "max_log_size must be a size of at least 4KB like 256MB, or 0 for no cap; got '1'",
        cli=("config", "max_log_size", "1"),
        api=lambda r: r.config("max_log_size", "1"),
        error=InvalidConfig,
    ),
    Case(
        "max-log-size-just-under-4kb",
        "max_log_size must be a size of at least 4KB like 256MB, or 0 for no cap; got 3999",
        api=lambda r: r.config("max_log_size", 3999),
        error=InvalidConfig,
    ),
    Case(  # already one line: kept as it was
        "max-concurrent-negative",
        "max_concurrent must be a whole number ≥ 1, got '-1'",
        cli=("config", "max_concurrent", "-1"),
    ),
    # -- the Python API: NUL bytes the OS would refuse later, inside the supervisor -------
    Case(
        "nul-in-str-param",
        "parameter 'label' of module 'count' must be a string without NUL bytes (\\0), "
        "got 'a\\x00b'",
        api=lambda r: r.submit("count", {"label": "a\0b"}),
        error=InvalidParameter,
    ),
    Case(
        "nul-in-env",
        "module 'm': env 'A' must not contain NUL bytes (\\0), got 'x\\x00'",
        api=lambda r: r.register("m", command=["prog"], env={"A": "x\0"}),
        error=ModulesFileError,
    ),
    Case(
        "nul-in-command",
        "module 'm': command must not contain NUL bytes (\\0), got 'pro\\x00g'",
        api=lambda r: r.register("m", command=["pro\0g"]),
        error=ModulesFileError,
    ),
    Case(
        "register-python-module-not-text",
        "module 'm': python_module must be a dotted module name like \"pkg.train\", got 5",
        api=lambda r: r.register("m", python_module=5),
        error=ModulesFileError,
    ),
    Case(
        "register-missing-script",
        "module 'm': script 'no_such_script.py' is not a file",
        api=lambda r: r.register("m", script="no_such_script.py"),
        error=ModulesFileError,
    ),
    Case(
        "submit-params-a-list",
        "params of module 'count' must be a mapping like {'epochs': 5}, got ['n', 1]",
        api=lambda r: r.submit("count", ["n", 1]),
        error=InvalidParameter,
    ),
    Case(
        "submit-group-a-dict",
        "group must be a group name like \"gpu\", got {'a': 1}",
        api=lambda r: r.submit("count", group={"a": 1}),
        error=InvalidParameter,
    ),
    # -- a store that cannot be read: one line, the file, what to do --------------------
    Case(
        "store-not-a-database",
        "the store {home}/nbrunner.db cannot be read (file is not a database); move it "
        "aside (mv {home}/nbrunner.db {home}/nbrunner.db.broken) and nbrunner starts "
        "again with an empty history",
        cli=("ps",),
        api=lambda r: r,
        error=CorruptStore,
        home=garbage_store,
        exit_code=1,
    ),
    Case(
        "store-truncated",
        "the store {home}/nbrunner.db cannot be read (database disk image is malformed); "
        "move it aside",
        cli=("history",),
        api=lambda r: r,
        error=CorruptStore,
        home=truncated_store,
        exit_code=1,
    ),
]


def _setup(case: Case, tmp_path: Path) -> tuple[Path, Path | None]:
    if case.home:
        home = case.home(tmp_path)
    else:
        home = tmp_path / "home"
        Store(home).close()
    modules = None
    if case.modules is not None:
        modules = tmp_path / "modules.toml"
        modules.write_text(case.modules, encoding="utf-8")
    return home, modules


def _expected(case: Case, home: Path, modules: Path | None) -> str:
    places = {"{file}": modules, "{dir}": modules and modules.parent, "{home}": home}
    message = case.message
    for placeholder, path in places.items():
        message = message.replace(placeholder, str(path))
    return message


def _what_it_holds(home: Path) -> object:
    """What a refused input must leave as it was: runs, settings, registrations, logs."""
    if home.is_file():
        return home.read_bytes()
    try:
        store = Store(home)
    except CorruptStore:
        return (home / "nbrunner.db").read_bytes()
    held = (
        store.count_history(HistoryFilter()),
        store.config(),
        store.registered_modules(),
        sorted(p.name for p in store.logs_dir.iterdir()),
    )
    store.close()
    return held


@pytest.mark.parametrize("case", [c for c in CASES if c.cli], ids=lambda c: c.id)
def test_the_cli_refuses_with_one_line(case: Case, tmp_path: Path) -> None:
    home, modules = _setup(case, tmp_path)
    before = _what_it_holds(home)
    extra = ("--modules", str(modules)) if modules else ()
    result = subprocess.run(
        [sys.executable, "-m", "nbrunner", *case.cli, *extra, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == case.exit_code, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert _expected(case, home, modules) in result.stderr
    assert result.stdout == ""
    assert _what_it_holds(home) == before


@pytest.mark.parametrize("case", [c for c in CASES if c.api], ids=lambda c: c.id)
def test_the_api_refuses_with_one_specific_error(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # register() takes the caller's directory as the cwd
    monkeypatch.delenv("NBRUNNER_MODULES", raising=False)
    home, modules = _setup(case, tmp_path)
    before = _what_it_holds(home)
    assert case.api is not None
    with pytest.raises(case.error) as raised:
        case.api(Runner(home, modules, start=False))
    message = str(raised.value)
    assert "\n" not in message
    assert _expected(case, home, modules) in message
    assert _what_it_holds(home) == before


def test_a_value_starting_with_dashes_reaches_an_argparse_child_as_the_value(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    with Runner(home) as runner:
        run = runner.submit("count", {"label": "--n=7", "n": 1, "delay": 0})
        assert run.wait(timeout=60).status.value == "succeeded"
        assert run.logs() == "--n=7 1/1\n"
        assert "--label=--n=7" in runner.store.get(run.id).argv


def test_version_and_help_name_the_module_parameters(tmp_path: Path) -> None:
    def nbrunner(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "nbrunner", *args, "--home", str(tmp_path / "home")],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout

    from nbrunner import __version__

    assert nbrunner("--version").strip() == f"nbrunner {__version__}"
    general = nbrunner("run", "--help")
    assert "KEY=VALUE" in general and "`nbrunner modules` lists them" in general
    train = nbrunner("run", "train", "--help")
    assert "module train: Pretend training loop" in train
    assert "-p epochs=" in train and "an int ≥ 1 and ≤ 100, default 3" in train
    assert "passes over the data" in train
    assert "one of 'small', 'large', default small" in train
