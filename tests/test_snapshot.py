"""`snapshot = true`: queued runs execute the code as it was at submit, not at their start."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.cli import cli

from nbrunner import Runner, prune
from nbrunner.states import RunStatus

MODULES = """
[modules.script_frozen]
script = "code/train.py"
snapshot = true
[modules.script_live]
script = "code/train.py"
[modules.package_frozen]
python_module = "pkg.train"
cwd = "code"
snapshot = true
[modules.package_frozen.params]
epochs = { type = "int", default = 1 }
"""
TRAIN_SCRIPT = "import helper\nprint('script', '{version}', helper.NAME)\n"
TRAIN_MODULE = """import argparse
from pkg.version import VERSION

if __name__ == "__main__":
    args = argparse.ArgumentParser()
    args.add_argument("--epochs", type=int)
    print("package", VERSION, args.parse_args().epochs)
"""


@pytest.fixture
def project(home: Path) -> Path:
    code = home.parent / "project" / "code"
    (code / "pkg").mkdir(parents=True)
    (code / "train.py").write_text(TRAIN_SCRIPT.format(version="v1"))
    (code / "helper.py").write_text("NAME = 'helper'\n")
    (code / "pkg" / "__init__.py").write_text("")
    (code / "pkg" / "train.py").write_text(TRAIN_MODULE)
    (code / "pkg" / "version.py").write_text("VERSION = 'v1'\n")
    (home.parent / "project" / "modules.toml").write_text(MODULES)
    return home.parent / "project"


def test_queued_runs_run_the_code_of_their_submit_with_snapshot_and_of_their_start_without(
    home: Path, project: Path
) -> None:
    with Runner(home, project / "modules.toml") as runner:
        runner.config("paused", True)  # the runs wait while the code is edited
        frozen, live = runner.submit("script_frozen"), runner.submit("script_live")
        package = runner.submit("package_frozen", params={"epochs": 7})
        (project / "code" / "train.py").write_text(TRAIN_SCRIPT.format(version="v2"))
        (project / "code" / "pkg" / "version.py").write_text("VERSION = 'v2'\n")
        runner.config("paused", False)
        for run in (frozen, live, package):
            assert run.wait(timeout=60).status is RunStatus.SUCCEEDED, run.logs()
        assert frozen.logs().strip() == "script v1 helper"  # siblings still import
        assert live.logs().strip() == "script v2 helper"
        assert package.logs().strip() == "package v1 7"

        snapshots = list((home / "snapshots").iterdir())
        assert len(snapshots) == 2  # one per frozen submission
        runner.prune("0s")
        assert len(list((home / "snapshots").iterdir())) == 2  # fresh ones are kept a while
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(prune, "SNAPSHOT_GRACE_S", -60)
            runner.prune("0s")
        assert list((home / "snapshots").iterdir()) == []


def test_snapshot_is_for_code_nbrunner_can_copy(home: Path, project: Path) -> None:
    (home / "modules.toml").write_text('[modules.x]\ncommand = ["true"]\nsnapshot = true\n')
    result = cli(home, "modules", check=False)
    assert result.returncode == 2
    assert "a command or notebook module cannot have it" in result.stderr
    (home / "modules.toml").write_text(
        '[modules.x]\npython_module = "json.tool"\nsnapshot = true\n'
    )
    result = cli(home, "run", "x", check=False)
    assert result.returncode == 2
    assert "installed packages are not copied" in result.stderr
