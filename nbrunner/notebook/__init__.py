"""Notebooks as modules: how a notebook run's argv looks, and a form from its parameters cell.

A notebook run's child is the executor (`executor.py`):

    python -m nbrunner.notebook SOURCE --output OUT.ipynb [--kernel K] [--params-json JSON]

The store names OUT when it gives the run its id: `logs/ID.ipynb`, beside the run's log, so
the record can say where it is (`notebook_path`). This module is imported by `modules`,
`models` and `store` in every process, so it imports nothing heavy.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

EXECUTOR = "nbrunner.notebook"
OUTPUT_FLAG = "--output"
# The output a notebook run's argv names until the store gives the run its id.
OUTPUT_PENDING = "ID.ipynb"
PARAMETERS_TAG = "parameters"
LOG_PREFIX = "[nbrunner]"  # the executor's own lines in a run's log; the last names a failure
_LITERAL_TYPES = ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"))


def executor_argv(
    notebook: str, kernel: str | None, params: dict[str, Any], python: str
) -> list[str]:
    """A notebook run's command line: the parameters travel as one JSON argument, typed."""
    argv = [python, "-m", EXECUTOR, notebook, OUTPUT_FLAG, OUTPUT_PENDING]
    if kernel:
        argv += ["--kernel", kernel]
    return [*argv, "--params-json", json.dumps(params)]


def notebook_output(argv: Sequence[str]) -> str | None:
    """Where a notebook run writes its executed notebook; None for any other run."""
    index = _output_index(argv)
    return argv[index] if index is not None else None


def argv_for_run(argv: Sequence[str], log_path: Path) -> list[str] | None:
    """A notebook run's argv writing its executed notebook beside its log (`logs/ID.ipynb`);
    None when the argv is not a notebook run's or says so already. A restart copies the old
    run's argv: this gives the new run a file of its own."""
    index = _output_index(argv)
    wanted = str(log_path.with_suffix(".ipynb").absolute())  # the run has a cwd of its own
    if index is None or argv[index] == wanted:
        return None
    return [*argv[:index], wanted, *argv[index + 1 :]]


def _output_index(argv: Sequence[str]) -> int | None:
    if tuple(argv[1:3]) != ("-m", EXECUTOR):
        return None
    rest = list(argv[3:])
    if OUTPUT_FLAG not in rest or rest.index(OUTPUT_FLAG) + 1 >= len(rest):
        return None
    return 3 + rest.index(OUTPUT_FLAG) + 1


def infer_params(path: str | Path) -> dict[str, dict[str, Any]]:
    """A launcher form from the notebook's `parameters` cell: each `name = literal` of type
    int, float, str or bool, with the literal as its default. Anything else (an expression,
    None, a list) stays the notebook's own; an unreadable notebook gives no parameters."""
    try:
        cells = json.loads(Path(path).read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError, AttributeError):
        return {}
    for cell in cells:
        if cell.get("cell_type") == "code" and PARAMETERS_TAG in _tags(cell):
            source = cell.get("source", "")
            text = "".join(source) if isinstance(source, list) else str(source)
            return dict(_literal_assignments(text))
    return {}


def _tags(cell: dict[str, Any]) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _literal_assignments(source: str) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        try:
            default = ast.literal_eval(value)
        except (ValueError, TypeError):
            continue
        kind = next((name for cls, name in _LITERAL_TYPES if isinstance(default, cls)), None)
        if isinstance(target, ast.Name) and kind is not None:
            yield target.id, {"type": kind, "default": default}
