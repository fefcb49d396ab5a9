"""Both branches of the platform seam: decisions are checked anywhere, calls where they run."""

from __future__ import annotations

import contextlib
import json
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


def test_windows_detaches_through_a_launcher_that_breaks_away() -> None:
    command, options = platform.detach_command(["prog", "a b"], windows=True)
    assert command[-2:] == ["prog", "a b"]  # passed on as words, never as one shell string
    flags = options["creationflags"]
    assert flags & 0x200 and flags & 0x08000000 and flags & 0x01000000
    assert not flags & 0x00000008  # no DETACHED_PROCESS: CTRL_BREAK needs a console


def test_spawn_detached_leaves_no_parent_link_and_keeps_each_word(tmp_path: Path) -> None:
    out = tmp_path / "ppid"
    code = (
        "import json, os, sys\n"
        f"open({str(out)!r}, 'w').write(json.dumps([os.getppid(), os.getsid(0), sys.argv[1:]]))"
    )
    platform.spawn_detached([sys.executable, "-c", code, "a b", "$HOME"], str(tmp_path / "err"))
    wait_until(lambda: out.exists() and out.read_text(), what="detached child to report")
    ppid, sid, words = json.loads(out.read_text())
    assert ppid != os.getpid() and sid != os.getsid(0)
    assert words == ["a b", "$HOME"]  # no shell read them


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
