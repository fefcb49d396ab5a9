"""The keeper: one process per home that holds every local run, all in one thread
(nbrunner.holding; the default on POSIX: README, How it works, says why).

The service hands a run over by writing runs/ID.spec and waking the keeper (a datagram to
the port in runs/keeper.json), or by starting it (`python -m nbrunner.keeper HOME`) when
runs/keeper.lock is free. The keeper takes each spec once (it renames the file to be the
run's journal before it starts the run, so no later keeper starts that run again), is
every run's parent and the subreaper of their orphans, reaps the orphans no run waits
for, and leaves once it has held nothing for IDLE_S. Killed, it costs every run it
holds: the service finds their locks free and no exits recorded, and they end `lost`.

A keeper lives as long as it holds runs, for days, across an upgrade of nbrunner: the
service of a newer version hands it runs too. So a spec only ever grows, each new field
with a default, and a keeper ignores the fields it does not know (RecorderSpec.from_json).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from contextlib import suppress
from pathlib import Path

from . import contact, platform
from .holding import Holder
from .recorder import KEEPER_INFO, KEEPER_LOCK, RecorderSpec, RunFiles, RunJournal, ServiceLink

IDLE_S = 10.0
PASS_S = 30.0  # a look at runs/ without a wake: a lost datagram delays a start this long


class Keeper:
    def __init__(self, home: str | Path) -> None:
        self.home = str(home)
        self.runs = Path(home) / "runs"
        self.holder = Holder(ServiceLink(contact.wake, contact.notify))
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.setblocking(False)
        self.holder.watch(self.socket, self._drain_wakes)
        self.woken, self.looked_at = True, 0.0  # runs/ is looked at when woken, or each pass

    def serve(self) -> int:
        lock = platform.take_lock(self.runs / KEEPER_LOCK)
        if lock is None:
            return 0  # another keeper holds this home's runs
        contact.announce(self.runs / KEEPER_INFO, self.socket)
        idle_since = time.monotonic()
        while True:
            if self.woken or time.monotonic() - self.looked_at >= PASS_S:
                self.woken, self.looked_at = False, time.monotonic()
                self._take_handed_runs()
                self.holder.tell_service()  # before it may leave: a spec it could not read
            idle_s = time.monotonic() - idle_since
            if self.holder.runs:
                idle_since, idle_s = time.monotonic(), 0.0
            elif not Path(self.home).is_dir():
                return 0  # a removed home has no runs to hold, nor anyone to tell
            elif idle_s > IDLE_S:
                os.close(lock)  # then a last look: a run handed over meanwhile keeps it here
                again = platform.take_lock(self.runs / KEEPER_LOCK) if self._handed() else None
                if again is None:
                    return 0
                lock, self.woken = again, True
            next_look = self.looked_at + PASS_S - time.monotonic()
            leave_in = next_look if self.holder.runs else IDLE_S - idle_s + 0.01
            self.holder.step(max(min(next_look, leave_in), 0.0))

    def _handed(self) -> list[Path]:
        """The specs waiting in runs/ (one scandir)."""
        try:
            with os.scandir(self.runs) as entries:
                names = [e.name for e in entries if e.name.endswith(".spec")]
        except OSError:  # runs/ removed: the next hand-over makes it again
            return []
        return [self.runs / name for name in names if name[: -len(".spec")].isdigit()]

    def _take_handed_runs(self) -> None:
        for path in self._handed():
            journal = RunJournal.take(path, RunFiles.of(self.home, int(path.stem)).lock)
            if journal is None:
                continue  # gone meanwhile
            try:
                spec = RecorderSpec.from_json(journal.spec())
            except (TypeError, ValueError) as exc:  # not JSON, or lacking a needed field
                reason = f"the keeper could not read the run's spec {path}: {exc}"
                self.holder.fail(self.home, journal, reason)
                continue
            if spec.run_id not in self.holder.runs:
                self.holder.hold(spec, journal)

    def _drain_wakes(self) -> None:
        self.woken = True
        with suppress(OSError):  # BlockingIOError once every datagram is read
            while self.socket.recv(64):
                pass


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return Keeper(args[0]).serve()


if __name__ == "__main__":
    sys.exit(main())
