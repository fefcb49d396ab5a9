"""CI runs what the README says, one way: the Linux job calls .ci/run, which reads the
README's command; a second copy of either would drift."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def linux_job() -> str:
    workflow = (REPO / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8")
    return workflow[workflow.index("\n  linux:") : workflow.index("\n  windows:")]


def test_the_linux_job_runs_ci_run_and_nothing_else() -> None:
    assert re.findall(r"^\s+(?:- )?run: *(.+)$", linux_job(), re.MULTILINE) == ["bash .ci/run"]


def test_the_linux_job_may_mount_the_full_disk_tests_tmpfs() -> None:
    assert "--privileged" in linux_job()


def test_ci_run_runs_exactly_the_readme_command() -> None:
    script = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    found = re.search(r"^test_command=\$\((.*?)\)$", script, re.MULTILINE | re.DOTALL)
    assert found, ".ci/run takes the command from the README"
    extracted = subprocess.run(
        ["bash", "-c", found.group(1)], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- test-command -->")[1].split("<!-- /test-command -->")[0]
    assert extracted == block.strip().removeprefix("```bash").removesuffix("```").strip()


LEAVES_A_SLEEPER = """
import subprocess, sys, tempfile

def test_forgets_its_child():
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                     start_new_session=True)

def test_forgets_its_scratch_folder():
    tempfile.mkdtemp(prefix="nbrunner-scratch-")

def test_cleans_up():
    subprocess.run([sys.executable, "-c", "pass"], check=True)
"""


@pytest.mark.parametrize("workers", ["0", "2"])
def test_the_suite_fails_and_names_what_a_test_left_behind(tmp_path: Path, workers: str) -> None:
    """The session-end check, with and without xdist workers: a planted leftover process
    and scratch folder fail a run whose every test passed, and are named."""
    for name in ("conftest.py", "helpers"):
        copy = shutil.copytree if name == "helpers" else shutil.copy
        copy(REPO / "tests" / name, tmp_path / name)
    (tmp_path / "test_leaves.py").write_text(LEAVES_A_SLEEPER)
    temp = tmp_path / "temp"  # the planted folder's, out of this session's sight
    temp.mkdir()
    env = {
        **os.environ,
        "NBRUNNER_TEST_SETTLE_S": "2",
        # the helpers import the bench's (free ports for a Ray head): the repo stays importable
        "PYTHONPATH": str(REPO),
        "TMPDIR": str(temp),
    }
    env.pop("NBRUNNER_TEST_SESSION", None)
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", workers, "-q"]
    done = subprocess.run(
        [*argv, str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    out = done.stdout + done.stderr
    assert "3 passed" in out, out
    assert done.returncode == 1, out
    assert "processes and folders left behind" in out and "time.sleep(600)" in out, out
    (planted,) = temp.glob("nbrunner-scratch-*")
    assert f"folder {planted}" in out, out
