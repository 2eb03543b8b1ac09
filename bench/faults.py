"""Inject a scenario's faults into a running deployment while the driver drives it.

A :class:`FaultInjector` runs in a background thread of the bench process during one mode's
drive. It waits for the driver's first line (``{"event": "start", "t0_epoch": ...}`` in its log),
so a fault's ``at_s`` is on the same time axis as the request table, then fires each fault of that
mode at ``t0_epoch + at_s`` and records what it did::

    {"t_s", "kind", "target", "pid", "duration_s", "ended_t_s", ...extras}

``t_s`` is when the signal was actually sent (not the planned ``at_s``, kept as ``planned_t_s``);
``ended_t_s`` is when the fault was over from the service's side (its workers back, or the
SIGCONT of a pause); None if that never happened before the drive ended.

The timing, the records and the pauses are here; *what* is killed, restarted or paused, and when
it is whole again, is the deployment's own knowledge (its registered kind's ``kill_worker``,
``restart``, ``pause_targets``, ``broker_proc`` and ``kill_broker``; services/registry.py), so a
new engine brings its own fault behaviour. Kinds of fault:

* ``kill_worker``: SIGKILL one worker of the service.
* ``restart``: stop the service's worker pool with SIGTERM (graceful) and start it again after
  ``duration_s``.
* ``pause``: SIGSTOP the service's process groups for ``duration_s``, then SIGCONT. A stopped
  group is always continued, also when the drive ends early or the bench is interrupted.
* ``kill_broker`` (deployments with a broker): SIGKILL the embedded broker, start it again after
  ``duration_s`` on the same ports and log directory.
* ``pause_broker`` (deployments with a broker): SIGSTOP the broker's group for ``duration_s``,
  then SIGCONT.

While a broker fault is under way :attr:`FaultInjector.broker_planned` is set, so the bench's
broker watch (bench/brokerwatch.py) does not take the planned death for a crash.

Whatever is restarted is started by the same Supervisor (stopped by PID at the end) and its PID
replaces the old one in ``Deployment.service_pids`` in place, so the CPU sampler follows it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services import registry
from services.procs import Proc, Supervisor


class FaultInjector:
    def __init__(self, mode: str, faults, *, sup: Supervisor, dep, driver_log: Path,
                 say: Callable[[str], Any] = print, t0_timeout_s: float = 120.0):
        self.mode = mode
        self.faults = sorted((f for f in faults if mode in f.modes), key=lambda f: f.at_s)
        self.sup, self.dep = sup, dep
        self.driver_log = Path(driver_log)
        self.say = say
        self.t0_timeout_s = t0_timeout_s
        self.t0_epoch: float | None = None
        self.records: list[dict] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._stopped_groups: set[int] = set()
        self._lock = threading.Lock()
        self.broker_planned = threading.Event()   # set while a broker fault is under way
        self.cpu_groups: dict[str, list[int]] | None = None   # the CPU sampler's groups
        self.kind = registry.impl(mode)
        self._thread = threading.Thread(target=self._run, name=f"faults-{mode}", daemon=True)

    @classmethod
    def for_mode(cls, mode: str, scenario, **kw) -> FaultInjector:
        return cls(mode, getattr(scenario, "faults", ()) or (), **kw)

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> FaultInjector:
        if self.faults:
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> list[dict]:
        """Stop injecting (a pause in progress ends now), continue anything still stopped, and
        return the records (faults not yet fired are absent)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._continue_all()
        for msg in self.errors:
            self.records.append({"t_s": None, "kind": "error", "target": None, "error": msg})
        self.errors = []
        return self.records

    # -- timing ----------------------------------------------------------------------------------
    def rel(self) -> float:
        return round(time.time() - (self.t0_epoch or 0.0), 3)

    def _sleep(self, seconds: float) -> bool:
        """Sleep; True if stop was requested meanwhile."""
        return self._stop.wait(max(0.0, seconds))

    def _wait_t0(self) -> float | None:
        deadline = time.monotonic() + self.t0_timeout_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            t0 = driver_t0(self.driver_log)
            if t0 is not None:
                return t0
            self._stop.wait(0.05)
        return None

    def _run(self) -> None:
        try:
            self.t0_epoch = self._wait_t0()
            if self.t0_epoch is None:
                if not self._stop.is_set():
                    self.errors.append(f"no start line with t0_epoch in {self.driver_log} "
                                       f"after {self.t0_timeout_s:.0f}s: no fault injected")
                return
            for f in self.faults:
                if self._sleep(self.t0_epoch + f.at_s - time.time()):
                    return
                rec: dict[str, Any] = {"t_s": None, "kind": f.kind, "target": None, "pid": None,
                                       "duration_s": f.duration_s, "ended_t_s": None,
                                       "planned_t_s": f.at_s}
                self.records.append(rec)
                try:
                    getattr(self, f"_{f.kind}")(f, rec)
                except Exception as e:  # noqa: BLE001 — record it; the drive goes on
                    rec["error"] = f"{type(e).__name__}: {e}"
                self.say(f"[magenta]{self.mode}: fault {describe(rec)}[/]")
        except Exception as e:  # noqa: BLE001
            self.errors.append(f"fault injector failed: {type(e).__name__}: {e}")
        finally:
            self._continue_all()

    # -- what a deployment's fault operations may use (services/registry.py Kind) -------------
    def sleep(self, seconds: float) -> bool:
        return self._sleep(seconds)

    def stopping(self) -> bool:
        return self._stop.is_set()

    def replace_pid(self, old: int, new: int) -> None:
        """A restarted process takes the old one's place (the CPU sampler holds this list)."""
        pids = self.dep.service_pids
        with self._lock:
            if old in pids:
                pids[pids.index(old)] = new
            else:
                pids.append(new)

    def replace_in_group(self, group: str, old: int, new: int) -> None:
        pids = (self.cpu_groups or {}).get(group)
        if pids is not None:
            with self._lock:
                pids[:] = [new if p == old else p for p in pids]

    # -- kinds: what is signalled is the deployment's to say ----------------------------------
    def _kill_worker(self, f, rec: dict) -> None:
        self.kind.kill_worker(self, self.dep, f, rec)

    def _restart(self, f, rec: dict) -> None:
        self.kind.restart(self, self.dep, f, rec)

    def _pause(self, f, rec: dict, procs: list[Proc] | None = None) -> None:
        procs = self.kind.pause_targets(self, self.dep) if procs is None else procs
        if not procs:
            raise RuntimeError("no service process to pause")
        pgids = [p.pid for p in procs]       # each child leads its own process group
        for g in pgids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(g, signal.SIGSTOP)
                self._stopped_groups.add(g)
        rec.update(t_s=self.rel(), target="+".join(p.name for p in procs), pid=pgids[0],
                   pgids=pgids, signal="SIGSTOP")
        self._sleep(f.duration_s)
        self._continue_all()
        rec.update(ended_t_s=self.rel(), end_signal="SIGCONT")

    def _pause_broker(self, f, rec: dict) -> None:
        self._only_broker(f)
        self.broker_planned.set()
        try:
            self._pause(f, rec, [self.kind.broker_proc(self, self.dep)])
        finally:
            self.broker_planned.clear()

    def _kill_broker(self, f, rec: dict) -> None:
        self._only_broker(f)
        self.broker_planned.set()
        try:
            self.kind.kill_broker(self, self.dep, f, rec)
        finally:
            self.broker_planned.clear()

    def _only_broker(self, f) -> None:
        if not self.kind.uses_broker:
            raise RuntimeError(f"{f.kind} applies only to a deployment with a broker "
                               f"({self.mode} has none)")

    # -- helpers ---------------------------------------------------------------------------------
    def _continue_all(self) -> None:
        for g in list(self._stopped_groups):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(g, signal.SIGCONT)
            self._stopped_groups.discard(g)


# -- pure helpers ----------------------------------------------------------------------------------
def driver_t0(log_path: Path) -> float | None:
    """``t0_epoch`` of the driver's start line (``{"event": "start", ...}``) or None yet."""
    try:
        with open(log_path, "rb") as fh:
            for line in fh:
                line = line.strip()
                if not line.startswith(b"{"):
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and rec.get("event") == "start" and "t0_epoch" in rec:
                    return float(rec["t0_epoch"])
    except OSError:
        return None
    return None


def describe(rec: dict) -> str:
    """One line for the console."""
    if rec.get("error") and rec.get("t_s") is None:
        return f"{rec['kind']} failed: {rec['error']}"
    parts = [f"{rec['kind']} {rec.get('target')} pid {rec.get('pid')} at {rec.get('t_s')}s"]
    if rec.get("ended_t_s") is not None:
        parts.append(f"over at {rec['ended_t_s']}s")
    elif not rec.get("error"):
        parts.append("not over when the drive ended")
    if rec.get("error"):
        parts.append(f"error: {rec['error']}")
    return ", ".join(parts)
