"""The import structure: the layered contract in pyproject.toml ([tool.importlinter]) holds,
and no module imports itself round a circle, not even from inside a function."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers.imports import find_cycle, runtime_imports
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def test_the_layered_import_contract_is_kept(capsys) -> None:
    status = lint_imports(str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    assert status == 0, capsys.readouterr().out


def test_no_import_circle_even_through_imports_inside_functions() -> None:
    graph = runtime_imports()
    assert "nbrunner.contact" in graph["nbrunner.recording"]  # the scan sees imports at all
    assert "nbrunner.ui" in graph["nbrunner.runner"]  # and those inside functions
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " → ".join(cycle or [])


def test_the_keeper_starts_without_the_services_machinery() -> None:
    """The keeper only talks to the service (nbrunner.contact): each keeper start, one per
    burst of runs, would otherwise import the scheduler, pruning and provenance too, nor
    psutil (a quarter of its start), which only a client announcing itself needs."""
    code = (
        "import sys, nbrunner.keeper; "
        "print(sorted(m for m in sys.modules if 'nbrunner' in m or m == 'psutil'))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert found.returncode == 0, found.stderr
    assert "nbrunner.keeper" in found.stdout and "nbrunner.service" not in found.stdout
    assert "'psutil'" not in found.stdout
