"""Runs outlive the Jupyter kernel that started them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

from nbrunner import Runner

SUBMIT = """
import sys
from nbrunner import Runner
runner = Runner()
runner.register("exit3", command=[sys.executable, "-c",
    "import time\\nfor i in range(30):\\n    print('three', i, flush=True); time.sleep(0.1)\\n"
    "raise SystemExit(3)"])
ok = runner.submit("count", {"n": 30, "delay": 0.1, "label": "zero"})
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


def test_runs_survive_kernel_shutdown_and_a_new_kernel_sees_them(kernel_env, home) -> None:
    manager, client = start_new_kernel(env=kernel_env)
    try:
        ok_id, bad_id = map(int, execute(client, SUBMIT).split())
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)  # its whole process group goes with it
    assert not manager.is_alive()
    with Runner(home) as runner:
        assert not runner.get(ok_id).record.is_done  # accepted, and going on without it
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
