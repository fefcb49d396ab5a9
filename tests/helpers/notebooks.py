"""Notebooks written for tests."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

PYTHON3 = {"name": "python3", "display_name": "Python 3", "language": "python"}


def write_notebook(path: Path, *sources: str, parameters: str | None = None) -> Path:
    """A notebook of code cells, with a cell tagged `parameters` first when given."""
    cells = [new_markdown_cell("# a test notebook")]
    if parameters is not None:
        cells.append(new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    cells += [new_code_cell(source) for source in sources]
    nbformat.write(new_notebook(cells=cells, metadata={"kernelspec": PYTHON3}), path)
    return path
