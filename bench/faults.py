"""Inject a scenario's faults into a running deployment while the driver drives it.

A :class:`FaultInjector` runs in a background thread of the bench process during one mode's
drive. It waits for the driver's first line (``{"event": "start", "t0_epoch": ...}`` in its log),
so a fault's ``at_s`` is on the same time axis as the request table, then fires each fault of that
mode at ``t0_epoch + at_s`` and records what it did::

    {"t_s", "kind", "target", "pid", "duration_s", "ended_t_s", ...extras}

``t_s`` is when the signal was actually sent (not the planned ``at_s``, kept as ``planned_t_s``);
``ended_t_s`` is when the fault was over from the service's side: the killed or restarted
worker(s) back (REST: the respawned uWSGI worker has loaded the model; stream: every worker owns
its partitions again), or the SIGCONT of a pause; None if that never happened before the drive
ended.

Kinds (targets are found through the deployment's own Supervisor and PIDs, never by name):

* ``kill_worker``: SIGKILL one worker. REST: one child of the uWSGI master (the master respawns
  it). Stream: one Faust worker process; if it was the only one (nothing left to take over its
  partitions), it is started again after ``duration_s`` (0 = at once) with the launcher's own code
  (:func:`services.stream.launch.restart_worker`), like a process supervisor would. With several
  workers the survivors take its partitions over (a rebalance) and it stays down.
* ``restart``: stop the service's worker pool with SIGTERM (graceful) and start it again after
  ``duration_s``. Stream: every Faust worker. REST: the uWSGI master and its workers (nginx stays):
  uWSGI's own graceful reload (SIGHUP) hangs under the pyuwsgi wheel we ship (the master never
  re-executes), so the master is stopped and started again instead.
* ``pause``: SIGSTOP every service process group (REST: uWSGI and nginx; stream: the Faust
  workers) for ``duration_s``, then SIGCONT. A stopped group is always continued, also when the
  drive ends early or the bench is interrupted.
* ``kill_broker`` (stream only): SIGKILL the embedded Apache Kafka broker's process group, then
  after ``duration_s`` start it again with its own command line (:func:`services.broker.
  restart_broker`): the same ports, so every client reconnects to the bootstrap it had, and the
  same log directory, so what the broker acknowledged is still there. Over when it answers
  Metadata again and every Faust worker is alive (a worker that exited meanwhile is started
  again, like a process supervisor would; ``workers_restarted`` says which).
* ``pause_broker`` (stream only): SIGSTOP the broker's process group for ``duration_s``, then
  SIGCONT (Tansu too).

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

import psutil

from services.procs import Proc, Supervisor

#: How long a restarted part may take to be back before the fault is recorded as not ended.
READY_TIMEOUT_S = 60.0


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

    # -- targets ---------------------------------------------------------------------------------
    def _service_procs(self) -> list[Proc]:
        by_pid = {p.pid: p for p in self.sup.procs}
        return [by_pid[pid] for pid in self.dep.service_pids if pid in by_pid]

    def _stream_workers(self) -> list[Proc]:
        return [p for p in self._service_procs() if p.name.startswith("stream-worker")]

    def _uwsgi(self) -> Proc:
        for p in self._service_procs():
            if p.name == "rest-uwsgi":
                return p
        raise RuntimeError("no uWSGI master among the deployment's processes")

    def _broker(self) -> Proc:
        pid = (self.dep.broker or {}).get("pid")
        for p in self.sup.procs:
            if pid and p.pid == pid:
                return p
        raise RuntimeError("broker faults need the embedded broker the bench started "
                           "(none among the supervisor's processes)")

    def _replace_pid(self, old: int, new: int) -> None:
        pids = self.dep.service_pids          # the CPU sampler holds this very list
        with self._lock:
            if old in pids:
                pids[pids.index(old)] = new
            else:
                pids.append(new)

    # -- kinds -----------------------------------------------------------------------------------
    def _kill_worker(self, f, rec: dict) -> None:
        if self.mode == "rest":
            master = self._uwsgi()
            workers = uwsgi_workers(master.pid)
            if not workers:
                raise RuntimeError(f"the uWSGI master {master.pid} has no worker to kill")
            victim = workers[0]
            os.kill(victim, signal.SIGKILL)
            rec.update(t_s=self.rel(), target="uwsgi-worker", pid=victim, signal="SIGKILL",
                       master_pid=master.pid, restarted_by="uwsgi master (respawn)")
            new = self._wait_uwsgi_ready(master.pid, exclude={victim})
            if new:
                rec.update(ended_t_s=self.rel(), new_pid=new[0])
            return
        workers = [p for p in self._stream_workers() if p.alive()]
        if not workers:
            raise RuntimeError("no live stream worker to kill")
        victim = workers[0]
        os.kill(victim.pid, signal.SIGKILL)
        rec.update(t_s=self.rel(), target=victim.name, pid=victim.pid, signal="SIGKILL")
        with contextlib.suppress(Exception):
            victim.popen.wait(timeout=5)
        if len(workers) > 1:
            rec.update(restarted_by=None, note="other workers take its partitions over")
            rec["ended_t_s"] = rec["t_s"]
            return
        if self._sleep(f.duration_s):
            return
        self._restart_stream([victim], rec)

    def _restart(self, f, rec: dict) -> None:
        if self.mode == "rest":
            from services.rest.config import REPO_ROOT
            old = self._uwsgi()
            rec.update(t_s=self.rel(), target="uwsgi", pid=old.pid, signal="SIGTERM")
            self.sup.stop(old)
            rec["down_t_s"] = self.rel()
            if self._sleep(f.duration_s):
                return
            new = self.sup.start(old.name, old.argv, cwd=REPO_ROOT, cpus=old.cpus)
            self._replace_pid(old.pid, new.pid)
            rec.update(new_pid=new.pid, restarted_t_s=self.rel(), restarted_by="bench")
            if self._wait_uwsgi_ready(new.pid, exclude=set(), proc=new):
                rec["ended_t_s"] = self.rel()
            return
        workers = self._stream_workers()
        if not workers:
            raise RuntimeError("no stream worker to restart")
        rec.update(t_s=self.rel(), target="stream-workers", pid=workers[0].pid,
                   pids=[p.pid for p in workers], signal="SIGTERM")
        for p in workers:
            self.sup.stop(p)
        rec["down_t_s"] = self.rel()
        if self._sleep(f.duration_s):
            return
        self._restart_stream(workers, rec)

    def _pause(self, f, rec: dict, procs: list[Proc] | None = None) -> None:
        procs = self._service_procs() if procs is None else procs
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
        self._only_stream(f)
        self.broker_planned.set()
        try:
            self._pause(f, rec, [self._broker()])
        finally:
            self.broker_planned.clear()

    def _kill_broker(self, f, rec: dict) -> None:
        from services.broker import restart_broker

        self._only_stream(f)
        if (self.dep.broker or {}).get("name") != "kafka":
            raise RuntimeError("kill_broker needs Apache Kafka (Tansu keeps its log in memory: "
                               "a restart loses every message); run without BROKER=tansu")
        old = self._broker()
        self.broker_planned.set()
        try:
            os.killpg(old.pid, signal.SIGKILL)
            rec.update(t_s=self.rel(), target=old.name, pid=old.pid, signal="SIGKILL")
            with contextlib.suppress(Exception):
                old.popen.wait(timeout=10)
            if self._sleep(f.duration_s):
                return
            rec["restarted_t_s"] = self.rel()
            new = restart_broker(self.sup, old, self.dep.bootstrap, timeout_s=READY_TIMEOUT_S)
            self.dep.broker["pid"] = new.pid      # before the watch looks again
            self._replace_in_group("broker", old.pid, new.pid)
        finally:
            self.broker_planned.clear()
        rec.update(new_pid=new.pid, broker_ready_t_s=self.rel(), restarted_by="bench")
        dead = [p for p in self._stream_workers() if not p.alive()]
        if dead:
            self._restart_stream(dead, rec)
            rec["workers_restarted"] = [p.name for p in dead]
        else:
            rec["ended_t_s"] = rec["broker_ready_t_s"]

    def _only_stream(self, f) -> None:
        if self.mode != "stream":
            raise RuntimeError(f"{f.kind} applies to the stream only (REST has no broker)")

    def _replace_in_group(self, group: str, old: int, new: int) -> None:
        pids = (self.cpu_groups or {}).get(group)
        if pids is not None:
            with self._lock:
                pids[:] = [new if p == old else p for p in pids]

    # -- helpers ---------------------------------------------------------------------------------
    def _continue_all(self) -> None:
        for g in list(self._stopped_groups):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(g, signal.SIGCONT)
            self._stopped_groups.discard(g)

    def _restart_stream(self, old: list[Proc], rec: dict) -> None:
        from services.stream import launch

        new = []
        for p in old:
            n = launch.restart_worker(self.sup, p)
            self._replace_pid(p.pid, n.pid)
            new.append(n)
        rec.update(new_pid=new[0].pid, new_pids=[n.pid for n in new],
                   restarted_t_s=self.rel(), restarted_by="bench")
        partitions = int((self.dep.settings or {}).get("partitions") or 0)
        datadirs = [launch.worker_datadir(p) for p in self._stream_workers()]
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._stop.is_set() and time.monotonic() < deadline:
            if any(not p.alive() for p in new):
                rec["error"] = "a restarted worker exited; see its log"
                return
            ok, _ = launch.group_complete(launch.assignments(datadirs), partitions)
            if ok:
                rec["ended_t_s"] = self.rel()
                return
            self._stop.wait(0.1)

    def _wait_uwsgi_ready(self, master_pid: int, exclude: set[int],
                          proc: Proc | None = None) -> list[int]:
        """Wait until the master has a worker not in ``exclude`` that has loaded the model."""
        ready_dir = uwsgi_ready_dir(proc.argv if proc else self._uwsgi().argv)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._stop.is_set() and time.monotonic() < deadline:
            fresh = [w for w in uwsgi_workers(master_pid) if w not in exclude]
            if fresh and (ready_dir is None or all((ready_dir / str(w)).exists() for w in fresh)):
                return fresh
            self._stop.wait(0.05)
        return []


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


def uwsgi_workers(master_pid: int) -> list[int]:
    """PIDs of the uWSGI master's children (its workers), sorted."""
    try:
        return sorted(c.pid for c in psutil.Process(master_pid).children())
    except psutil.Error:
        return []


def uwsgi_ready_dir(argv: list[str]) -> Path | None:
    """The folder where each uWSGI worker leaves a marker named after its PID once the model is
    loaded (``RVS_REST_READY_DIR`` in the rendered ini)."""
    try:
        ini = Path(argv[argv.index("--ini") + 1])
        for line in ini.read_text().splitlines():
            k, _, v = line.partition("=")
            if k.strip() == "env" and v.strip().startswith("RVS_REST_READY_DIR="):
                return Path(v.strip().split("=", 1)[1])
    except (ValueError, IndexError, OSError):
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
