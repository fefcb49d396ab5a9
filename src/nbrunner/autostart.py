"""Starting a home's service at login, so queued runs go on after a reboot.

`nbrunner service install` registers the home's service with the system: a systemd user
unit on Linux (`~/.config/systemd/user/nbrunner-HASH.service`, enabled with `systemctl
--user enable` where systemctl answers), a Task Scheduler logon task on Windows (`schtasks
/Create /SC ONLOGON`). At login the service starts, marks what the reboot killed `lost`
(requeueing runs that ask for it, see nbrunner.retry), starts what is queued, and exits once
idle as always. `uninstall` removes exactly what `install` wrote.

The unit's KillMode is `process`: when the service exits (idle, or handing over to a newer
nbrunner) systemd must not stop the runs it started, which live on without it. The unit
text and the schtasks argv are plain functions, tested on any machine; only Windows can run
schtasks.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

from .errors import OperationFailed

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def task_name(home: Path) -> str:
    """One name per home, so several homes each get their own unit or task."""
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:10]
    return f"nbrunner-{digest}"


def service_argv(home: Path, python: str = sys.executable, windows: bool = False) -> list[str]:
    """The command that serves the home; on Windows the console-less pythonw beside python."""
    if windows and PureWindowsPath(python).name.lower() == "python.exe":
        python = str(PureWindowsPath(python).with_name("pythonw.exe"))
    return [python, "-m", "nbrunner.service", str(home.resolve())]


def systemd_quote(word: str) -> str:
    """A word as systemd's ExecStart reads it: double-quoted, with \\, " and % escaped."""
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped}"'


def systemd_unit(home: Path, python: str = sys.executable) -> str:
    exec_start = " ".join(systemd_quote(w) for w in service_argv(home, python))
    return (
        "[Unit]\n"
        f"Description=nbrunner service for {home.resolve()}\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={exec_start}\n"
        "# runs outlive the service (it exits when idle): never stop them with it\n"
        "KillMode=process\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def unit_path(home: Path, environ: dict[str, str] | None = None) -> Path:
    """Where the user unit goes: $XDG_CONFIG_HOME/systemd/user (default ~/.config)."""
    env = os.environ if environ is None else environ
    config = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config, "systemd", "user", f"{task_name(home)}.service")


def schtasks_create_argv(home: Path, python: str = sys.executable) -> list[str]:
    """Task Scheduler: start the home's service at this user's logon."""
    command = " ".join(f'"{w}"' for w in service_argv(home, python, windows=True))
    return ["schtasks", "/Create", "/SC", "ONLOGON", "/TN", task_name(home), "/TR", command, "/F"]


def schtasks_delete_argv(home: Path) -> list[str]:
    return ["schtasks", "/Delete", "/TN", task_name(home), "/F"]


@dataclass(frozen=True)
class Outcome:
    """What install or uninstall did, in a line for the user."""

    where: str
    message: str


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


def install(home: Path, *, windows: bool = sys.platform == "win32", run: Runner = _run) -> Outcome:
    if windows:
        result = run(schtasks_create_argv(home))
        if result.returncode:
            raise OperationFailed(f"schtasks could not create the logon task: {result.stderr}")
        return Outcome(task_name(home), f"task {task_name(home)} starts the service at logon")
    path = unit_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(systemd_unit(home))
    if not shutil.which("systemctl"):
        return Outcome(str(path), f"wrote {path}; no systemctl here: enable it by hand")
    run(["systemctl", "--user", "daemon-reload"])
    enabled = run(["systemctl", "--user", "enable", path.name])
    if enabled.returncode:
        why = (enabled.stderr or enabled.stdout).strip().splitlines()[-1:] or ["no reason"]
        return Outcome(str(path), f"wrote {path}; systemctl --user enable failed: {why[0]}")
    return Outcome(str(path), f"wrote and enabled {path}: the service starts at login")


def uninstall(
    home: Path, *, windows: bool = sys.platform == "win32", run: Runner = _run
) -> Outcome:
    if windows:
        result = run(schtasks_delete_argv(home))
        if result.returncode:
            raise OperationFailed(f"schtasks could not delete the logon task: {result.stderr}")
        return Outcome(task_name(home), f"removed task {task_name(home)}")
    path = unit_path(home)
    if shutil.which("systemctl"):
        run(["systemctl", "--user", "disable", path.name])
    existed = path.exists()
    path.unlink(missing_ok=True)
    if shutil.which("systemctl"):
        run(["systemctl", "--user", "daemon-reload"])
    return Outcome(str(path), f"removed {path}" if existed else f"nothing installed at {path}")
