"""Freezing a module's code at submit (`snapshot = true`).

Without it a queued run executes the code as it is when the run *starts*: editing train.py
while forty runs wait changes what they run. With `snapshot = true` the module's code is
copied once per submission (one copy serves every run of a sweep) into
`HOME/snapshots/ID/`, and its runs execute that copy:

- a `script`: the file is copied and run from there; its original directory stays on
  PYTHONPATH, so modules beside it are still imported (from their live files);
- a `python_module`: its top-level package directory (or single-file module), found under
  the run's working directory or PYTHONPATH, is copied, and the run imports it from the copy
  first. Installed packages (site-packages) are never copied.

The run's working directory does not change, so relative data paths keep working.
`nbrunner prune` removes a snapshot once no remaining run uses it.
"""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import BadInput
from .units import format_size

DIR_NAME = "snapshots"
MAX_BYTES = 100_000_000  # a package with data inside it: refused, not copied per submit
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".git", ".ipynb_checkpoints")
# `python -c` with the snapshot first on sys.path (before the working directory that -m
# would put there), then the module run as __main__ with the rest of argv.
RUN_MODULE = (
    "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
    "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)"
)


def new_directory(home: Path) -> Path:
    """A fresh snapshot directory; its name is unique, so prune can find its users."""
    name = f"snap-{time.strftime('%Y%m%d')}-{uuid.uuid4().hex[:12]}"
    path = home / DIR_NAME / name
    path.mkdir(parents=True, mode=0o700)
    return path


def module_source(python_module: str, search: Sequence[str]) -> Path:
    """The top-level package directory (or .py file) of `python_module` under `search`."""
    top = python_module.split(".", 1)[0]
    found = importlib.machinery.PathFinder.find_spec(top, [p for p in search if p])
    if found is None or found.origin in (None, "built-in", "frozen"):
        where = ", ".join(p for p in search if p) or "nowhere"
        raise BadInput(
            f"snapshot: module {python_module!r} is not found under the run's directory or "
            f"PYTHONPATH ({where}); installed packages are not copied (set snapshot = false)"
        )
    origin = Path(found.origin)
    return origin.parent if found.submodule_search_locations else origin


def _size(source: Path) -> int:
    if source.is_file():
        return source.stat().st_size
    return sum(
        (Path(root) / name).stat().st_size
        for root, dirs, names in os.walk(source)
        for name in names
        if "__pycache__" not in root
    )


def copy_code(source: Path, into: Path) -> Path:
    """Copy a file or package directory into `into`; its copy."""
    size = _size(source)
    if size > MAX_BYTES:
        raise BadInput(
            f"snapshot: {source} holds {format_size(size)}, more than the "
            f"{format_size(MAX_BYTES)} a snapshot copies; move data out of it or set "
            "snapshot = false"
        )
    target = into / source.name
    if source.is_dir():
        shutil.copytree(source, target, ignore=_IGNORED)
    else:
        shutil.copy2(source, target)
    return target


def freeze(home: Path, spec: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of one submission, running a copy of the module's code taken now."""
    if not getattr(spec, "snapshot", False) or not rows:
        return rows
    cwd = spec.cwd or os.getcwd()
    pythonpath = str(spec.env.get("PYTHONPATH") or os.environ.get("PYTHONPATH") or "")
    directory = new_directory(home)
    if spec.script:
        copy = copy_code(Path(spec.script).resolve(), directory)
        extra = str(Path(spec.script).resolve().parent)
        return [_with_script(row, spec.script, str(copy), extra, pythonpath) for row in rows]
    source = module_source(spec.python_module, [cwd, *pythonpath.split(os.pathsep)])
    copy_code(source, directory)
    return [_with_module(row, spec.python_module, str(directory)) for row in rows]


def _with_script(
    row: dict[str, Any], script: str, copy: str, original_dir: str, pythonpath: str
) -> dict[str, Any]:
    argv = [copy if word == script else word for word in row["argv"]]
    env = {**row["env"], "PYTHONPATH": os.pathsep.join(filter(None, [original_dir, pythonpath]))}
    return row | {"argv": argv, "env": env}


def _with_module(row: dict[str, Any], python_module: str, directory: str) -> dict[str, Any]:
    argv = list(row["argv"])
    at = argv.index("-m")  # [python, -m, module, args...]
    return row | {"argv": [*argv[:at], "-c", RUN_MODULE, directory, *argv[at + 1 :]]}


def unused(home: Path, in_use: Any) -> list[Path]:
    """Snapshot directories no run refers to any more (`in_use(name)` asks the store)."""
    root = home / DIR_NAME
    if not root.is_dir():
        return []
    return [path for path in root.iterdir() if path.is_dir() and not in_use(path.name)]
