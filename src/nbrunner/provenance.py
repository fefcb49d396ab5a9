"""Which code a run ran, captured as it starts (not when it was queued).

A run's `provenance` (in its record, `nbrunner show ID`, the dashboard's log tab):

- where its code lives (`code_path`: the script, the notebook, the module's package, a
  command's program or first argument when that is a file; none for a system command such
  as `make all`) and, when that is inside a git work tree: `git_root`, `git_commit`,
  `git_dirty` (uncommitted changes or untracked files), `git_untracked` (how many files
  git does not track), and for a dirty tree the digest of `git diff HEAD`
  (`git_diff_sha256`), the diff itself kept beside the log (`logs/ID.diff`);
- for Python runs, the interpreter (`python`), its version (`python_version`) and a digest
  of its installed packages (`packages_sha256`, over sorted `name==version` lines, and
  their count `packages`). Listing packages takes a second, so it is cached per
  interpreter and listed again only when a directory on its path changes (an install);
- for a restarted run, `code_changed`: how its code differs from the run it restarts.

The service captures it in a thread of its own after the run's recorder has started, so
launching is not slowed; the runs it finds started together share one look at git per
directory (a sweep launched at once asks git once); git never takes the index lock
(`GIT_OPTIONAL_LOCKS=0`), so a user's own git commands are never in its way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Any

from .errors import NbrunnerError
from .models import RunRecord
from .notebook import EXECUTOR

log = logging.getLogger("nbrunner.provenance")

TOOL_TIMEOUT_S = 30.0
CACHE_NAME = "interpreters.json"  # in the home: each interpreter's packages digest
WRITE_TRIES = 5
_INTERPRETER_SCRIPT = r"""
import importlib.metadata as m, json, os, sys
names = sorted({f"{d.metadata['Name']}=={d.version}".lower() for d in m.distributions()})
print(json.dumps({"version": sys.version.split()[0], "packages": names,
                  "paths": [p for p in sys.path if p and os.path.isdir(p)]}))
"""


# -- where the code is -------------------------------------------------------------------------
def is_python(argv: Sequence[str]) -> bool:
    """A run of `python -m MODULE` or `python SCRIPT.py` (a notebook's executor too)."""
    return (len(argv) >= 3 and argv[1] == "-m") or (len(argv) >= 2 and argv[1].endswith(".py"))


def code_path(
    argv: Sequence[str], cwd: str | None, env: Mapping[str, str], site: Sequence[str] = ()
) -> Path | None:
    """The file or directory holding a run's code: the notebook, the module's package, the
    script (for a command, its program or first argument, when that is a file); None for
    a command of the system (`make all`), whose code is not the project's. `site`: the
    interpreter's own path after PYTHONPATH, where installed packages are found."""
    base = Path(cwd or os.getcwd())
    if len(argv) >= 4 and argv[1:3] == ["-m", EXECUTOR]:
        return base / argv[3]  # the notebook
    if len(argv) >= 3 and argv[1] == "-m":
        return _module_path(argv[2], base, env, site) or base
    if len(argv) >= 2 and argv[1].endswith(".py"):
        return base / argv[1]
    program = argv[:1] if argv and not os.path.isabs(argv[0]) else []  # ./train.sh, not /bin/sh
    first = [a for a in argv[1:2] if not a.startswith("-")]  # sh train.sh, not python -c
    return next((base / a for a in [*program, *first] if (base / a).is_file()), None)


def _module_path(
    module: str, base: Path, env: Mapping[str, str], site: Sequence[str]
) -> Path | None:
    """Where `python -m module` finds its top package, on the run's path in its order
    (nothing imported)."""
    paths = [str(base), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep)), *site]
    spec = PathFinder.find_spec(module.split(".")[0], paths)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin) if spec.origin else None


# -- git ---------------------------------------------------------------------------------------
def _tool(argv: Sequence[str], where: Path | None = None, env: Any = None) -> bytes | None:
    """A helper program's stdout, None if it failed or is missing."""
    try:
        done = subprocess.run(
            list(argv),
            cwd=where,
            env=env,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=TOOL_TIMEOUT_S,
            check=False,
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),  # Windows: no console
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _git(directory: Path, *args: str) -> bytes | None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_OPTIONAL_LOCKS"] = "0"  # never take the index lock a user's git may want
    return _tool(["git", *args], directory, env)


def git_state(path: Path, diff_file: Path | None = None) -> dict[str, Any]:
    """Commit and dirtiness of the work tree holding path ({} outside one); the diff of a
    dirty tree goes to diff_file (when given), its digest into the result."""
    state, diff = look(_directory(path))
    if diff and diff_file is not None:
        diff_file.write_bytes(diff)
    return state


def _directory(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def look(directory: Path) -> tuple[dict[str, Any], bytes | None]:
    """The git state of the work tree holding directory, and its diff when it has one."""
    if not directory.is_dir():
        return {}, None
    root = _git(directory, "rev-parse", "--show-toplevel")
    if root is None:
        return {}, None
    commit = _git(directory, "rev-parse", "--verify", "-q", "HEAD") or b""  # "": no commit yet
    status = _git(directory, "status", "--porcelain", "--untracked-files=all") or b""
    lines = status.splitlines()
    state: dict[str, Any] = {
        "git_root": root.decode(errors="replace").strip(),
        "git_commit": commit.decode().strip(),
        "git_dirty": bool(lines),
        "git_untracked": sum(line.startswith(b"??") for line in lines),
        "git_diff_sha256": None,
    }
    diff = _git(directory, "diff", "HEAD", "--binary") if commit else None
    if diff:
        state["git_diff_sha256"] = hashlib.sha256(diff).hexdigest()
    return state, diff or None


class SharedLooks:
    """One look at git per directory for runs that started together (one batch): a sweep
    of 50 runs launched at once asks git once, not 50 times."""

    def __init__(self) -> None:
        self._seen: dict[Path, tuple[dict[str, Any], bytes | None]] = {}

    def state(self, path: Path, diff_file: Path | None = None) -> dict[str, Any]:
        directory = _directory(path)
        if directory not in self._seen:
            self._seen[directory] = look(directory)
        state, diff = self._seen[directory]
        if diff and diff_file is not None:
            diff_file.write_bytes(diff)
        return dict(state)


def code_changes(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> str | None:
    """How the code of `new` differs from `old` (commit, or uncommitted changes); None if
    it is the same, or either is unknown."""
    if not old or not new or "git_commit" not in old or "git_commit" not in new:
        return None
    if old["git_commit"] != new["git_commit"]:
        return f"commit {old['git_commit'][:12] or '(none)'} → {new['git_commit'][:12]}"
    if old.get("git_diff_sha256") != new.get("git_diff_sha256"):
        return "same commit, other uncommitted changes (diff digest differs)"
    return None


def code_now(provenance: Mapping[str, Any] | None) -> dict[str, Any]:
    """The git state now of the code a run ran (its recorded code_path); {} if unknown."""
    if not provenance or not provenance.get("code_path"):
        return {}
    return git_state(Path(provenance["code_path"]))


def provenance_lines(provenance: Mapping[str, Any] | None) -> list[str]:
    """A run's provenance as `nbrunner show` and the log tab print it."""
    if not provenance:
        return []
    lines = [f"code {provenance.get('code_path') or '(a command)'}"]
    if "git_commit" in provenance:
        state = "dirty" if provenance.get("git_dirty") else "clean"
        if provenance.get("git_untracked"):
            state += f", {provenance['git_untracked']} untracked files"
        if provenance.get("git_diff_sha256"):
            state += f", diff sha256 {provenance['git_diff_sha256'][:12]}"
        lines.append(f"git {provenance['git_commit'][:12] or '(no commit)'} ({state})")
    if "python_version" in provenance:
        lines.append(
            f"python {provenance['python']} {provenance['python_version']}, "
            f"{provenance['packages']} packages (sha256 {provenance['packages_sha256'][:12]})"
        )
    if provenance.get("code_changed"):
        lines.append(f"code changed since the run it restarts: {provenance['code_changed']}")
    return lines


# -- the interpreter ---------------------------------------------------------------------------
class Interpreters:
    """Version and packages digest per interpreter, cached in memory and in the home."""

    def __init__(self, home: Path) -> None:
        self.path = home / CACHE_NAME
        self._lock = threading.Lock()

    def facts(self, python: str, env: Mapping[str, str]) -> dict[str, Any] | None:
        """What the interpreter says of itself (version, packages, its path), or None if
        it could not say."""
        key = f"{os.path.realpath(python)}|{env.get('PYTHONPATH', '')}"
        with self._lock:
            cache = self._load()
            found = cache.get(key)
            if found is None or not _unchanged(found["paths"]):
                found = _describe(python, env)
                if found is None:
                    return None
                cache[key] = found
                self._save(cache)
        return found

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, cache: dict[str, Any]) -> None:
        temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
        with contextlib.suppress(OSError):
            temporary.write_text(json.dumps(cache))
            os.replace(temporary, self.path)


def _summary(python: str, found: dict[str, Any] | None) -> dict[str, Any]:
    if found is None:
        return {"python": python}
    return {
        "python": python,
        "python_version": found["version"],
        "packages": found["count"],
        "packages_sha256": found["sha256"],
    }


def _describe(python: str, env: Mapping[str, str]) -> dict[str, Any] | None:
    out = _tool([python, "-c", _INTERPRETER_SCRIPT], env=dict(env))
    try:
        data = json.loads(out or b"")
    except ValueError:
        return None
    listing = "\n".join(data["packages"]).encode()
    return {
        "version": data["version"],
        "count": len(data["packages"]),
        "sha256": hashlib.sha256(listing).hexdigest(),
        "paths": {p: _mtime(p) for p in data["paths"]},
    }


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _unchanged(paths: Mapping[str, int | None]) -> bool:
    """No directory on the interpreter's path changed (an install changes its directory)."""
    return all(_mtime(p) == mtime for p, mtime in paths.items())


# -- capturing ---------------------------------------------------------------------------------
def diff_path(log_path: str) -> Path:
    """A run's diff, beside its log: `logs/ID.log` → `logs/ID.diff`."""
    return Path(log_path).with_suffix(".diff")


def capture(
    record: RunRecord,
    env: Mapping[str, str],
    interpreters: Interpreters,
    git: Callable[[Path, Path], dict[str, Any]] = git_state,
) -> dict[str, Any]:
    """The provenance of a run starting now, with the environment it starts with."""
    python = interpreters.facts(record.argv[0], env) if is_python(record.argv) else None
    site = list(python["paths"]) if python else []
    where = code_path(record.argv, record.cwd, env, site)
    found: dict[str, Any] = {"code_path": where and str(where), "captured_at": time.time()}
    if where is not None:
        found |= git(where, diff_path(record.log_path))
    if is_python(record.argv):
        found |= _summary(record.argv[0], python)
    return found


class Capturer:
    """Captures each started run's provenance in one background thread and stores it."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.interpreters = Interpreters(Path(store.home))
        self._started: deque[tuple[RunRecord, dict[str, str]]] = deque()
        self._batch_due = False  # a batch is queued to the thread and has not begun yet
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="provenance")

    def started(self, record: RunRecord, env: Mapping[str, str]) -> None:
        """The run's recorder has started: its provenance is captured with the other runs
        started in this pass, once the pass hands them over (flush)."""
        if record.backend == "local":  # a Ray run's code is the cluster's copy
            self._started.append((record, dict(env)))

    def flush(self) -> None:
        """Hand the runs started so far to the thread: one wake of it per pass, not one
        per run (each wake costs the pass a switch of the interpreter's lock)."""
        if self._started and not self._batch_due:  # else the batch due takes them too
            self._batch_due = True
            self._pool.submit(self._capture_started)

    def _capture_started(self) -> None:
        """Every run started since the thread last looked: one batch, one look at git per
        directory, one write."""
        self._batch_due = False  # before the first look: a run added from now on is taken
        looks = SharedLooks()  # here, or by the batch its start queues
        captured: dict[int, dict[str, Any]] = {}
        while self._started:
            record, env = self._started.popleft()
            found = self._capture(record, env, looks)
            if found is not None:
                captured[record.id] = found
        if captured:
            self._write(captured)

    def _capture(
        self, record: RunRecord, env: dict[str, str], looks: SharedLooks
    ) -> dict[str, Any] | None:
        try:
            found = capture(record, env, self.interpreters, looks.state)
        except Exception:  # a run is never held up by what it is about
            log.exception("nbrunner service: run %s: provenance not captured", record.id)
            return None
        if record.restart_of is not None:
            with contextlib.suppress(NbrunnerError):  # the old run may have been removed
                old = self.store.get(record.restart_of).provenance
                found["code_changed"] = code_changes(old, found)
        return found

    def _write(self, captured: dict[int, dict[str, Any]]) -> None:
        for attempt in range(WRITE_TRIES):
            try:
                with self.store.write() as tx:
                    for run_id, found in captured.items():
                        tx.update(run_id, provenance=found)
                return
            except NbrunnerError:  # the store stayed locked: the next try may get it
                time.sleep(2**attempt)
        log.error("nbrunner service: runs %s: provenance could not be stored", sorted(captured))
