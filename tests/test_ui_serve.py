"""`nbrunner dashboard`: how Voila is started (the browser tests start it for real)."""

from __future__ import annotations

import json
from importlib import resources as package_files
from pathlib import Path

import pytest

from nbrunner.cli import main
from nbrunner.errors import BadInput
from nbrunner.ui.serve import NOTEBOOK, is_loopback, untracked_messages, voila_command

NB = Path("dashboard.ipynb")


def test_localhost_needs_no_token_and_kernels_are_culled() -> None:
    command = voila_command(8866, "127.0.0.1", False, None, NB)
    assert "--Voila.ip=127.0.0.1" in command
    assert "--Voila.open_browser=False" in command
    assert any(a.startswith("--MappingKernelManager.cull_idle_timeout=") for a in command)
    assert any(a.startswith("--MappingKernelManager.cull_interval=") for a in command)
    assert not any(a.startswith("--Voila.token") for a in command)


@pytest.mark.parametrize("ip", ["0.0.0.0", "192.168.1.20", "::", "example.org"])
def test_another_address_is_refused_without_a_token(ip: str) -> None:
    with pytest.raises(BadInput, match="without a token"):
        voila_command(8866, ip, False, None, NB)
    assert "--Voila.token=s3cret" in voila_command(8866, ip, True, "s3cret", NB)


def test_cli_says_why_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["dashboard", "--home", str(tmp_path), "--ip", "0.0.0.0", "--no-browser"])
    assert code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--token" in error


def test_loopback_addresses() -> None:
    assert all(is_loopback(ip) for ip in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))


def test_widget_traffic_does_not_keep_an_orphaned_kernel_alive() -> None:
    untracked = untracked_messages()
    assert {"comm_msg", "comm_open", "comm_close", "status"} <= set(untracked)


def test_the_packaged_notebook_builds_the_dashboard_from_the_environment() -> None:
    notebook = package_files.files("nbrunner.ui") / NOTEBOOK
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    source = "".join(cells[-1]["source"])
    assert "Runner().dashboard()" in source
