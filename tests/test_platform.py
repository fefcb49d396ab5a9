"""Both branches of the platform seam: decisions are checked anywhere, calls where they run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
from helpers.procs import python, wait_until

from nbrunner import platform
from nbrunner.store import Store

POSIX_ONLY = pytest.mark.skipif(platform.IS_WINDOWS, reason="POSIX process groups")


def test_posix_children_lead_a_session_of_their_own() -> None:
    assert platform.child_popen_kwargs(windows=False) == {"start_new_session": True}


def test_windows_children_start_suspended_in_a_new_process_group() -> None:
    # suspended until they are in their job object (platform.contain), so nothing escapes it
    assert platform.child_popen_kwargs(windows=True) == {"creationflags": 0x200 | 0x4}


def test_windows_detaches_through_a_launcher_that_breaks_away() -> None:
    command, options = platform.detach_command(["prog", "a b"], windows=True)
    assert command[-2:] == ["prog", "a b"]  # passed on as words, never as one shell string
    flags = options["creationflags"]
    assert flags & 0x200 and flags & 0x08000000 and flags & 0x01000000
    assert not flags & 0x00000008  # no DETACHED_PROCESS: CTRL_BREAK needs a console


@POSIX_ONLY
def test_spawn_detached_leaves_no_parent_link_keeps_each_word_and_says_its_pid(
    tmp_path: Path,
) -> None:
    out = tmp_path / "ppid"
    code = (
        "import json, os, sys\n"
        "said = [os.getpid(), os.getppid(), os.getsid(0), sys.argv[1:]]\n"
        f"open({str(out)!r}, 'w').write(json.dumps(said))"
    )
    argv = [sys.executable, "-c", code, "a b", "$HOME"]
    started = platform.spawn_detached(argv, str(tmp_path / "err"))
    wait_until(lambda: out.exists() and out.read_text(), what="detached child to report")
    pid, ppid, sid, words = json.loads(out.read_text())
    assert started == pid  # what tells a service on its way from a dead one
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


@POSIX_ONLY
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


# -- Windows decisions, checked anywhere ---------------------------------------------------------
def test_windows_recorders_break_away_and_share_the_services_hidden_console() -> None:
    assert platform.RECORDER_FLAGS == 0x200 | 0x01000000  # group + breakaway
    assert not platform.RECORDER_FLAGS & 0x08000000  # a console of its own would stop CTRL_BREAK


class Refusing:
    """subprocess.Popen inside a job that forbids breaking away: WinError 5."""

    def __init__(self, always: bool = False) -> None:
        self.flags: list[int] = []
        self.always = always

    def __call__(self, argv: list[str], **options: object) -> str:
        flags = int(options.get("creationflags", 0))  # type: ignore[call-overload]
        self.flags.append(flags)
        if self.always or flags & platform.CREATE_BREAKAWAY_FROM_JOB:
            raise PermissionError(13, "Access is denied")
        return "started"


def test_a_job_that_forbids_breakaway_starts_the_process_inside_it_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    popen = Refusing()
    monkeypatch.setattr(subprocess, "Popen", popen)
    with pytest.warns(RuntimeWarning, match="forbids breaking away"):
        assert platform.popen_detached(["svc"], creationflags=platform.DETACHED_FLAGS) == "started"
    assert popen.flags == [platform.DETACHED_FLAGS, 0x200 | 0x08000000]
    monkeypatch.setattr(subprocess, "Popen", Refusing(always=True))
    with pytest.raises(PermissionError):  # refused for another reason: not hidden
        platform.popen_detached(["svc"], creationflags=0x200)


def test_a_runs_job_object_kills_on_close_and_backs_the_memory_limit() -> None:
    kill_on_close, job_memory = 0x2000, 0x200
    assert platform.job_limits(keep_leftovers=False, memory_limit=0) == (kill_on_close, 0)
    assert platform.job_limits(keep_leftovers=True, memory_limit=0) == (0, 0)
    assert platform.job_limits(False, 4 * 10**9) == (kill_on_close | job_memory, 5 * 10**9)
    assert platform.job_name(4242) == "Local\\nbrunner-run-4242"


@pytest.mark.skipif(sys.maxsize < 2**32, reason="the sizes of 64-bit Windows")
def test_the_job_object_structures_have_the_win64_layout() -> None:
    import ctypes

    assert ctypes.sizeof(platform.BasicLimits) == 64  # JOBOBJECT_BASIC_LIMIT_INFORMATION
    assert ctypes.sizeof(platform.IoCounters) == 48
    assert ctypes.sizeof(platform.ExtendedLimits) == 144  # JOBOBJECT_EXTENDED_LIMIT_INFORMATION
    assert platform.ExtendedLimits.JobMemoryLimit.offset == 120
    assert platform.ProcessIdList.ProcessIdList.offset == 8  # two DWORDs, then ULONG_PTRs


def test_windows_stops_politely_by_group_only_and_charges_private_bytes() -> None:
    assert platform.polite_per_process(windows=False) is True
    assert platform.polite_per_process(windows=True) is False  # TerminateProcess is a kill
    assert platform.memory_field(windows=False) == "rss"
    assert platform.memory_field(windows=True) == "private"  # the working set is trimmable


@pytest.mark.parametrize(
    ("line", "argv"),
    [
        (r"C:\tools\notify.exe run {id} done", [r"C:\tools\notify.exe", "run", "{id}", "done"]),
        (r'"C:\Program Files\n.exe" "a b"', [r"C:\Program Files\n.exe", "a b"]),
        (r'a\\\"b "c""d" \\server\share', ['a\\"b', 'c"d', r"\\server\share"]),
        (r'x "" y\\"z w"', ["x", "", r"y\z w"]),
        ('"unclosed quote', ["unclosed quote"]),
    ],
)
def test_a_command_line_splits_the_windows_way_on_windows(line: str, argv: list[str]) -> None:
    assert platform.split_command(line, windows=True) == argv


def test_windows_splitting_inverts_the_standard_quoting() -> None:
    argvs = [[r"C:\a b\c.exe", 'say "hi"', "tail\\", "", r"\\x\y\\", 'q\\"q', "%PATH%&^"]]
    for argv in argvs:
        assert platform.split_command(subprocess.list2cmdline(argv), windows=True) == argv


def test_a_command_line_splits_as_shell_words_on_posix() -> None:
    assert platform.split_command(r"notify-send 'run {id}' a\ b", windows=False) == [
        "notify-send", "run {id}", "a b",
    ]  # fmt: skip
    with pytest.raises(ValueError):
        platform.split_command("'unclosed", windows=False)


def test_on_done_as_a_toml_list_keeps_a_windows_path_whole(tmp_path: Path) -> None:
    from nbrunner.modules import load_modules_file

    path = tmp_path / "modules.toml"
    path.write_text(
        "[modules.m]\ncommand = ['prog']\non_done = ['C:\\tools\\notify.exe', 'run {id}']\n"
    )
    assert load_modules_file(path)["m"].on_done == (r"C:\tools\notify.exe", "run {id}")


ARGV_CHECK = "import json, os, sys; print(json.dumps([os.getcwd(), *sys.argv[1:]]))"


@pytest.mark.parametrize("windows", [False, True])
def test_a_shell_runs_argv_in_its_directory_whatever_the_arguments(
    tmp_path: Path, windows: bool
) -> None:
    """The command Ray's shell runs; the Windows one has nothing cmd.exe would interpret,
    so off Windows it is checked through sh, with its environment."""
    if platform.IS_WINDOWS and not windows:
        pytest.skip("a POSIX command line needs sh")
    argv = [sys.executable, "-c", ARGV_CHECK, "a b", "100%", "x&y|z", "'q'", '"dq"', "^", "$HOME"]
    directory = tmp_path / "dir with space"
    directory.mkdir()
    command, env = platform.shell_command(argv, str(directory), windows=windows)
    if windows:
        assert "&&" not in command and "cd " not in command and "'" not in command.split('"')[0]
        assert not set("%^&|<>") & set(command)
    out = subprocess.run(
        command, shell=True, capture_output=True, text=True, env={**os.environ, **env}
    )
    assert json.loads(out.stdout) == [str(directory), *argv[3:]], out.stderr


def test_files_of_ended_runs_are_swept_and_a_live_recorders_lock_is_kept(tmp_path: Path) -> None:
    from nbrunner.recorder import sweep_run_files

    runs = tmp_path / "runs"
    runs.mkdir()
    names = ["1.lock", "1.exit", "2.lock", "2.child", "3.exit.tmp", "7.lock", "notes.txt"]
    for name in names:
        (runs / name).write_text("{}")
    held = platform.try_lock(runs / "2.lock")  # a recorder on its way out
    try:
        sweep_run_files(tmp_path, active={7})
    finally:
        assert held is not None
        os.close(held)
    assert sorted(p.name for p in runs.iterdir()) == ["2.lock", "7.lock", "notes.txt"]


def test_a_liveness_check_never_takes_the_lock_it_looks_at(tmp_path: Path) -> None:
    """A taker (a starting service, a recorder) must never find a free lock taken by
    someone who only looked: the check runs flat out while the lock is taken 2000 times."""
    path = tmp_path / "service.lock"
    done = threading.Event()

    def look() -> None:
        while not done.is_set():
            platform.is_locked(path)

    looker = threading.Thread(target=look)
    looker.start()
    refused = 0
    try:
        for _ in range(2000):
            fd = platform.try_lock(path)
            refused += fd is None
            if fd is not None:
                os.close(fd)
    finally:
        done.set()
        looker.join()
    assert refused == 0 or not platform.OFD_LOCKS
    held = platform.take_lock(path)
    assert held is not None and platform.is_locked(path)
    os.close(held)


OLDER_RELEASE_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)  # how releases before OFD locks held a service or run lock
print("held", flush=True)
time.sleep(120)
"""


@pytest.mark.posix
def test_a_lock_held_the_way_an_older_release_holds_it_is_seen_and_never_doubled(
    tmp_path: Path,
) -> None:
    """After an upgrade the old service and its recorders go on holding flock locks: the
    new code must see them alive (no second service, no run taken for lost)."""
    path = tmp_path / "service.lock"
    older = subprocess.Popen(
        [sys.executable, "-c", OLDER_RELEASE_HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert older.stdout is not None and older.stdout.readline() == "held\n"
        assert platform.is_locked(path)
        assert platform.try_lock(path) is None
    finally:
        older.kill()
        older.wait()
    assert not platform.is_locked(path)
    ours = platform.try_lock(path)
    assert ours is not None
    try:  # and an older client, looking with flock, sees ours
        probe = subprocess.run(
            [sys.executable, "-c", "import fcntl, os, sys\n"
             "fd = os.open(sys.argv[1], os.O_RDWR)\n"
             "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept OSError:\n"
             "    sys.exit(3)", str(path)],
            timeout=30,
        )  # fmt: skip
        assert probe.returncode == 3
    finally:
        os.close(ours)


def test_a_lock_in_a_removed_folder_is_free_and_looking_creates_nothing(tmp_path: Path) -> None:
    gone = tmp_path / "gone" / "service.lock"
    assert not platform.is_locked(gone)
    assert not gone.parent.exists()


def test_recorders_started_as_interpreters_leave_the_services_group() -> None:
    assert platform.recorder_popen_kwargs(windows=True) == {"creationflags": 0x200 | 0x01000000}
    assert platform.recorder_popen_kwargs(windows=False) == {"start_new_session": True}


def test_a_childs_exit_comes_with_its_true_cpu_time_and_peak_memory() -> None:
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass"
    child = subprocess.Popen(python(busy))
    assert platform.wait_child(child, 0.0) is None  # still busy
    ended = platform.wait_child(child, None)
    assert ended is not None
    code, usage = ended
    assert code == 0 and child.returncode == 0
    assert usage["cpu_time"] >= 0.5 and usage["peak_rss"] > 1_000_000


@pytest.mark.skipif(not platform.IS_LINUX, reason="/proc")
def test_children_are_found_from_proc_where_the_kernel_lists_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kernels without CONFIG_PROC_CHILDREN: the parents read from /proc/PID/stat find this
    process's children, and not its grandchildren."""
    monkeypatch.setattr(platform, "_PROC_CHILDREN", False)
    shell = subprocess.Popen(["sh", "-c", "sleep 60 & wait"])
    try:
        wait_until(lambda: psutil.Process(shell.pid).children(), what="the grandchild")
        (grandchild,) = psutil.Process(shell.pid).children()
        found = platform.direct_children()
        assert shell.pid in found and grandchild.pid not in found
        assert os.getppid() not in found and os.getpid() not in found
    finally:
        with contextlib.suppress(psutil.Error):
            for process in psutil.Process(shell.pid).children():
                process.kill()
        shell.kill()
        shell.wait()


def test_a_holder_is_pinned_only_while_a_child_starts() -> None:
    """The child inherits the run's cores; the loop, which holds other runs, gets its own
    CPUs back."""
    from nbrunner.holding import _pinned

    before = platform.usable_cpus()
    with _pinned([before[-1]]):
        assert platform.usable_cpus() == (before[-1],)
    assert platform.usable_cpus() == before
