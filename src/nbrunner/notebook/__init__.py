"""Notebooks as modules: how a notebook run's argv looks, and a form from its parameters cell.

A notebook run's child is the executor (`executor.py`):

    python -m nbrunner.notebook SOURCE --output OUT.ipynb [--kernel K] [--params-json JSON]

The store names OUT when it gives the run its id: `logs/ID.ipynb`, beside the run's log, so
the record can say where it is (`notebook_path`). This module is imported by `modules`,
`models` and `store` in every process, so it imports nothing heavy.
"""

from __future__ import annotations

import ast
import io
import json
import re
import tokenize
from collections.abc import Iterator, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

EXECUTOR = "nbrunner.notebook"
OUTPUT_FLAG = "--output"
# The output a notebook run's argv names until the store gives the run its id.
OUTPUT_PENDING = "ID.ipynb"
PARAMETERS_TAG = "parameters"
LOG_PREFIX = "[nbrunner]"  # the executor's own lines in a run's log; the last names a failure
_LITERAL_TYPES = ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"))
# annotations (lowered) → param types; None-like ones leave the type to the value
_ANNOTATIONS = {
    "int": "int",
    "float": "float",
    "str": "str",
    "bool": "bool",
    "list": "json",
    "dict": "json",
    "tuple": "json",
}


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
    """A launcher form from the notebook's `parameters` cell, as papermill infers one: each
    `name = literal` (or `name: type = literal`) becomes a parameter with the literal as its
    default, typed by its annotation or its value (int, float, str, bool; a list or dict is
    json; None makes it optional). A statement that does not parse, or whose value is an
    expression, is skipped and the rest still count; an unreadable notebook gives none."""
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


def _statements(source: str) -> Iterator[str]:
    """The cell's statements, each parsed alone (papermill's rule: a broken line costs only
    itself): a line at the left margin starts one; indented lines, comments and lines that
    close a bracket continue it."""
    current: list[str] = []
    for line in source.splitlines():
        continues = not line.strip() or line[0].isspace() or line.lstrip()[0] in "#)]}"
        if current and not continues:
            yield _without_trailing_comments(current)
            current = []
        if current or (line.strip() and not line.lstrip().startswith("#")):
            current.append(line)
    if current:
        yield _without_trailing_comments(current)


def _without_trailing_comments(lines: list[str]) -> str:
    """A statement without the comments after it (they belong to the next one)."""
    while lines[-1].lstrip().startswith("#") or not lines[-1].strip():
        lines = lines[:-1]
    return "\n".join(lines)


def _literal_assignments(source: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for statement in _statements(source):
        try:
            (node,) = ast.parse(statement).body
        except (SyntaxError, ValueError):
            continue
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value, annotation = node.targets[0], node.value, None
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value, annotation = node.target, node.value, node.annotation
        else:
            continue
        try:
            default = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
        if isinstance(target, ast.Name):
            yield target.id, _param(default, _annotated(annotation), _help(statement))


def _annotated(annotation: ast.expr | None) -> str | None:
    """The annotation's name: `float`, `"NoneType"`, `List[str]` → float, NoneType, List."""
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        with suppress(SyntaxError):
            annotation = ast.parse(annotation.value, mode="eval").body
    if isinstance(annotation, ast.Subscript):
        annotation = annotation.value
    if isinstance(annotation, ast.Attribute):  # typing.List
        return annotation.attr
    if isinstance(annotation, ast.Name):
        return annotation.id
    if isinstance(annotation, ast.Constant) and annotation.value is None:
        return "None"
    return None


def _param(default: Any, annotation: str | None, help_text: str) -> dict[str, Any]:
    """A parameter's spec from its default and annotation; the annotation wins when the
    default fits it (`a: float = 2` is a float)."""
    kind = _ANNOTATIONS.get((annotation or "").lower())
    if kind is None or (default is not None and not _fits(default, kind)):
        kind = _kind_of(default)
    spec: dict[str, Any] = {"type": kind or "str"}
    if default is None:
        spec["optional"] = True
    else:
        spec["default"] = [*default] if isinstance(default, tuple) else default
    return spec | ({"help": help_text} if help_text else {})


def _kind_of(value: Any) -> str | None:
    if isinstance(value, list | tuple | dict):
        return "json"
    return next((name for cls, name in _LITERAL_TYPES if isinstance(value, cls)), None)


def _fits(value: Any, kind: str) -> bool:
    if kind == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return _kind_of(value) == kind


def _help(statement: str) -> str:
    """The comment ending the statement, a `type:` comment's type left out (papermill's)."""
    last_row = statement.count("\n") + 1
    try:  # tokens, so a "#" inside a string is not taken for a comment
        tokens = list(tokenize.generate_tokens(io.StringIO(statement).readline))
    except (tokenize.TokenError, SyntaxError):
        return ""
    comments = [t.string for t in tokens if t.type == tokenize.COMMENT and t.start[0] == last_row]
    comment = comments[-1].lstrip("#").strip() if comments else ""
    return re.sub(r"^type:\s*\S+\s*", "", comment)
