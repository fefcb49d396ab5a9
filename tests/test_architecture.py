"""The import structure: the layered contract in pyproject.toml ([tool.importlinter]) holds,
and no module imports itself round a circle, not even from inside a function."""

from __future__ import annotations

from pathlib import Path

from helpers.imports import find_cycle, runtime_imports
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def test_the_layered_import_contract_is_kept(capsys) -> None:
    status = lint_imports(str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    assert status == 0, capsys.readouterr().out


def test_no_import_circle_even_through_imports_inside_functions() -> None:
    graph = runtime_imports()
    assert "nbrunner.service" in graph["nbrunner.recording"]  # the scan sees imports at all
    assert "nbrunner.ui" in graph["nbrunner.runner"]  # and those inside functions
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " → ".join(cycle or [])
