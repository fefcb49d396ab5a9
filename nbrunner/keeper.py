"""The keeper: one process per home that holds every local run, each in a thread running
the recorder's own `record()` (the default on POSIX; README, How it works, says why).

The service hands a run over by writing runs/ID.spec and waking the keeper (a datagram to
the port in runs/keeper.json), or by starting it (`python -m nbrunner.keeper HOME`) when
runs/keeper.lock is free. The keeper takes each spec once (it removes the file as it
starts the run's thread, so no later keeper starts that run again), is every run's parent
and the subreaper of their orphans, reaps the orphans no thread waits for, and leaves once
it has held nothing for IDLE_S. Killed, it costs every run it holds: the service finds
their locks free and no exit files, and they end `lost`.

A keeper lives as long as it holds runs, for days, across an upgrade of nbrunner: the
service of a newer version hands it runs too. So a spec only ever grows, each new field
with a default, and a keeper ignores the fields it does not know (RecorderSpec.from_json).
"""

from __future__ import annotations

import os
import select
import socket
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path

from . import contact, platform
from .recorder import (
    KEEPER_INFO,
    KEEPER_LOCK,
    Children,
    RecorderSpec,
    RunFiles,
    ServiceLink,
    record,
    record_failure,
)

IDLE_S = 10.0
PASS_S = 30.0  # a look at runs/ without a wake: a lost datagram delays a start this long


class Keeper:
    def __init__(self, home: str | Path) -> None:
        self.home = str(home)
        self.runs = Path(home) / "runs"
        self.children = Children()
        self.holding: set[int] = set()  # runs whose thread has not ended
        self.link = ServiceLink(contact.wake, contact.notify)
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.setblocking(False)

    def serve(self) -> int:
        lock = platform.take_lock(self.runs / KEEPER_LOCK)
        if lock is None:
            return 0  # another keeper holds this home's runs
        platform.become_subreaper()
        contact.announce(self.runs / KEEPER_INFO, self.socket)
        idle_since = time.monotonic()
        while True:
            self._take_handed_runs()
            self.children.reap_orphans()
            if self.holding:
                idle_since = time.monotonic()
            elif not Path(self.home).is_dir():
                return 0  # a removed home has no runs to hold, nor anyone to tell
            elif time.monotonic() - idle_since > IDLE_S:
                os.close(lock)  # then a last look: a run handed over meanwhile keeps it here
                again = platform.take_lock(self.runs / KEEPER_LOCK) if self._handed() else None
                if again is None:
                    return 0
                lock = again
            self._sleep()

    def _handed(self) -> list[Path]:
        """The specs waiting in runs/ (looked for on every pass: one scandir)."""
        try:
            with os.scandir(self.runs) as entries:
                names = [e.name for e in entries if e.name.endswith(".spec")]
        except OSError:  # runs/ removed: the next hand-over makes it again
            return []
        return [self.runs / name for name in names if name[: -len(".spec")].isdigit()]

    def _take_handed_runs(self) -> None:
        for path in self._handed():
            files = RunFiles.of(self.home, int(path.stem))
            found = files.read(path)
            with suppress(OSError):
                path.unlink()  # taken: whatever happens to this keeper, it starts once
            try:
                spec = RecorderSpec.from_json(found or {})
            except TypeError as exc:  # unreadable, or lacking a field this keeper needs
                reason = f"the keeper could not read the run's spec {path}: {exc}"
                record_failure(self.home, files.run_id, self.link, reason)
                continue
            self.holding.add(files.run_id)
            threading.Thread(target=self._hold, args=(spec,), daemon=True).start()

    def _hold(self, spec: RecorderSpec) -> None:
        try:
            record(spec, self.link, shared=self.children)
        except Exception as exc:  # one run's failure must not end the others
            print(f"nbrunner keeper: run {spec.run_id}: {exc!r}", file=sys.stderr, flush=True)
            reason = f"the keeper could not hold the run: {exc!r}"
            record_failure(spec.home, spec.run_id, self.link, reason)
        finally:  # the loop looks again: at its idle time, at a removed home
            self.holding.discard(spec.run_id)
            with suppress(OSError):
                self.socket.sendto(b"w", self.socket.getsockname())

    def _sleep(self) -> None:
        if select.select([self.socket], [], [], PASS_S)[0]:
            with suppress(OSError):  # BlockingIOError once every datagram is read
                while self.socket.recv(64):
                    pass


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return Keeper(args[0]).serve()


if __name__ == "__main__":
    sys.exit(main())
