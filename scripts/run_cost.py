"""What holding runs costs on this machine, printed for the CI log (the Windows job runs it,
where the figure cannot be measured anywhere else): `python scripts/run_cost.py [N]`.

N sleeping runs are started in a fresh home, once per way of holding them that this OS
has (a recorder per run; the keeper); then the processes nbrunner keeps beside the
children are counted, with their private memory (USS: private bytes on Windows) and the
CPU they spent starting and holding the runs, from psutil.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import psutil

from nbrunner import Runner, RunStatus, contact
from nbrunner.recorder import RECORDER_ENV

SLEEP = [sys.executable, "-c", "import time; time.sleep(600)"]


def holders(home: Path, children: list[int]) -> list[psutil.Process]:
    """The home's service and whatever holds the children (their parents), once each."""
    pids = {(contact.info(home) or {}).get("pid")}
    for pid in children:
        try:
            pids.add(psutil.Process(pid).ppid())
        except psutil.Error:
            continue
    return [psutil.Process(pid) for pid in pids if pid and psutil.pid_exists(pid)]


def measure(count: int, recorder: str) -> str:
    os.environ[RECORDER_ENV] = recorder
    with tempfile.TemporaryDirectory(prefix="nbrunner-cost-") as folder:
        home = Path(folder)
        with Runner(home) as runner:
            runner.config("max_concurrent", count)
            runner.register("sleeps", command=SLEEP)
            runs = [runner.submit("sleeps") for _ in range(count)]
            deadline = time.monotonic() + 300
            while any(run.status is not RunStatus.RUNNING for run in runs):
                if time.monotonic() > deadline:
                    raise SystemExit(f"{recorder}: the runs did not all start")
                time.sleep(0.1)
            held = holders(home, [run.record.pid or 0 for run in runs])
            cpu = sum(sum(p.cpu_times()[:2]) for p in held)
            private = sum(p.memory_full_info().uss for p in held) / 2**20
            for run in runs:
                run.cancel()
            for run in runs:
                run.wait(timeout=120)
        contact.stop(home)
    return (
        f"{recorder:>7}: {count} runs held by {len(held)} processes, {private:.1f} MB private "
        f"({private / count:.2f} MB per run), {1000 * cpu / count:.0f} ms CPU per run started"
    )


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    ways = ["spawn", "keeper"] if sys.platform == "win32" else ["fork", "spawn", "keeper"]
    print(f"nbrunner run cost on {sys.platform}, Python {sys.version.split()[0]}:")
    for way in ways:
        print(measure(count, way), flush=True)


if __name__ == "__main__":
    main()
