"""`report(step=10, loss=0.31)`: a run's scalars, one JSON line per call, for nbrunner to show.

This runs inside users' runs, so it imports only the standard library's small modules and
does nothing at all outside nbrunner: without `NBRUNNER_METRICS` in the environment (the
service names the file for each run) `report` returns at once.

Inside a run, points are buffered in memory, then formatted and appended to the file about
once a second (by a daemon thread), and at exit (in a notebook run's kernel, which is
killed: as each cell ends). The file is capped at `NBRUNNER_METRICS_MAX` bytes (the home's
`max_log_size`; 0: no cap): past it, points are counted, not written, except the last one,
written at exit with a `{"dropped": N}` line, so a run's last value is always known.

A line: `{"step": 10, "time": 1767225600.123, "loss": 0.31, "acc": 0.88}`.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
from typing import SupportsFloat

METRICS_ENV = "NBRUNNER_METRICS"
METRICS_MAX_ENV = "NBRUNNER_METRICS_MAX"
FLUSH_S = 1.0
MAX_BUFFERED = 20_000  # points; a run reporting faster flushes in its own thread (bounded memory)
METRICS_SUFFIX = ".metrics.jsonl"
_SPECIAL = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def metrics_path(log_path: str) -> str:
    """A run's metrics file, beside its log: `logs/ID.log` → `logs/ID.metrics.jsonl`."""
    stem, dot, _ = log_path.rpartition(".")
    return (stem if dot else log_path) + METRICS_SUFFIX


Point = tuple[int, float, dict[str, float]]


class _Sink:
    """One process's buffer for one metrics file.

    The caller only appends (step, time, values) to the buffer; the flusher thread formats
    and writes them, so a training loop whose steps release the GIL (GPU work, I/O) does not
    pay for the formatting at all.
    """

    def __init__(self, path: str, cap: int) -> None:
        self.path = path
        self.cap = cap
        self.written = 0
        self.dropped = 0
        self.last_dropped = ""
        self.steps = 0
        self.points: list[Point] = []
        self.lock = threading.Lock()  # the buffer
        self.writing = threading.Lock()  # the file: one flush at a time, in order
        self.names: dict[str, str] = {}
        self.thread: threading.Thread | None = None

    def add(self, step: int | None, values: dict[str, SupportsFloat]) -> None:
        if step is None:
            step = self.steps
        self.steps = step + 1
        point = (int(step), time.time(), {name: float(v) for name, v in values.items()})
        with self.lock:
            self.points.append(point)
            full = len(self.points) >= MAX_BUFFERED
        if full:
            self.flush()
        elif self.thread is None:
            self._start_thread()

    def _start_thread(self) -> None:
        self.thread = threading.Thread(target=self._flush_forever, name="nbrunner-report")
        self.thread.daemon = True
        self.thread.start()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(FLUSH_S)
            self.flush()

    def flush(self, final: bool = False) -> None:
        with self.writing:
            with self.lock:
                points, self.points = self.points, []
            data = self._encode(points, final).encode()
            if not data:
                return
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
            except OSError:
                return  # a full disk or a removed home: the run goes on without its points
            self.written += len(data)

    def _encode(self, points: list[Point], final: bool) -> str:
        """JSON lines within the cap; past it, points are counted and the last one kept."""
        lines, size = [], self.written
        for step, moment, values in points:
            line = f'{{"step": {step}, "time": {moment:.3f}'
            for name, value in values.items():
                number = repr(value)
                if number[-1] in "nf":  # nan, inf, -inf: spelled as Python's json reads them
                    number = _SPECIAL[number]
                line += f", {self._name(name)}: {number}"
            line += "}\n"
            if self.cap and size + len(line) > self.cap:
                self.dropped += 1
                self.last_dropped = line
                continue
            lines.append(line)
            size += len(line)
        if final and self.dropped:
            lines += [self.last_dropped, f'{{"dropped": {self.dropped}}}\n']
            self.dropped = 0
        return "".join(lines)

    def _name(self, name: str) -> str:
        known = self.names.get(name)
        if known is None:
            known = self.names[name] = json.dumps(name)
        return known

    def forget(self) -> None:
        """In a forked child: the parent writes what it buffered; the child starts empty."""
        self.points, self.dropped, self.thread = [], 0, None
        self.lock, self.writing = threading.Lock(), threading.Lock()


def _sink_from_env() -> _Sink | None:
    path = os.environ.get(METRICS_ENV)
    if not path:
        return None
    try:
        cap = max(int(os.environ.get(METRICS_MAX_ENV, "0")), 0)
    except ValueError:
        cap = 0
    sink = _Sink(path, cap)
    atexit.register(sink.flush, True)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=sink.forget)
    _flush_after_cells(sink)
    return sink


def _flush_after_cells(sink: _Sink) -> None:
    """In a notebook run's kernel (killed when the notebook ends, so no atexit): flush as
    each cell ends."""
    get_ipython = getattr(sys.modules.get("IPython"), "get_ipython", None)
    shell = get_ipython() if get_ipython is not None else None
    if shell is not None:
        shell.events.register("post_run_cell", lambda *_: sink.flush())


_sink = _sink_from_env()


def report(step: int | None = None, **values: SupportsFloat) -> None:
    """Record scalars of this run at `step` (default: one more than the last report).

    Values are numbers (a NumPy or PyTorch scalar too, anything `float()` takes; anything
    else raises TypeError or ValueError at once). Outside an nbrunner run this does nothing.
    """
    if _sink is not None:
        _sink.add(step, values)


def flush() -> None:
    """Write what is buffered now (it is written within a second, and at exit, anyway)."""
    if _sink is not None:
        _sink.flush()
