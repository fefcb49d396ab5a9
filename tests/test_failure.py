"""A failed run's reason says why: the exception, the signal, the crash code or the last words."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers.cli import cli, cli_json

from nbrunner.failure import (
    MAX_REASON,
    failure_reason,
    oom_kill_seen,
    parse_oom_kills,
    windows_crash,
)

TRACEBACK = """\
epoch 1 done
Traceback (most recent call last):
  File "train.py", line 9, in <module>
    fit(C=-1)
  File "train.py", line 5, in fit
    raise ValueError("The 'C' parameter must be > 0")
ValueError: The 'C' parameter must be > 0
"""

CHAINED = """\
Traceback (most recent call last):
  File "a.py", line 2, in <module>
    {}["k"]
KeyError: 'k'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "a.py", line 4, in <module>
    raise RuntimeError("config broken")
RuntimeError: config broken
"""


def test_python_final_exception_line() -> None:
    assert failure_reason(1, TRACEBACK) == "ValueError: The 'C' parameter must be > 0"
    noted = TRACEBACK + "second line of the message\nsee the docs\n"
    assert failure_reason(1, noted) == "ValueError: The 'C' parameter must be > 0"
    assert failure_reason(1, CHAINED) == "RuntimeError: config broken"


def test_else_the_last_printed_line_cut_to_length() -> None:
    assert failure_reason(3, "working\ndisk full\n\n") == "exited with code 3: disk full"
    long = failure_reason(3, "x" * 5000)
    assert len(long) == len("exited with code 3: ") + MAX_REASON and long.endswith("…")
    assert failure_reason(3, "") == "exited with code 3"


def test_signals_by_name_and_out_of_memory() -> None:
    assert failure_reason(-11, "") == "killed by signal SIGSEGV (segmentation fault)"
    assert failure_reason(-9, "step 3\n") == "killed by signal SIGKILL"
    assert failure_reason(-9, "", oom_killed=True) == "killed by signal SIGKILL — out of memory?"


def test_windows_crash_codes_decoded() -> None:
    assert windows_crash(0xC0000005) == "0xC0000005 access violation"
    assert windows_crash(-1073741819) == "0xC0000005 access violation"  # same bits, signed
    assert "stack buffer overrun" in failure_reason(0xC0000409, "")
    assert windows_crash(1) is None


def test_cuda_out_of_memory_is_named() -> None:
    tail = "RuntimeError: CUDA error: out of memory\nCUDA kernel errors might be asynchronously\n"
    assert failure_reason(1, tail).startswith("CUDA out of memory")
    torch = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    tail = f"{TRACEBACK.rsplit('ValueError', 1)[0]}{torch}\n"
    assert failure_reason(1, tail) == torch  # named already: not twice


def test_oom_kills_read_from_memory_events(tmp_path: Path) -> None:
    assert parse_oom_kills("low 0\nhigh 0\nmax 4\noom 2\noom_kill 1\n") == 1
    assert parse_oom_kills("low 0\n") == 0
    assert not oom_kill_seen(None, cgroup_root=tmp_path)  # nothing readable: no claim
    (tmp_path / "memory").mkdir()  # a container's own cgroup, mounted as the root (v1, v2)
    (tmp_path / "memory" / "memory.oom_control").write_text("oom_kill_disable 0\noom_kill 2\n")
    (tmp_path / "memory.events").write_text("oom 2\noom_kill 2\n")
    assert oom_kill_seen(None, cgroup_root=tmp_path)


def _modules(tmp_path: Path) -> Path:
    """Failing runs of every kind: a script, a -m module, -c, a shell, a signal."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "boom.py").write_text("import json\njson.loads('{nope')\n")
    (tmp_path / "script.py").write_text("def f():\n    raise KeyError('lr')\n\nf()\n")
    py = json.dumps(sys.executable)
    path = tmp_path / "modules.toml"
    path.write_text(
        f"""
[modules.script]
script = "script.py"
[modules.pkg]
python_module = "pkg.boom"
cwd = "{tmp_path}"
[modules.inline]
command = [{py}, "-c", "print('hi'); raise ValueError('bad lr\\\\nhint: try 1e-3')"]
[modules.shell]
command = ["sh", "-c", "echo working; echo 'disk full' >&2; exit 3"]
[modules.segv]
command = [{py}, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
"""
    )
    return path


@pytest.mark.parametrize(
    ("module", "reason"),
    [
        ("script", "KeyError: 'lr'"),
        ("pkg", "json.decoder.JSONDecodeError: Expecting property name enclosed in double quotes"),
        ("inline", "ValueError: bad lr"),
        ("shell", "exited with code 3: disk full"),
        ("segv", "killed by signal SIGSEGV (segmentation fault)"),
    ],
)
def test_a_real_failed_run_says_why(home: Path, tmp_path: Path, module: str, reason: str) -> None:
    modules = str(_modules(tmp_path))
    run_id = cli(home, "run", module, "--modules", modules).stdout.strip()
    waited = cli(home, "wait", run_id, "--modules", modules, check=False)
    assert waited.returncode == 1 and reason in waited.stdout
    assert cli_json(home, "show", run_id, "--modules", modules)["reason"].startswith(reason)
    assert reason in cli(home, "history", "--modules", modules, "--json").stdout
