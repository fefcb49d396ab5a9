"""Both branches of the platform seam: decisions are checked anywhere, calls where they run."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import psutil
from helpers.procs import python, wait_until

from nbrunner import platform


def test_posix_children_lead_a_session_of_their_own() -> None:
    assert platform.child_popen_kwargs(windows=False) == {"start_new_session": True}


def test_windows_children_get_a_new_process_group() -> None:
    assert platform.child_popen_kwargs(windows=True) == {"creationflags": 0x200}


def test_posix_detaches_through_a_shell_that_backgrounds_and_exits() -> None:
    command, options = platform.detach_command(["prog", "a b"], windows=False)
    assert command == ["/bin/sh", "-c", '"$@" &', "sh", "prog", "a b"]
    assert options == {"start_new_session": True, "close_fds": True}


def test_windows_detaches_through_a_launcher_that_breaks_away() -> None:
    command, options = platform.detach_command(["prog", "a b"], windows=True)
    assert command == [sys.executable, "-m", "nbrunner.platform", "prog", "a b"]
    flags = options["creationflags"]
    assert flags & 0x200 and flags & 0x08000000 and flags & 0x01000000
    assert not flags & 0x00000008  # no DETACHED_PROCESS: CTRL_BREAK needs a console


def test_spawn_detached_leaves_no_parent_link(tmp_path: Path) -> None:
    out = tmp_path / "ppid"
    code = f"import os; open({str(out)!r}, 'w').write(f'{{os.getppid()}} {{os.getsid(0)}}')"
    platform.spawn_detached([sys.executable, "-c", code], str(tmp_path / "err"))
    wait_until(lambda: out.exists() and out.read_text(), what="detached child to report")
    ppid, sid = map(int, out.read_text().split())
    assert ppid != os.getpid() and sid != os.getsid(0)


# A caller that signals a group which has ended, beside a process in its own group and one
# in a session of its own: it must neither raise nor touch either of them.
SIGNAL_A_GONE_GROUP = """
import subprocess, sys
from nbrunner import platform
sleep = [sys.executable, "-c", "import time; time.sleep(300)"]
gone = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
gone.wait()
mine = subprocess.Popen(sleep, stdout=subprocess.DEVNULL)
other = subprocess.Popen(sleep, stdout=subprocess.DEVNULL, start_new_session=True)
print(mine.pid, other.pid, flush=True)
platform.suspend_group(gone.pid, pause=True)
platform.signal_group(gone.pid, graceful=True)
platform.signal_group(gone.pid, graceful=False)
"""


def test_signalling_a_group_that_is_gone_is_harmless() -> None:
    caller = subprocess.Popen(
        python(SIGNAL_A_GONE_GROUP), stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert caller.stdout is not None
    bystanders = [psutil.Process(int(pid)) for pid in caller.stdout.readline().split()]
    try:
        assert caller.wait(timeout=30) == 0
        statuses = [p.status() for p in bystanders]  # a killed one is a zombie, or gone
        assert not {psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE} & set(statuses), statuses
    finally:
        caller.kill()
        caller.wait()
        for bystander in bystanders:
            with contextlib.suppress(psutil.NoSuchProcess):
                bystander.kill()
