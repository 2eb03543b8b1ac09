"""Watch the embedded broker while a stream drive runs: a broker that dies on its own ends the
drive at once, with one line that names the cause, instead of a minute of produce errors that
look like a slow service.

The driver is stopped with SIGTERM, so it still writes its request table and driver.json
(marked interrupted); the bench then fails the phase with :meth:`BrokerDeath.line` and keeps
the run folder, marked incomplete. A planned broker fault (bench/faults.py) sets ``planned``
while the broker is meant to be down, and replaces ``dep.broker["pid"]`` when it restarts it.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.procs import Proc, Supervisor


@dataclass(frozen=True)
class BrokerDeath:
    name: str
    pid: int
    returncode: int | None
    at_epoch: float
    log: Path

    def line(self) -> str:
        rc = self.returncode
        how = (f"killed by signal {signal.Signals(-rc).name}" if rc is not None and rc < 0
               else f"exit code {rc}")
        return (f"the embedded broker {self.name} (pid {self.pid}) died during the drive "
                f"({how}); the drive was stopped and the run kept as incomplete. Look at the "
                f"broker's log {self.log} (out of memory, disk full, killed from outside?), "
                f"then run the scenario again")


class BrokerWatch:
    def __init__(self, sup: Supervisor, dep, *, on_death: Callable[[BrokerDeath], None],
                 planned: threading.Event | None = None, interval_s: float = 0.2):
        self.sup, self.dep = sup, dep
        self.on_death = on_death
        self.planned = planned or threading.Event()
        self.interval_s = interval_s
        self.death: BrokerDeath | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broker-watch", daemon=True)

    def start(self) -> BrokerWatch:
        if (self.dep.broker or {}).get("pid"):
            self._thread.start()
        return self

    def stop(self) -> BrokerDeath | None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        return self.death

    def _current(self) -> tuple[int | None, Proc | None]:
        pid = (self.dep.broker or {}).get("pid")
        return pid, next((p for p in self.sup.procs if p.pid == pid), None)

    def _run(self) -> None:
        last: Proc | None = None             # a broker that failed to restart is gone from sup
        while not self._stop.wait(self.interval_s):
            if self.planned.is_set():
                continue
            pid, proc = self._current()
            if proc is not None:
                last = proc
                if proc.alive():
                    continue
            if last is None or self.planned.is_set() or self._current()[0] != pid:
                continue                     # a planned fault began or restarted it meanwhile
            self.death = BrokerDeath(last.name, last.pid, last.popen.poll(), time.time(),
                                     last.log_path)
            self.on_death(self.death)
            return
