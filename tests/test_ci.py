"""CI runs what the README says, one way: the Linux job calls .ci/run, which reads the
README's command; a second copy of either would drift."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

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
