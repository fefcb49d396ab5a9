"""The child of a notebook run: executes one notebook with nbclient, its output to the log.

It reads SOURCE (never writes it), injects the parameters after the cell tagged `parameters`
(papermill's own injection, so every kernel language gets its literals right), executes the
cells with nbclient and writes to its stdout, which is the run's log, as it happens:
- a line per code cell as it starts (`[nbrunner] cell 3 (id 9f2c): for i in range(n):`),
- every stream output, error traceback (ANSI kept), and the text of results and displays,
- at the end one line: the notebook finished, or which cell failed with which exception.
The executed notebook, with its outputs, is saved to OUT as cells end (at most once a second)
and at the end.

Exit status: 0 when every cell ran, or a cell ended the notebook with `sys.exit(0)` (as
papermill judges it: an early, successful end); 1 when a cell failed (later cells do not run) or the
kernel died; 2 when the notebook or its kernel cannot be found; 143 after SIGTERM (a cancel
or a timeout), which kills the kernel, its process group and every process it started.

On POSIX the kernel talks over Unix sockets in a private directory (ipc transport), not
over unencrypted loopback TCP, which any local user could read. The executed notebook is
written readable by its owner only (0600): its outputs may hold secrets.

Cells are counted as nbformat does: from 0, markdown cells and the injected parameters cell
included, in the executed notebook.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import nbformat
import psutil
from jupyter_client.kernelspec import NoSuchKernel, find_kernel_specs, get_kernel_spec
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError
from nbformat import NotebookNode
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook
from traitlets.config import Config

from . import EXECUTOR, LOG_PREFIX, OUTPUT_FLAG

PREFIX = LOG_PREFIX
EXIT_CELL_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_TERMINATED = 128 + signal.SIGTERM
KILL_WAIT_S = 3.0
SAVE_EVERY_S = 1.0  # a notebook of many quick cells is not rewritten after each of them
CLEAN_EXITS = ("", "0", "None", "False")  # SystemExit's text when its code means success


class Log:
    """The run's log (this process's stdout): the cells' output as it comes, and the
    executor's own lines, each on a line of its own."""

    def __init__(self) -> None:
        self.at_line_start = True

    def write(self, text: str) -> None:
        if text:
            sys.stdout.write(text)
            sys.stdout.flush()
            self.at_line_start = text.endswith("\n")

    def say(self, text: str) -> None:
        self.write(("" if self.at_line_start else "\n") + f"{PREFIX} {text}\n")


LOG = Log()
say = LOG.say


def message_text(msg: dict[str, Any]) -> str:
    """What the log shows of one kernel message: streams as they are, tracebacks, and the
    plain text of results and displays (other formats by their type)."""
    kind, content = msg["msg_type"], msg.get("content", {})
    if kind == "stream":
        return str(content.get("text", ""))
    if kind == "error":
        return "\n".join(content.get("traceback", [])) + "\n"
    if kind in ("execute_result", "display_data"):
        data = content.get("data", {})
        if "text/plain" in data:
            return f"{data['text/plain']}\n"
        return "".join(f"<{mime}>\n" for mime in data)
    return ""


def cell_name(cell: NotebookNode, index: int) -> str:
    cell_id = cell.get("id")
    return f"cell {index} (id {cell_id})" if cell_id else f"cell {index}"


def first_line(source: str, width: int = 60) -> str:
    line = next((s.strip() for s in source.splitlines() if s.strip()), "")
    return line if len(line) <= width else line[: width - 1] + "…"


class EchoingClient(NotebookClient):  # type: ignore[misc]
    """nbclient's client, writing each kernel message's output to the log as it comes."""

    def process_message(
        self, msg: dict[str, Any], cell: NotebookNode, cell_index: int
    ) -> NotebookNode | None:
        LOG.write(message_text(msg))
        return super().process_message(msg, cell, cell_index)


class Execution:
    """One notebook executed, echoed to the log, saved after every cell."""

    def __init__(self, nb: NotebookNode, output: Path, kernel: str) -> None:
        self.nb = nb
        self.output = output
        self.current = "before the first cell"
        self.kernel_tree: list[psutil.Process] = []
        self.terminated = False
        self.saved_at = float("-inf")
        self.sockets = None if os.name == "nt" else tempfile.mkdtemp(prefix="nbrunner-kernel-")
        self.client = EchoingClient(
            nb,
            config=kernel_config(self.sockets),
            kernel_name=kernel,
            timeout=None,
            shutdown_kernel="immediate",
            resources={"metadata": {"path": os.getcwd()}},
            on_notebook_start=self._on_start,
            on_cell_execute=self._on_cell,
            on_cell_executed=lambda **_: self.save(every=SAVE_EVERY_S),
        )

    def run(self) -> int:
        started = time.monotonic()
        try:
            asyncio.run(self._execute())
        except (CellExecutionError, DeadKernelError, asyncio.CancelledError) as exc:
            if not ended_early(exc):
                return self._failed(exc)
            say(f"{self.current} ended the notebook early with sys.exit({exc.evalue})")
        finally:
            self.save()
            if self.sockets:
                shutil.rmtree(self.sockets, ignore_errors=True)
        say(f"notebook finished in {time.monotonic() - started:.1f} s: {self.output}")
        return 0

    def _failed(self, exc: BaseException) -> int:
        """The last line of the log says why the notebook stopped, and where."""
        if self.terminated:  # nbclient reports a cancelled cell as a dead kernel
            say(f"stopped by SIGTERM in {self.current}; the kernel and its processes ended")
            return EXIT_TERMINATED
        if isinstance(exc, CellExecutionError):
            say(f"{self.current} failed: {exc.ename}: {exc.evalue}")
        else:
            say(f"the kernel died in {self.current}: {exc}")
        return EXIT_CELL_FAILED

    async def _execute(self) -> None:
        """Every cell, in a kernel of its own; however it ends, no kernel process is left."""
        try:
            await self.client.async_execute()
        finally:
            _kill(self.kernel_tree)

    def _on_start(self, **_: Any) -> None:
        """The kernel is up: say which process it is, and take SIGTERM over from nbclient
        (whose handler shuts the kernel down but leaves the cell waiting for it)."""
        pid = getattr(self.client.km.provisioner, "pid", None)
        say(f"kernel {self.client.kernel_name} started (pid {pid})")
        self.kernel_tree = _processes(pid)
        task = asyncio.current_task()
        with suppress(NotImplementedError, RuntimeError, AttributeError):  # Windows: no handler
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self._on_term, task)

    def _on_term(self, task: asyncio.Task[Any]) -> None:
        """Remember every process of the kernel now: once it is killed, those that left its
        process group are no longer its children."""
        self.terminated = True
        self.kernel_tree = _with_descendants(self.kernel_tree)
        task.cancel()

    def _on_cell(self, cell: NotebookNode, cell_index: int, **_: Any) -> None:
        self.current = cell_name(cell, cell_index)
        say(f"{self.current}: {first_line(cell.source)}")

    def save(self, every: float = 0.0) -> None:
        """Write the executed notebook so far, unless it was written less than `every` s ago."""
        if time.monotonic() - self.saved_at < every:
            return
        self.saved_at = time.monotonic()
        partial = self.output.with_name(self.output.name + ".part")
        with suppress(FileNotFoundError):
            partial.unlink()  # one left by a killed executor may have another mode
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "w", encoding="utf-8") as out:
            nbformat.write(self.nb, out)
        os.replace(partial, self.output)


def kernel_config(sockets: str | None) -> Config:
    """Where the kernel listens: Unix sockets in `sockets` (POSIX), else loopback TCP."""
    config = Config()
    if sockets:
        config.KernelManager.transport = "ipc"
        config.KernelManager.ip = os.path.join(sockets, "kernel")
    return config


def ended_early(exc: BaseException) -> bool:
    """papermill's rule: `sys.exit(0)` (or `sys.exit()`) in a cell ends the notebook well."""
    return (
        isinstance(exc, CellExecutionError)
        and exc.ename == "SystemExit"
        and exc.evalue.strip() in CLEAN_EXITS
    )


def _processes(pid: int | None) -> list[psutil.Process]:
    if pid is not None:
        with suppress(psutil.Error):
            return [psutil.Process(pid)]
    return []


def _with_descendants(processes: list[psutil.Process]) -> list[psutil.Process]:
    found = list(processes)
    for process in processes:
        with suppress(psutil.Error):
            found += process.children(recursive=True)
    return found


def _kill(processes: list[psutil.Process]) -> None:
    everyone = _with_descendants(processes)
    for process in everyone:
        with suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(everyone, timeout=KILL_WAIT_S)


def prepare(source: Path, params: dict[str, Any], kernel: str | None) -> tuple[NotebookNode, str]:
    """The notebook with its parameters injected, and the kernel to run it in."""
    nb = load_notebook_node(str(source))
    name = kernel or nb.metadata.get("kernelspec", {}).get("name") or "python3"
    try:
        language = get_kernel_spec(name).language
    except NoSuchKernel:
        known = ", ".join(sorted(find_kernel_specs())) or "none"
        raise LookupError(f"no Jupyter kernel named {name!r}; installed: {known}") from None
    if params:
        nb = parameterize_notebook(nb, params, kernel_name=name, language=language)
    return nb, name


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"python -m {EXECUTOR}", description="Execute a notebook as an nbrunner run."
    )
    parser.add_argument("source", type=Path, help="the notebook to run (never modified)")
    parser.add_argument(OUTPUT_FLAG, required=True, type=Path, help="the executed notebook")
    parser.add_argument("--kernel", help="kernel name (default: the notebook's kernelspec)")
    parser.add_argument("--params-json", default="{}", help="parameters, a JSON object")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(encoding="utf-8", errors="replace")  # type: ignore[union-attr]
    say(f"notebook {args.source} -> {args.output}")
    try:
        params = json.loads(args.params_json)
        if params:
            say(f"parameters: {json.dumps(params)}")
        nb, kernel = prepare(args.source, params, args.kernel)
    except (OSError, ValueError, LookupError) as exc:
        say(f"cannot run {args.source}: {exc}")
        return EXIT_BAD_INPUT
    args.output.parent.mkdir(parents=True, exist_ok=True)
    return Execution(nb, args.output, kernel).run()
