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
METHOD = """\
Each sample runs in a fresh process with its own home. The notebook's first code cell after
the parameters writes `time.time()` to the file named by its `stamp_file` parameter. *Submit
→ first cell* = that stamp − the time just before `runner.submit` (nbrunner) or just before
starting `python -m papermill IN OUT -p stamp_file PATH` (the peer); *submit → ended* = until
the run's record says succeeded, or papermill exits. Both start a fresh `python3` kernel;
nbrunner adds the store, a supervisor and its executor process, papermill its CLI start."""


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


def run(ctx: Context) -> Section:
    section = Section("notebook", "8. Notebook start-up", METHOD)
    variants: dict[str, Variant] = {
        PEER: partial(isolate, "notebook:papermill_notebook"),
        "nbrunner": partial(isolate, "notebook:nbrunner_notebook"),
    }
    results = interleave(variants, ctx.size(5, 1))
    first = figure_from(section, results, "first_cell_ms", "submit → first cell running", "ms")
    figure_from(section, results, "ended_ms", "submit → three-cell notebook ended", "ms")
    section.notes.append(
        f"nbrunner's start-up is {first.ratio(PEER):.2f}× papermill's by hand "
        f"({first.median():.0f} ms vs {first.median(PEER):.0f} ms, medians)."
    )
    return section
