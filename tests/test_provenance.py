"""Provenance: the code a run ran (git commit, dirty tree, diff), its interpreter and packages,
captured as it starts; with real git work trees and real runs."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.cli import cli, cli_json
from helpers.git import git

from nbrunner import Runner, RunStatus
from nbrunner.provenance import (
    Interpreters,
    code_changes,
    code_path,
    git_state,
    provenance_lines,
)

RUN_TIMEOUT_S = 60.0
TRAIN = 'print("training", __name__)\n'


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git work tree holding a package with a module, and a script, committed."""
    path = tmp_path / "project"
    (path / "pkg").mkdir(parents=True)
    (path / "pkg" / "__init__.py").write_text("")
    (path / "pkg" / "train.py").write_text(TRAIN)
    (path / "script.py").write_text(TRAIN)
    git(path, "init", "-q")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "first")
    return path


def wait_for_provenance(runner: Runner, run_id: int) -> dict[str, Any]:
    """It is written beside the launch, so it may land after the run has ended."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while (found := runner.store.get(run_id).provenance) is None:
        assert time.monotonic() < deadline, f"run {run_id} got no provenance"
        time.sleep(0.05)
    return found


# -- the pieces ----------------------------------------------------------------------------------
def test_git_state_of_a_clean_and_a_dirty_tree(repo: Path, tmp_path: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    clean = git_state(repo / "script.py")
    assert clean["git_commit"] == head and clean["git_dirty"] is False
    assert clean["git_diff_sha256"] is None and clean["git_root"] == str(repo)
    (repo / "pkg" / "train.py").write_text(TRAIN + "print('changed')\n")
    (repo / "notes.txt").write_text("new")
    diff_file = tmp_path / "7.diff"
    dirty = git_state(repo / "pkg", diff_file)
    assert dirty["git_commit"] == head and dirty["git_dirty"] is True
    assert dirty["git_untracked"] == 1
    assert "+print('changed')" in diff_file.read_text()
    assert (
        code_changes(clean, dirty) == "same commit, other uncommitted changes (diff digest differs)"
    )
    assert git_state(tmp_path / "elsewhere.py") == {}  # not in a work tree: nothing claimed


def test_where_the_code_of_each_kind_of_module_is(repo: Path) -> None:
    python, cwd = sys.executable, str(repo)
    assert code_path([python, "-m", "pkg.train"], cwd, {}) == repo / "pkg"
    assert code_path([python, "script.py", "--lr", "1"], cwd, {}) == repo / "script.py"
    notebook = [python, "-m", "nbrunner.notebook", "nb.ipynb", "--output", "x"]
    assert code_path(notebook, cwd, {}) == repo / "nb.ipynb"
    assert code_path(["make", "all"], cwd, {}) is None  # the system's code, not the project's
    assert code_path(["sh", "script.py"], cwd, {}) == repo / "script.py"
    assert code_path([python, "-c", "print(1)"], cwd, {}) is None  # python's own directory
    elsewhere = {"PYTHONPATH": str(repo)}
    assert code_path([python, "-m", "pkg.train"], "/", elsewhere) == repo / "pkg"
    # an installed package: on the interpreter's own path, after the cwd and PYTHONPATH
    assert code_path([python, "-m", "pkg.train"], "/", {}, [str(repo)]) == repo / "pkg"
    shadow = repo / "shadow"
    (shadow / "pkg").mkdir(parents=True)
    (shadow / "pkg" / "__init__.py").write_text("")
    assert code_path([python, "-m", "pkg"], str(shadow), {}, [str(repo)]) == shadow / "pkg"


@pytest.mark.skipif(sys.platform == "win32", reason="a POSIX shell script counts the calls")
def test_packages_are_listed_once_per_interpreter_until_its_path_changes(
    tmp_path: Path,
) -> None:
    calls = tmp_path / "calls"
    python = tmp_path / "python"  # the interpreter, counting how often it is asked
    python.write_text(f'#!/bin/sh\necho x >> "{calls}"\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    extra = tmp_path / "extra"
    extra.mkdir()
    env = {**os.environ, "PYTHONPATH": str(extra)}
    first = Interpreters(tmp_path).facts(str(python), env)
    assert first is not None and first["version"] == sys.version.split()[0]
    assert first["count"] > 0 and len(first["sha256"]) == 64
    assert str(extra) in first["paths"]  # where its modules are found, for their code path
    assert Interpreters(tmp_path).facts(str(python), env) == first  # from the home's cache
    assert calls.read_text().count("x") == 1
    (extra / "newpkg").mkdir()  # an install: a directory on its path changed
    again = Interpreters(tmp_path).facts(str(python), env)
    assert again is not None and again["count"] == first["count"]
    assert calls.read_text().count("x") == 2


# -- real runs -------------------------------------------------------------------------------------
def test_a_run_records_the_commit_and_diff_it_started_with(
    runner: Runner, home: Path, repo: Path
) -> None:
    runner.register("train", python_module="pkg.train", cwd=str(repo))
    (repo / "pkg" / "train.py").write_text(TRAIN + "print('tuned')\n")
    run = runner.submit("train")
    assert run.wait(timeout=RUN_TIMEOUT_S).status is RunStatus.SUCCEEDED
    found = wait_for_provenance(runner, run.id)
    assert found["git_commit"] == git(repo, "rev-parse", "HEAD")
    assert found["git_dirty"] is True and found["code_path"] == str(repo / "pkg")
    assert found["python"] == sys.executable
    assert found["python_version"] == sys.version.split()[0]
    assert "+print('tuned')" in (home / "logs" / f"{run.id}.diff").read_text()
    shown = cli_json(home, "show", str(run.id))["provenance"]
    assert shown["git_commit"] == found["git_commit"] and shown["git_dirty"] is True
    text = cli(home, "show", str(run.id)).stdout
    assert f"provenance      git {found['git_commit'][:12]} (dirty, diff sha256" in text
    assert provenance_lines(found)[0] == f"code {repo / 'pkg'}"


def test_a_run_of_an_installed_package_records_that_package_as_its_code(
    runner: Runner, tmp_path: Path
) -> None:
    """Found on the interpreter's own path, not taken for the run's directory."""
    import nbrunner

    runner.register("installed", python_module="nbrunner.demo.count", cwd=str(tmp_path))
    run = runner.submit("installed")  # argparse defaults: a few short steps
    assert run.wait(timeout=RUN_TIMEOUT_S).status is RunStatus.SUCCEEDED
    assert wait_for_provenance(runner, run.id)["code_path"] == str(Path(nbrunner.__file__).parent)


def test_a_queued_run_records_the_code_of_its_start_and_restart_says_it_changed(
    runner: Runner, home: Path, repo: Path
) -> None:
    runner.register("script", script="script.py", cwd=str(repo))
    runner.config("paused", True)  # it waits in the queue while the code moves on
    run = runner.submit("script")
    (repo / "script.py").write_text(TRAIN + "print('v2')\n")
    git(repo, "commit", "-q", "-am", "second")
    runner.config("paused", False)
    assert run.wait(timeout=RUN_TIMEOUT_S).status is RunStatus.SUCCEEDED
    first = wait_for_provenance(runner, run.id)
    assert first["git_commit"] == git(repo, "rev-parse", "HEAD")
    assert first["git_dirty"] is False and first["git_diff_sha256"] is None
    assert not (home / "logs" / f"{run.id}.diff").exists()

    same = cli(home, "restart", str(run.id))
    assert "changed" not in same.stderr
    git(repo, "commit", "-q", "--allow-empty", "-m", "third")
    restarted = cli(home, "restart", str(run.id))
    assert restarted.stderr.startswith(
        f"nbrunner: note: the code changed since run {run.id}: commit {first['git_commit'][:12]}"
    )
    new_id = int(restarted.stdout)
    runner.wait(new_id, timeout=RUN_TIMEOUT_S)
    assert wait_for_provenance(runner, new_id)["code_changed"].startswith("commit ")


def test_the_log_tab_shows_the_provenance_once_it_is_captured(runner: Runner, repo: Path) -> None:
    from dataclasses import replace

    from nbrunner.ui.logview import LogTab
    from nbrunner.ui.sync import Sync

    runner.register("train", python_module="pkg.train", cwd=str(repo))
    run = runner.submit("train")
    assert run.wait(timeout=RUN_TIMEOUT_S).status is RunStatus.SUCCEEDED
    found = wait_for_provenance(runner, run.id)
    before = replace(runner.store.get(run.id), provenance=None)  # as a tab opened early saw it
    tab = LogTab(before, Sync(), lambda action: action(), lambda _: None, runner.store.get)
    assert "code: not recorded yet" in tab.provenance.value
    tab.refresh()
    assert f"git {found['git_commit'][:12]} (clean)" in tab.provenance.value
    assert f"python {sys.executable}" in tab.provenance.value
