"""Notebook modules, run with real Jupyter kernels through the real supervisor."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import stop_everything
from helpers.notebooks import write_notebook
from helpers.procs import alive, wait_until

from nbrunner import ModulesFileError, Runner, RunStatus
from nbrunner.cli import main as cli
from nbrunner.models import RunRecord
from nbrunner.modules import build_module, load_modules_file
from nbrunner.notebook import argv_for_run, infer_params, notebook_output
from nbrunner.store import Store
from nbrunner.ui.logview import LogTab
from nbrunner.ui.sync import Sync

RUN_TIMEOUT_S = 90.0  # a kernel takes seconds to start on a busy two-core machine


def last_line(text: str) -> str:
    return text.rstrip("\n").rsplit("\n", 1)[-1]


def pid_in(log: str, pattern: str) -> int:
    found = re.search(pattern, log)
    assert found, f"{pattern!r} not in the log:\n{log}"
    return int(found.group(1))


@pytest.fixture
def nb_runner(runner: Runner) -> Iterator[Runner]:
    yield runner
    stop_everything(runner)


# -- without a kernel ---------------------------------------------------------------------------
def test_the_form_is_inferred_from_the_parameters_cell(tmp_path: Path) -> None:
    parameters = "\n".join(
        [
            "epochs = 3  # passes",
            "lr: float = 0.5",
            'name = "run"',
            "amp = False",
            "data = None",  # None: optional
            "size = 2 ** 10",  # an expression: the notebook's own
            "a, b = 1, 2",
            "sizes = [1, 2]",
        ]
    )
    write_notebook(tmp_path / "train.ipynb", "print(epochs)", parameters=parameters)
    (tmp_path / "modules.toml").write_text('[modules.train]\nnotebook = "train.ipynb"\n')
    spec = load_modules_file(tmp_path / "modules.toml")["train"]
    assert {p.name: (p.type, p.default) for p in spec.params} == {
        "epochs": ("int", 3),
        "lr": ("float", 0.5),
        "name": ("str", "run"),
        "amp": ("bool", False),
        "data": ("str", None),
        "sizes": ("json", [1, 2]),
    }
    assert spec.param_map["data"].optional and spec.param_map["epochs"].help == "passes"
    assert spec.notebook == str(tmp_path / "train.ipynb")
    assert spec.validate_params({"epochs": "5"}) == {
        "epochs": 5,
        "lr": 0.5,
        "name": "run",
        "amp": False,
        "data": None,
        "sizes": [1, 2],
    }


def test_inference_skips_what_does_not_parse_as_papermill_does() -> None:
    """papermill's own complex_parameters.ipynb: a broken `= 2` line, an expression, a list
    over lines with comments, annotations as names and as strings."""
    import papermill

    path = Path(papermill.__file__).parent / "tests" / "notebooks" / "complex_parameters.ipynb"
    assert infer_params(path) == {
        "msg": {"type": "str", "optional": True},
        "a": {"type": "float", "default": 2.25, "help": "Variable a"},
        "b": {"type": "json", "default": ["Hello", "World"], "help": "Nice list"},
        "c": {"type": "str", "optional": True},
    }


def test_declared_params_win_and_a_notebook_without_parameters_cell_has_none(
    tmp_path: Path,
) -> None:
    write_notebook(tmp_path / "a.ipynb", "x = 1")
    assert infer_params(tmp_path / "a.ipynb") == {}
    assert infer_params(tmp_path / "missing.ipynb") == {}
    write_notebook(tmp_path / "b.ipynb", "pass", parameters="x = 1\ny = 2")
    declared = {"x": {"type": "int", "default": 7}}
    spec = build_module("b", {"notebook": "b.ipynb", "params": declared}, base_dir=tmp_path)
    assert [p.name for p in spec.params] == ["x"]


def test_notebook_argv_carries_typed_params_as_one_argument(tmp_path: Path) -> None:
    spec = build_module(
        "b", {"notebook": "b.ipynb", "kernel": "python3"}, base_dir=tmp_path, check_files=False
    )
    argv = spec.argv({"x": 5, "s": "a b; rm -rf /"}, python="py")
    assert argv[:4] == ["py", "-m", "nbrunner.notebook", str(tmp_path / "b.ipynb")]
    assert argv[argv.index("--kernel") + 1] == "python3"
    assert json.loads(argv[argv.index("--params-json") + 1]) == {"x": 5, "s": "a b; rm -rf /"}
    log = tmp_path / "logs" / "7.log"
    own = argv_for_run(argv, log)
    assert own is not None and notebook_output(own) == str(tmp_path / "logs" / "7.ipynb")
    assert argv_for_run(own, log) is None  # already its own
    assert argv_for_run(["py", "-m", "pkg.train", "--output", "x"], log) is None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"python_module": "m", "kernel": "python3"}, "kernel names a notebook's Jupyter kernel"),
        ({"notebook": "a.ipynb", "script": "a.py"}, "got script, notebook"),
        ({"notebook": 3}, "notebook must be a path"),
    ],
)
def test_bad_notebook_modules_say_what_to_fix(
    tmp_path: Path, table: dict[str, Any], message: str
) -> None:
    with pytest.raises(ModulesFileError, match=re.escape(message)):
        build_module("nb", table, base_dir=tmp_path)


# -- with real kernels ------------------------------------------------------------------------------
def test_parameters_reach_the_notebook_and_the_executed_notebook_is_kept(
    nb_runner: Runner, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_notebook(
        tmp_path / "explore.ipynb",
        "print(f'got x={x!r} label={label!r} on={on!r}')",
        "x * 2",
        parameters="x = 1\nlabel = 'default'\non = False",
    )
    before = source.read_bytes()
    nb_runner.register("explore", notebook=str(source))
    run = nb_runner.submit("explore", params={"x": 21, "label": 'it\'s "quoted"', "on": True})
    record = run.wait(timeout=RUN_TIMEOUT_S)
    log = run.logs()
    assert record.status is RunStatus.SUCCEEDED, log
    assert "got x=21 label='it\\'s \"quoted\"' on=True" in log
    assert record.params == {"x": 21, "label": 'it\'s "quoted"', "on": True}
    assert source.read_bytes() == before  # the source is never written
    path = Path(nb_runner.store.logs_dir / f"{record.id}.ipynb")
    assert record.notebook_path == str(path) == record.to_dict()["notebook_path"]
    executed = nbformat.read(path, as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "x = 21" in injected[0].source
    assert executed.cells[-1].outputs[0]["data"]["text/plain"] == "42"
    assert last_line(log).startswith("[nbrunner] notebook finished")
    capsys.readouterr()
    assert cli(["--home", str(nb_runner.home), "show", str(record.id), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["notebook_path"] == str(path)


def test_cell_output_reaches_the_log_while_the_notebook_runs(
    nb_runner: Runner, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    source = write_notebook(
        tmp_path / "live.ipynb",
        "print('first cell speaking', end='', flush=True)",
        f"import pathlib, time\nwhile not pathlib.Path({str(gate)!r}).exists():\n"
        "    time.sleep(0.05)\nprint('second cell done')",
    )
    nb_runner.register("live", notebook=str(source))
    run = nb_runner.submit("live")
    wait_until(lambda: "first cell speaking" in run.logs(), timeout=RUN_TIMEOUT_S, what="cell 1")
    assert not run.record.is_done
    assert "second cell done" not in run.logs()
    gate.touch()
    record = run.wait(timeout=RUN_TIMEOUT_S)
    assert record.status is RunStatus.SUCCEEDED
    assert "second cell done" in run.logs()
    assert "first cell speaking\n[nbrunner] cell 2" in run.logs()  # own lines start a line


def test_a_failing_cell_fails_the_run_and_later_cells_do_not_run(
    nb_runner: Runner, tmp_path: Path
) -> None:
    source = write_notebook(
        tmp_path / "fails.ipynb",
        "print('before')",
        "raise ValueError('bad input \\x1b[31mred\\x1b[0m')",
        "print('after the failure')",
    )
    nb_runner.register("fails", notebook=str(source))
    run = nb_runner.submit("fails")
    record = run.wait(timeout=RUN_TIMEOUT_S)
    log = run.logs(raw=True)
    assert record.status is RunStatus.FAILED and record.exit_code == 1
    failed = nbformat.read(source, as_version=4).cells[2].id
    assert last_line(log) == (
        f"[nbrunner] cell 2 (id {failed}) failed: ValueError: bad input \x1b[31mred\x1b[0m"
    )
    assert record.reason == f"cell 2 (id {failed}) failed: ValueError: bad input red"
    assert "Traceback" in log and "after the failure" not in log
    executed = nbformat.read(record.notebook_path or "", as_version=4)
    assert executed.cells[2].outputs[-1]["ename"] == "ValueError"
    assert executed.cells[3].get("outputs") == []


@pytest.mark.parametrize("stop", ["cancel", "timeout"])
def test_cancel_or_timeout_mid_cell_ends_the_kernel_and_what_it_started(
    nb_runner: Runner, tmp_path: Path, stop: str
) -> None:
    source = write_notebook(
        tmp_path / "hangs.ipynb",
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],\n"
        "                         start_new_session=True)\n"  # left the kernel's group
        "print('child-pid', child.pid, flush=True)\n"
        "time.sleep(600)",
    )
    nb_runner.register("hangs", notebook=str(source))
    # The timeout runs from the run's start, kernel start included, and must fall mid-cell:
    # half the budget of a whole notebook run, as a loaded machine starts kernels slowly.
    run = nb_runner.submit("hangs", timeout=RUN_TIMEOUT_S / 2 if stop == "timeout" else None)
    wait_until(lambda: "child-pid" in run.logs(), timeout=RUN_TIMEOUT_S, what="the cell's child")
    log = run.logs()
    kernel, child = (
        pid_in(log, r"kernel python3 started \(pid (\d+)\)"),
        pid_in(log, r"child-pid (\d+)"),
    )
    assert alive(kernel) and alive(child)
    if stop == "cancel":
        run.cancel()
    record = run.wait(timeout=RUN_TIMEOUT_S)
    expected = RunStatus.CANCELLED if stop == "cancel" else RunStatus.TIMED_OUT
    assert record.status is expected
    wait_until(lambda: not alive(kernel) and not alive(child), timeout=10, what="no kernel left")
    assert "stopped by SIGTERM in cell 1" in run.logs()
    assert nbformat.read(record.notebook_path or "", as_version=4).cells[1].outputs


def test_a_memory_limit_covers_the_kernel(nb_runner: Runner, tmp_path: Path) -> None:
    source = write_notebook(
        tmp_path / "greedy.ipynb",
        "import time\nblock = bytearray(600 * 1024 * 1024)\nprint('allocated', flush=True)\n"
        "time.sleep(600)",
    )
    nb_runner.register("greedy", notebook=str(source), resources={"memory": "400MB"})
    record = nb_runner.submit("greedy").wait(timeout=RUN_TIMEOUT_S)
    assert record.status is RunStatus.FAILED
    assert "over its limit" in (record.reason or "")


def test_the_demo_notebook_module_runs_in_a_new_home(nb_runner: Runner) -> None:
    spec = nb_runner.modules()["explore"]
    assert (nb_runner.home / "explore.ipynb").exists()
    assert {p.name for p in spec.params} >= {"n", "delay"}
    run = nb_runner.submit("explore", params={"n": 2, "delay": 0})
    record = run.wait(timeout=RUN_TIMEOUT_S)
    assert record.status is RunStatus.SUCCEEDED, run.logs()
    assert "sample 2/2" in run.logs()


def test_the_log_tab_of_a_notebook_run_links_its_executed_notebook(tmp_path: Path) -> None:
    argv = argv_for_run(
        build_module("nb", {"notebook": "a.ipynb"}, tmp_path, check_files=False).argv({}),
        tmp_path / "3.log",
    )
    record = RunRecord(
        3, "nb", {}, RunStatus.SUCCEEDED, 0.0, str(tmp_path / "3.log"), argv=argv or []
    )
    tab = LogTab(record, Sync(), lambda action: action(), lambda _: None)
    toolbar = tab.widget.children[0].children
    button = next(w for w in toolbar if "nbr-notebook" in getattr(w, "_dom_classes", ()))
    link = toolbar[list(toolbar).index(button) + 1]
    button.click()
    assert "no executed notebook yet" in link.value
    (tmp_path / "3.ipynb").write_text('{"cells": []}')
    button.click()
    encoded = re.search(r"base64,([^\"]+)", link.value)
    assert encoded and base64.b64decode(encoded.group(1)) == b'{"cells": []}'
    assert 'download="run-3.ipynb"' in link.value
    plain = RunRecord(4, "count", {}, RunStatus.SUCCEEDED, 0.0, str(tmp_path / "4.log"))
    assert (
        len(LogTab(plain, Sync(), lambda a: a(), lambda _: None).widget.children[0].children)
        == len(toolbar) - 2
    )


def test_each_run_and_each_restart_gets_its_own_executed_notebook(tmp_path: Path) -> None:
    store = Store(tmp_path / "home")
    argv = build_module("nb", {"notebook": "a.ipynb"}, tmp_path, check_files=False).argv({"x": 1})
    (first,) = store.insert_runs([{"module": "nb", "params": {}, "argv": argv, "env": {}}])
    copied = store.get(first).argv  # what a restart copies
    (other,) = store.insert_runs([{"module": "nb", "params": {}, "argv": copied, "env": {}}])
    assert store.get(first).notebook_path == str(store.logs_dir / f"{first}.ipynb")
    assert store.get(other).notebook_path == str(store.logs_dir / f"{other}.ipynb")
    plain = store.insert_runs([{"module": "c", "params": {}, "argv": ["true"], "env": {}}])[0]
    assert store.get(plain).notebook_path is None
    store.close()


@pytest.mark.parametrize(("code", "status"), [(0, RunStatus.SUCCEEDED), (1, RunStatus.FAILED)])
def test_sys_exit_ends_a_notebook_as_papermill_judges_it(
    nb_runner: Runner, tmp_path: Path, code: int, status: RunStatus
) -> None:
    source = write_notebook(
        tmp_path / "exits.ipynb",
        "print('before')",
        f"import sys; sys.exit({code})",
        "print('after')",
    )
    nb_runner.register("exits", notebook=str(source))
    record = nb_runner.submit("exits").wait(timeout=RUN_TIMEOUT_S)
    log = Path(record.log_path).read_text()
    assert record.status is status, log
    assert "before" in log and "after" not in log
    if code == 0:
        assert re.search(r"cell 2 \(id \w+\) ended the notebook early with sys.exit\(0\)", log)
    else:
        assert re.fullmatch(r"cell 2 \(id \w+\) failed: SystemExit: 1", record.reason or "")


def test_the_kernel_is_private_and_so_is_the_executed_notebook(
    nb_runner: Runner, tmp_path: Path
) -> None:
    source = write_notebook(tmp_path / "quiet.ipynb", "print('hello')")
    (tmp_path / "work").mkdir()
    nb_runner.register("quiet", notebook=str(source), cwd=str(tmp_path / "work"))
    record = nb_runner.submit("quiet").wait(timeout=RUN_TIMEOUT_S)
    log = Path(record.log_path).read_text()
    assert record.status is RunStatus.SUCCEEDED, log
    assert "without encryption" not in log and "hello" in log
    assert stat.S_IMODE(os.stat(record.notebook_path).st_mode) == 0o600
    assert list((tmp_path / "work").iterdir()) == []  # no socket files left in its cwd
