"""Both branches of the platform seam: decisions are checked anywhere, calls where they run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.procs import wait_until

from nbrunner import platform
from nbrunner.store import Store


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


def test_signalling_a_group_that_is_gone_is_harmless() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    proc.wait()
    platform.signal_group(proc.pid, graceful=True)
    platform.signal_group(proc.pid, graceful=False)
    platform.suspend_group(proc.pid, pause=True)


def cgroup_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_cgroup_v2_quota_is_the_tightest_of_the_cgroup_and_its_ancestors(tmp_path: Path) -> None:
    root = cgroup_tree(
        tmp_path,
        {
            "cpu.max": "max 100000\n",
            "user.slice/cpu.max": "300000 100000\n",
            "user.slice/job/cpu.max": "150000 100000\n",
        },
    )
    assert platform.cgroup_cpu_limit(root, "0::/user.slice/job\n") == 1.5
    assert platform.cgroup_cpu_limit(root, "0::/\n") is None  # "max": no quota
    assert platform.cgroup_cpu_limit(root, "0::/elsewhere\n") is None


def test_a_cgroup_v1_quota_is_read_from_the_cpu_controller(tmp_path: Path) -> None:
    root = cgroup_tree(
        tmp_path,
        {
            "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "200000\n",
            "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
            "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
            "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        },
    )
    membership = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n"
    assert platform.cgroup_cpu_limit(root, membership) == 2.0
    # a container's mount is its own cgroup, whatever path the host gave it
    container = cgroup_tree(
        tmp_path / "container",
        {"cpu,cpuacct/cpu.cfs_quota_us": "50000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
    )
    assert platform.cgroup_cpu_limit(container, membership) == 0.5
    assert platform.cgroup_cpu_limit(tmp_path / "none", membership) is None


@pytest.mark.skipif(shutil.which("taskset") is None or (os.cpu_count() or 1) < 2, reason="taskset")
def test_capacity_is_the_cpus_this_process_may_use_under_taskset() -> None:
    code = (
        "from nbrunner.resources import machine_capacity as m; c = m(with_gpus=False); "
        "print(c.cpus, list(c.usable_cores))"
    )
    out = subprocess.run(
        ["taskset", "-c", "1", sys.executable, "-c", code], capture_output=True, text=True
    )
    assert out.stdout.split(maxsplit=1) == ["1", "[1]\n"], out.stderr


@pytest.mark.skipif(shutil.which("taskset") is None or (os.cpu_count() or 1) < 2, reason="taskset")
def test_a_pinned_run_lands_on_a_cpu_its_service_may_use(home: Path) -> None:
    show = "import os; print(sorted(os.sched_getaffinity(0)))"
    (home / "modules.toml").write_text(
        f"[modules.pinned]\ncommand = {json.dumps([sys.executable, '-c', show])}\n"
        "[modules.pinned.resources]\ncpus = 1\npin = true\n"
    )
    nbrunner = [sys.executable, "-m", "nbrunner", "--home", str(home)]
    started = subprocess.run(  # the service this starts inherits the affinity
        ["taskset", "-c", "1", *nbrunner, "run", "pinned", "--wait"], capture_output=True, text=True
    )
    assert started.returncode == 0, started.stderr
    record = Store(home).get(int(started.stdout.split()[0]))
    assert record.cores == [1] and Path(record.log_path).read_text() == "[1]\n"
