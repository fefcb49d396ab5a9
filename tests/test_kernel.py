"""Runs outlive the Jupyter kernel, server or Voila page that started them."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers.browser import free_port, start_on_free_port
from helpers.procs import alive, wait_for_file, wait_until
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.manager import start_new_kernel

from nbrunner import Runner
from nbrunner.states import RunStatus
from nbrunner.store import Store

SUBMIT = """
import sys
from nbrunner import Runner
runner = Runner()
runner.register("exit3", command=[sys.executable, "-c",
    "import time\\nfor i in range(30):\\n    print('three', i, flush=True); time.sleep(0.1)\\n"
    "raise SystemExit(3)"])
runner.register("zero", command=ZERO_COMMAND)
ok = runner.submit("zero")
bad = runner.submit("exit3")
print(ok.id, bad.id)
"""
CHECK = """
from nbrunner import Runner
runner = Runner()
for run_id in ({ids}):
    record = runner.wait(run_id, timeout=60)
    print(record.status.value, record.exit_code)
"""


def execute(client, code: str) -> str:
    """Run code in the kernel; return its stdout, failing on any error."""
    chunks: list[str] = []

    def collect(message: dict) -> None:
        content = message["content"]
        if message["msg_type"] == "stream":
            chunks.append(content["text"])
        elif message["msg_type"] == "error":
            chunks.append("\n".join(content["traceback"]))

    reply = client.execute_interactive(code, output_hook=collect, timeout=90)
    assert reply["content"]["status"] == "ok", "".join(chunks)
    return "".join(chunks)


@pytest.fixture
def kernel_env(home: Path) -> dict[str, str]:
    return {**os.environ, "NBRUNNER_HOME": str(home)}


def test_runs_survive_kernel_shutdown_and_a_new_kernel_sees_them(
    kernel_env, home, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"  # the first run goes on until the test has seen it outlive its kernel
    counts = wait_for_file(gate) + "for i in range(1, 31):\n    print(f'zero {i}/30', flush=True)\n"
    submit = SUBMIT.replace("ZERO_COMMAND", repr([sys.executable, "-c", counts]))
    manager, client = start_new_kernel(env=kernel_env)
    try:
        ok_id, bad_id = map(int, execute(client, submit).split())
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)  # its whole process group goes with it
    assert not manager.is_alive()
    with Runner(home) as runner:
        assert not runner.get(ok_id).record.is_done  # accepted, and going on without it
    gate.touch()
    manager, client = start_new_kernel(env=kernel_env)
    try:
        outcome = execute(client, CHECK.format(ids=f"{ok_id}, {bad_id}"))
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert outcome.split("\n")[:2] == ["succeeded 0", "failed 3"]
    with Runner(home) as runner:
        assert runner.logs(ok_id).splitlines() == [f"zero {i}/30" for i in range(1, 31)]
        assert runner.logs(bad_id).splitlines() == [f"three {i}" for i in range(30)]


def submit_and_say(gate: Path) -> str:
    """Kernel code: submit a run that waits for the gate, and once it runs say which run and
    which kernel."""
    wait = f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.02)\n"
    return (
        "import os, sys, time\nfrom nbrunner import Runner\nrunner = Runner()\n"
        f"runner.register('gated', command=[sys.executable, '-c', {wait + 'print(1)'!r}])\n"
        "run = runner.submit('gated')\n"
        "while run.status.value != 'running':\n    time.sleep(0.05)\n"
        "print(f'run {run.id} from kernel {os.getpid()}', flush=True)\n"
    )


SAID = re.compile(r"run (\d+) from kernel (\d+)")


@contextmanager
def server(command: list[str], env: dict[str, str], log: Path) -> Iterator[int]:
    """A Jupyter server or Voila (told port_retries=0) in a session of its own, listening on
    the port it yields."""
    with open(log, "wb") as out:
        process, port = start_on_free_port(
            lambda port: subprocess.Popen(
                [*command, f"--port={port}", "--no-browser"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        try:
            yield port
            os.killpg(process.pid, signal.SIGKILL)  # the test's kill: no shutdown, no cleanup
            process.wait(timeout=10)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def kill_kernel(pid: int) -> None:
    """SIGKILL the kernel's whole process group, as a server stopping its kernels would."""
    os.killpg(os.getpgid(pid), signal.SIGKILL)
    wait_until(lambda: not alive(pid), what="the kernel to die")


def assert_run_goes_on_to_succeed(home: Path, run_id: int, gate: Path) -> None:
    store = Store(home)
    assert store.get(run_id).status is RunStatus.RUNNING
    gate.touch()  # the run ends only now, after everything that started it was killed
    record = wait_until(lambda: store.get(run_id).is_done and store.get(run_id), 60, what="end")
    assert (record.status, record.exit_code) == (RunStatus.SUCCEEDED, 0)
    assert Path(record.log_path).read_text() == "1\n"


def test_a_server_whose_port_another_program_took_is_started_on_another(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """free_port() lets its port go before the server binds it; a program beside the tests
    (another test's server, a Ray worker) that takes it meanwhile must not be the server a
    test talks to, as when a JupyterLab moved to the next port and the browser reached
    whatever held the first."""
    import helpers.browser as browser

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = iter([taken.getsockname()[1]])
        monkeypatch.setattr(browser, "free_port", lambda: next(ports, None) or free_port())
        command = [sys.executable, "-m", "jupyter_server", "--ServerApp.ip=127.0.0.1"]
        command += [
            "--allow-root",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={tmp_path}",
        ]
        with server(command, dict(os.environ), tmp_path / "server.log") as port:
            assert port != taken.getsockname()[1]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=60) as answer:
                assert "version" in json.load(answer)


def test_a_run_outlives_a_killed_jupyter_server_and_its_kernel(
    kernel_env, home: Path, tmp_path: Path
) -> None:
    runtime, token, gate = tmp_path / "runtime", "test-token", tmp_path / "gate"
    env = {**kernel_env, "JUPYTER_RUNTIME_DIR": str(runtime)}
    command = [sys.executable, "-m", "jupyter_server", "--ServerApp.ip=127.0.0.1", "--allow-root"]
    command += ["--ServerApp.port_retries=0"]
    command += [f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}"]
    with server(command, env, tmp_path / "server.log") as port:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/kernels",
            data=b"{}",
            headers={"Authorization": f"token {token}"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            kernel_id = json.load(response)["id"]
        client = BlockingKernelClient(connection_file=str(runtime / f"kernel-{kernel_id}.json"))
        client.load_connection_file()
        # No kernel manager here: the client judges the kernel alive by its heartbeat, whose
        # default 1 s answer time a kernel still importing misses on a busy machine (then
        # "Kernel died before replying to kernel_info" though it lives).
        client.hb_channel.time_to_dead = 10.0
        client.start_channels()
        try:
            client.wait_for_ready(timeout=60)
            run_id, kernel_pid = map(int, SAID.findall(execute(client, submit_and_say(gate)))[0])
        finally:
            client.stop_channels()
    kill_kernel(kernel_pid)
    assert_run_goes_on_to_succeed(home, run_id, gate)


def test_a_run_outlives_a_killed_voila_and_its_page_kernel(
    kernel_env, home: Path, tmp_path: Path
) -> None:
    page, gate = tmp_path / "submit.ipynb", tmp_path / "gate"
    cell = {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None}
    notebook = {"cells": [{**cell, "source": submit_and_say(gate)}], "metadata": {}}
    page.write_text(json.dumps({**notebook, "nbformat": 4, "nbformat_minor": 5}))
    command = [sys.executable, "-m", "voila", str(page), "--Voila.ip=127.0.0.1"]
    command += ["--Voila.port_retries=0"]
    with server(command, kernel_env, tmp_path / "voila.log") as port:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=120) as response:
            html = response.read().decode()
        run_id, kernel_pid = map(int, SAID.findall(html)[0])
    kill_kernel(kernel_pid)
    assert_run_goes_on_to_succeed(home, run_id, gate)


# Kernel code: a dashboard, and a widget that, while the kernel answers a page's request for
# every widget's state, has the dashboard's refresh thread make a widget (as a run that ends
# makes a toast) and gives it a second to do so.
MAKES_A_WIDGET_DURING_THE_ANSWER = """
import threading
import ipywidgets as widgets
from nbrunner import Runner
from nbrunner.ui import Dashboard

dashboard = Dashboard(Runner())
made = threading.Event()

class Probe(widgets.Widget):
    armed = False

    def get_state(self, key=None, drop_defaults=False):
        if self.armed and key is None:
            self.armed = False
            dashboard._request(lambda: (widgets.HTML("made by a tick"), made.set()))
            made.wait(1.0)
        return super().get_state(key, drop_defaults)

probe = Probe()
probe.armed = True
"""


def ask_every_widget_state(client: BlockingKernelClient, timeout: float) -> dict | None:
    """What a page loading does: open the widgets' control comm and ask for every widget's
    state; the states, or None if no answer came."""
    from ipywidgets._version import __control_protocol_version__

    comm_id = uuid.uuid4().hex
    version = {"version": __control_protocol_version__}
    opening = {"comm_id": comm_id, "target_name": "jupyter.widget.control", "data": {}}
    client.shell_channel.send(client.session.msg("comm_open", opening, metadata=version))
    asking = {"comm_id": comm_id, "data": {"method": "request_states"}}
    client.shell_channel.send(client.session.msg("comm_msg", asking))
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = client.get_iopub_msg(timeout=left)
        except queue.Empty:
            break
        content = message["content"]
        ours = message["msg_type"] == "comm_msg" and content.get("comm_id") == comm_id
        if ours and content["data"].get("method") == "update_states":
            return content["data"]["states"]
    return None


def test_a_page_asking_for_every_widget_state_gets_a_whole_answer_while_the_dashboard_ticks(
    kernel_env,
) -> None:
    """ipywidgets walks its registry of widgets to answer; a widget made meanwhile by the
    refresh thread ended the walk and no answer came (the page then fell back to asking widget
    by widget and drew error boxes). The answer is made between two ticks."""
    manager, client = start_new_kernel(env=kernel_env)
    try:
        execute(client, MAKES_A_WIDGET_DURING_THE_ANSWER)
        states = ask_every_widget_state(client, timeout=30)
        assert states is not None, "no answer to the page's request for every widget's state"
        named = set(re.findall(r"IPY_MODEL_([0-9a-f]{32})", json.dumps(states)))
        assert named <= set(states), f"the answer names widgets it lacks: {named - set(states)}"
        said = execute(client, "print(made.wait(30), probe.armed)")
        assert said.split() == ["True", "False"]  # the tick made its widget after the answer
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
