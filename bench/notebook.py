"""8. Notebook start-up: submit → the first cell running, nbrunner beside papermill by hand.

A three-cell notebook (parameters, a cell stamping the time, a trivial cell) runs with one
parameter. nbrunner: a registered notebook module, submitted from a started runner. The
peer: the `papermill` command a user would type, `papermill IN OUT -p stamp_file PATH`.
"""

from __future__ import annotations

import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from . import nbrun
from .context import Context
from .harness import Metrics, Section, Variant, adopts_orphans, figure_from, interleave, isolate

PEER = "papermill by hand"
FLOOR = "floor (nbclient, warm process)"
METHOD = """\
Each sample runs in a fresh process with its own home. The notebook's first code cell after
the parameters writes `time.time()` to the file named by its `stamp_file` parameter. *Submit
→ first cell* = that stamp − the time just before `runner.submit` (nbrunner) or just before
starting `python -m papermill IN OUT -p stamp_file PATH` (the peer); *submit → ended* = until
the run's record says succeeded, or papermill exits. Both start a fresh `python3` kernel;
nbrunner adds the store, the service, a recorder and its executor process, papermill its CLI start.
The floor is a process that has already imported nbclient executing the notebook (its
parameters cell edited in memory) with `NotebookClient(nb).execute()`, the kernel killed at
the end as nbrunner's executor does: kernel start-up and execution alone. nbrunner's
executor leaves out one import (`rfc3987_syntax`, ~0.9 s here), see src/nbrunner/notebook.py."""


def write_notebook(path: Path) -> Path:
    cells = [
        new_code_cell('stamp_file = ""', metadata={"tags": ["parameters"]}),
        new_code_cell("import time\nopen(stamp_file, 'w').write(repr(time.time()))"),
        new_code_cell("print('done')"),
    ]
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(new_notebook(cells=cells, metadata={"kernelspec": kernelspec}), path)
    return path


def _metrics(stamp: Path, start: float, end: float) -> Metrics:
    return {
        "first_cell_ms": 1000 * (float(stamp.read_text()) - start),
        "ended_ms": 1000 * (end - start),
    }


@adopts_orphans
def nbrunner_notebook(home: Path) -> Metrics:
    runner = nbrun.runner(home)
    runner.register("nb", notebook=str(write_notebook(home / "nb.ipynb")))
    stamp = home / "stamp"
    start = time.time()
    run = runner.submit("nb", params={"stamp_file": str(stamp)})
    record = run.wait(120)
    end = time.time()
    runner.close()
    if record.exit_code != 0:
        raise RuntimeError(f"the notebook run failed: {run.logs(tail=20)}")
    return _metrics(stamp, start, end)


def papermill_notebook(home: Path) -> Metrics:
    source, stamp = write_notebook(home / "nb.ipynb"), home / "stamp"
    argv = [sys.executable, "-m", "papermill", str(source), str(home / "out.ipynb")]
    start = time.time()
    subprocess.run(
        [*argv, "-p", "stamp_file", str(stamp), "--no-progress-bar"],
        check=True,
        capture_output=True,
    )
    return _metrics(stamp, start, time.time())


def floor_notebook(home: Path) -> Metrics:
    from nbclient import NotebookClient

    nb, stamp = nbformat.read(write_notebook(home / "nb.ipynb"), as_version=4), home / "stamp"
    start = time.time()
    nb.cells[0].source = f"stamp_file = {str(stamp)!r}"
    NotebookClient(nb, shutdown_kernel="immediate").execute()
    return _metrics(stamp, start, time.time())


def run(ctx: Context) -> Section:
    section = Section("notebook", "8. Notebook start-up", METHOD)
    variants: dict[str, Variant] = {
        FLOOR: partial(isolate, "notebook:floor_notebook"),
        PEER: partial(isolate, "notebook:papermill_notebook"),
        "nbrunner": partial(isolate, "notebook:nbrunner_notebook"),
    }
    results = interleave(variants, ctx.size(5, 1))
    first = figure_from(section, results, "first_cell_ms", "submit → first cell running", "ms")
    figure_from(section, results, "ended_ms", "submit → three-cell notebook ended", "ms")
    section.notes.append(
        f"nbrunner's start-up is {first.ratio(PEER):.2f}× papermill's by hand "
        f"({first.median():.0f} ms vs {first.median(PEER):.0f} ms, medians) and "
        f"{first.ratio(FLOOR):.2f}× the floor's ({first.median(FLOOR):.0f} ms)."
    )
    return section
