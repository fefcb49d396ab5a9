"""The real `nbrunner` command, run as a user would: a subprocess with `--home`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def cli(
    home: Path,
    *args: str,
    check: bool = True,
    timeout: float = 60,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`nbrunner ARGS --home HOME`; with check, a non-zero exit fails the test with stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "nbrunner", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def cli_json(home: Path, *args: str) -> Any:
    return json.loads(cli(home, *args, "--json").stdout)
