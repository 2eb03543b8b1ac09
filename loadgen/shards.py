"""``loadgen drive rest`` over several driver cores: K shard processes, one schedule, one table.

One Python process sends a few thousand requests/s at most (one core, the GIL), so when the
driver may use several cores the planned schedule is spread over K processes the way Locust's
own distributed mode spreads users: shard k (pinned to the k-th core of this process's
affinity) sends planned requests k, k + K, ... (:mod:`loadgen.parts`) with its share of the
in-flight cap. Every shard says when it is ready, then gets the same t0 from this parent, so
their tables share one clock; the parent prints the summed progress lines and, when all are
done, merges their tables and records into the one ``requests.parquet`` and ``driver.json`` a
single process would have written (:mod:`loadgen.shard_merge`).

SIGTERM/SIGINT to the parent is passed to every shard by PID; each stops sending, writes what it
measured (outstanding rows ``in_flight``) and the parent merges that. A shard that dies without
its table fails the run (exit 1): its requests would have no rows. Shards die with the parent
(``PR_SET_PDEATHSIG``) and ignore SIGTERM until their own handler is in place, so a signal sent
to the whole process group while they start cannot kill one before it can write its table.

The parent never imports Locust (its monkey-patching is for the shards). Closed-loop scenarios
and single-core drivers run in one process, exactly as before (the parent re-executes itself
with ``--shards 1``).
"""

from __future__ import annotations

import ctypes
import json
import os
import queue
import resource
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loadgen import ledger as L
from loadgen import parts, record, shard_merge
from loadgen.payloads import Payloads
from loadgen.scenario import Scenario
from loadgen.shard_merge import RAW_FILE, ShardOutput
from loadgen.schedule import phase_of, plan_open

READY_TIMEOUT_S = 120.0     # imports and payloads of K processes on a busy machine
START_MARGIN_S = 0.05       # from "all ready" to t0: the start line reaches every shard
STOP_GRACE_S = 60.0         # past the scenario's end before shards are told to stop
KILL_GRACE_S = 15.0         # past that before they are killed
_PR_SET_PDEATHSIG = 1


class ShardError(RuntimeError):
    """A shard failed; the run has no complete table."""


@dataclass(frozen=True)
class Shard:
    index: int
    cpu: int
    out: Path
    proc: subprocess.Popen


def plan_size(sc: Scenario) -> int | None:
    """Planned requests of an open-loop scenario; None for a closed loop (not sharded)."""
    if not sc.is_open:
        return None
    return len(plan_open(sc.arrival, sc.timing.horizon_s, sc.timing.max_requests))


def choose(sc: Scenario, requested: int | None, cores: list[int]) -> int:
    """How many shards (:func:`loadgen.parts.shard_count`); 1 for a closed loop, and 1 when the
    clients carry a circuit breaker or a retry budget: those judge the whole client population
    together (one per driver process), which shards would split into independent halves."""
    n = plan_size(sc)
    prot = sc.client.protection
    if n is None or prot.breaker is not None or prot.retry_budget is not None:
        return 1
    return parts.shard_count(len(cores), n, sc.arrival.max_in_flight, requested)


def _child_setup(cpu: int) -> None:
    """In the shard, before exec: its core, death with the parent, SIGTERM ignored until the
    driver installs its handler (ignored dispositions survive exec; handlers replace them)."""
    os.sched_setaffinity(0, {cpu})
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def shard_argv(base: list[str], k: int, count: int, out: Path) -> list[str]:
    return [sys.executable, "-m", "loadgen", "drive", "rest", *base, "--out", str(out),
            "--shard", f"{k}/{count}"]


def _reader(k: int, stream, q: queue.Queue) -> None:
    for line in stream:
        line = line.strip()
        if not line:
            continue
        try:
            q.put((k, json.loads(line)))
        except ValueError:
            q.put((k, {"event": "text", "line": line}))
    q.put((k, {"event": "eof"}))


class Parent:
    """Starts, starts together, watches, stops and merges K shards."""

    def __init__(self, sc: Scenario, base_argv: list[str], out: Path, run_id: str, count: int,
                 cores: list[int], *, quiet: bool, start_at: float | None, p99_bound_s: float):
        self.sc, self.base, self.out, self.run_id = sc, base_argv, Path(out), run_id
        self.count, self.cores, self.quiet = count, cores, quiet
        self.start_at, self.p99_bound_s = start_at, p99_bound_s
        self.q: queue.Queue = queue.Queue()
        self.shards: list[Shard] = []
        self.signals: list[int] = []
        self.t0: float | None = None
        self.last: dict[int, dict] = {}     # each shard's latest progress line

    # -- signals ---------------------------------------------------------------------------------
    def _on_signal(self, signum, _frame) -> None:
        self.signals.append(signum)
        if self.t0 is not None:        # before t0 the shards still ignore it: sent after start
            self._tell_all(signal.SIGTERM)

    def _tell_all(self, sig: int) -> None:
        for s in self.shards:
            if s.proc.poll() is None:
                try:
                    os.kill(s.proc.pid, sig)
                except ProcessLookupError:
                    pass

    # -- the run ---------------------------------------------------------------------------------
    def launch(self) -> None:
        root = self.out / "shards"
        for k in range(self.count):
            out = root / f"shard-{k}"
            out.mkdir(parents=True, exist_ok=True)
            cpu = self.cores[k % len(self.cores)]
            with open(out / "stderr.log", "wb") as log:
                proc = subprocess.Popen(
                    shard_argv(self.base, k, self.count, out), stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1,
                    preexec_fn=lambda c=cpu: _child_setup(c),
                    cwd=str(Path(__file__).resolve().parent.parent))
            self.shards.append(Shard(k, cpu, out, proc))
        for s in self.shards:
            threading.Thread(target=_reader, args=(s.index, s.proc.stdout, self.q),
                             daemon=True).start()

    def wait_ready(self) -> None:
        ready: set[int] = set()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while len(ready) < self.count:
            try:
                k, msg = self.q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise ShardError(f"shards {sorted(set(range(self.count)) - ready)} not ready "
                                 f"after {READY_TIMEOUT_S:.0f} s") from None
            if msg.get("event") == "ready":
                ready.add(k)
            elif msg.get("event") == "eof":
                raise ShardError(f"shard {k} ended before it was ready: "
                                 f"{self.tail(self.shards[k])}")

    def start(self) -> float:
        t0 = record.now_epoch() + START_MARGIN_S
        if self.start_at is not None:
            t0 = max(t0, self.start_at)
        self.t0 = t0
        for s in self.shards:
            s.proc.stdin.write(f"{t0!r}\n")
            s.proc.stdin.close()
        if self.signals:                # asked to stop while the shards were starting
            self._tell_all(signal.SIGTERM)
        if not self.quiet:
            L.emit({"event": "start", "mode": "rest", "run_id": self.run_id, "t0_epoch": t0,
                    "shards": self.count})
        return t0

    def follow(self) -> None:
        """Sum the shards' progress lines once a second until every shard has ended."""
        tm = self.sc.timing
        last = self.last
        ended: set[int] = set()
        next_line = 1.0
        told_stop = killed = False
        while len(ended) < self.count:
            try:
                k, msg = self.q.get(timeout=0.2)
                if msg.get("event") == "eof":
                    ended.add(k)
                elif "phase" in msg:
                    last[k] = msg
            except queue.Empty:
                pass
            t = record.now_epoch() - self.t0
            if t >= next_line and not self.quiet and last:
                self._say(t, phase_of(t, tm.warmup_s, tm.duration_s), last)
                next_line = float(int(t) + 1)
            if not told_stop and t > tm.end_s + STOP_GRACE_S:
                told_stop = True
                self._tell_all(signal.SIGTERM)
            if not killed and t > tm.end_s + STOP_GRACE_S + KILL_GRACE_S:
                killed = True
                self._tell_all(signal.SIGKILL)
        for s in self.shards:
            s.proc.wait()

    @staticmethod
    def _say(t: float, phase: str, last: dict[int, dict]) -> None:
        tot = {k: sum(m[k] for m in last.values()) for k in ("sent", "ok", "failed", "in_flight")}
        L.progress(t, phase, tot["sent"], tot["ok"], tot["failed"], tot["in_flight"])

    @staticmethod
    def tail(s: Shard, lines: int = 20) -> str:
        try:
            text = (s.out / "stderr.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def collect(self) -> list[ShardOutput]:
        outs = []
        for s in self.shards:
            if s.proc.returncode != 0 or not (s.out / "driver.json").exists():
                raise ShardError(f"shard {s.index} (pid {s.proc.pid}, cpu {s.cpu}) ended with "
                                 f"{s.proc.returncode} and no table: {self.tail(s)}")
            outs.append(read_shard(s.index, s.out))
        return outs

    def stop_all(self) -> None:
        """After a failure: every shard still running is stopped by PID."""
        self._tell_all(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for s in self.shards:
            try:
                s.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait()


def read_shard(index: int, out: Path) -> ShardOutput:
    driver = json.loads((out / "driver.json").read_text())
    raw_path = out / RAW_FILE
    raw = dict(np.load(raw_path)) if raw_path.exists() else {}
    return ShardOutput(index, record.read(out / "requests.parquet"), driver, raw)


def drive(sc: Scenario, base_argv: list[str], out: Path, run_id: str, count: int,
          cores: list[int], *, quiet: bool = False, start_at: float | None = None,
          p99_bound_s: float = 0.02) -> dict:
    """Run ``count`` shards of the REST open loop; write the merged table and driver.json."""
    parent = Parent(sc, base_argv, out, run_id, count, cores, quiet=quiet, start_at=start_at,
                    p99_bound_s=p99_bound_s)
    previous = {sig: signal.signal(sig, parent._on_signal)
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        parent.launch()
        parent.wait_ready()
        parent.start()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        parent.follow()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        outs = parent.collect()
    except BaseException:
        parent.stop_all()
        raise
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
    interrupted = bool(parent.signals) or any(o.driver.get("interrupted") for o in outs)
    planned = None
    if not interrupted:
        op_id = Payloads([""], sc.workload.batch_size, run_id).op_id
        planned = {op_id(i) for i in range(plan_size(sc) or 0)}
    parent_cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    wall = max(o.driver["cpu"]["wall_s"] for o in outs)
    process = {**L.environment_info(), "shard_pids": [s.proc.pid for s in parent.shards],
               "shard_cpus": [s.cpu for s in parent.shards]}
    df, driver = shard_merge.merge(outs, planned_ids=planned, p99_bound_s=p99_bound_s,
                                   interrupted=list(parent.signals), parent_cpu_s=parent_cpu,
                                   wall_s=wall, process=process)
    driver["settings"]["shard_cpus"] = [s.cpu for s in parent.shards]
    L.write_outputs(Path(out), df, driver)
    for s in parent.shards:        # every row is in the merged table now
        for name in ("requests.parquet", RAW_FILE):
            (s.out / name).unlink(missing_ok=True)
    c = driver["counts"]
    if not quiet:
        Parent._say(driver["stop_s"], "done", parent.last)
        L.emit({"event": "final", "mode": "rest", "sent": c["requests"], "ok": c["ok"],
                "failed": c["failed"], "attempts": c["attempts"], "valid": driver["valid"],
                "invalid_reasons": driver["invalid_reasons"],
                "lateness_p99_s": driver["lateness_s"]["p99"],
                "cpu_percent": driver["cpu"]["percent_mean"], "shards": count, "out": str(out)})
    return driver


def shard_base_argv(a) -> list[str]:
    """What every shard is told (the parent keeps --out, --start-at, --quiet for itself)."""
    argv = ["--scenario", a.scenario, "--url", a.url, "--path", a.path, "--run-id", a.run_id]
    if a.lateness_p99_bound_ms is not None:
        argv += ["--lateness-p99-bound-ms", repr(a.lateness_p99_bound_ms)]
    if a.no_validate:
        argv.append("--no-validate")
    if a.allow_remote:
        argv.append("--allow-remote")
    return argv


def main(a, argv: list[str], sc: Scenario) -> int:
    """``drive rest`` of a drivable scenario when more than one shard may apply: shard, or
    re-execute this process as the one-process driver (same PID, as the bench expects)."""
    from loadgen import http1

    cores = parts.driver_cores()
    count = choose(sc, a.shards, cores)
    if count == 1:
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, "-m", "loadgen", *argv, "--shards", "1"])
    http1.check_loopback(a.url, a.allow_remote)
    bound = (a.lateness_p99_bound_ms if a.lateness_p99_bound_ms is not None else 20.0) / 1e3
    try:
        drive(sc, shard_base_argv(a), a.out, a.run_id, count, cores, quiet=a.quiet,
              start_at=a.start_at, p99_bound_s=bound)
    except ShardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
