"""REST driver: Locust as a library (Environment + LocalRunner, headless, in-process).

Locust is closed-loop by design (its maintainers declined fixed-RPS and coordinated-omission
requests), so the open model is our own scheduling inside one Locust user: the intended send times
are planned first (:mod:`loadgen.schedule`); a dispatcher greenlet wakes at each one and spawns a
request greenlet, under a cap of ``max_in_flight`` concurrent requests (each holds one keep-alive
connection). When the cap is full the request waits for a slot, which makes it *late* (the lateness
``sent_s - intended_s`` is on its row and latency still counts from ``intended_s``); when it would
be later than ``max_lateness_s`` it is not sent and its row says ``generator_saturated``. Closed
loop is what Locust does natively: N users, each one operation (with its retries) then ``think_s``.

Requests go through a lean HTTP/1.1 client (:mod:`loadgen.http1`) rather than Locust's
FastHttpSession, whose per-request layers made the driver slower than the service it measured;
the client counts every exchange on its own and our rows are cross-checked against that count at
the end (driver.json ``crosscheck``). Under Locust's own CLI (``locustfile.py``) every attempt is
also reported to Locust's request event, so its statistics and master see the load. Each attempt
has a hard deadline (``client.timeout_s``, a gevent timeout around the whole exchange); a
connection that timed out or broke is closed, never reused. Retries (policy from the scenario)
happen on ``timeout``, ``refused`` and ``http_5xx``; never on 4xx or a bad 2xx body. Every 2xx
answer is counted per its ``X-Served-By`` worker (driver.json ``workers_answered``).

``part=(k, K)`` runs every K-th planned request from the k-th: one shard of a schedule that
:mod:`loadgen.shards` spreads over K processes (one per driver core), or one Locust worker.

Import this module first in a process: importing locust monkey-patches the standard library.
"""

from __future__ import annotations

import locust  # noqa: F401,I001  (gevent monkey-patching must happen before anything else)

import errno
import gc
import os
import random
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import gevent
import gevent.event
import gevent.lock
import gevent.pool
import numpy as np
from gevent import Timeout as GTimeout
from locust import User, constant, task
from locust.env import Environment
from locust.exception import StopUser

from loadgen import http1, record, wirecheck, workers
from loadgen import ledger as L
from loadgen.parts import part_indices, part_size
from loadgen.payloads import Payloads, check_rest_answer, load_texts
from loadgen.resilience import CIRCUIT_OPEN, ClientGuard
from loadgen.scenario import ClosedArrival, OpenArrival, Scenario
from loadgen.schedule import (
    backoff_s,
    client_steps,
    may_retry,
    plan_open,
)
from loadgen.shard_merge import RAW_FILE

RETRYABLE = frozenset({"timeout", "refused", "http_5xx", CIRCUIT_OPEN})
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class AttemptFailed(Exception):
    """What Locust's request event is told about a failed attempt (its error kind)."""


class RestRun:
    """One mode's REST load: plan, dispatch, attempts, rows. Used by the CLI driver (whole or one
    shard) and by the locustfile (``part=(index, count)`` takes every count-th planned request,
    for Locust's distributed mode; ``locust_events`` reports every attempt to Locust)."""

    def __init__(self, scenario: Scenario, url: str, run_id: str, payloads: Payloads, *,
                 path: str = "/predict", part: tuple[int, int] = (0, 1),
                 validate_answers: bool = True, max_in_flight: int | None = None,
                 locust_events: bool = True):
        self.sc = scenario
        self.url = url.rstrip("/")
        self.path = path
        self.run_id = run_id
        self.payloads = payloads
        self.part = (int(part[0]), int(part[1]))
        self.validate_answers = validate_answers
        self.locust_events = locust_events
        self.B = scenario.workload.batch_size
        self.T = scenario.client.timeout_s
        self.retry = scenario.client.retry
        self.guard = ClientGuard.for_scenario(scenario)   # breaker + retry budget, if any
        tm = scenario.timing
        self.horizon = tm.horizon_s
        self.end_s = tm.end_s
        self.ledger = L.Ledger(run_id, "rest")
        self.env: Environment | None = None
        self.clock: L.Clock | None = None
        self.wire = http1.Wire(http1.Target.of(self.url, path, HEADERS))
        self.stop_evt = gevent.event.Event()
        self.dispatch_done = gevent.event.Event()
        self.requests_group = gevent.pool.Group()   # open-loop request greenlets
        self.lateness: list[float] = []             # first attempts: sent - intended
        self.dispatch_lag: list[float] = []         # open loop: dispatcher wake-up - intended
        self.cap_waits = 0
        self.saturated = 0
        self.error_detail: Counter = Counter()
        self.served: dict[str | None, int] = {}     # X-Served-By of 2xx answers -> count
        self.next_op = 0
        self.planned_ids: list[str] = []
        self.plan = None
        self.max_in_flight = None
        if isinstance(scenario.arrival, OpenArrival):
            self.plan = plan_open(scenario.arrival, self.horizon, tm.max_requests)
            self.max_in_flight = int(max_in_flight or scenario.arrival.max_in_flight)

    # -- clock -----------------------------------------------------------------------------------
    def start_clock(self, at_epoch: float | None = None) -> None:
        """Start t0 now, or (shards sharing one schedule) at exactly ``at_epoch``."""
        self.clock = L.Clock()
        if at_epoch is not None:
            self.clock.mono0 = time.monotonic() - (record.now_epoch() - at_epoch)
            self.clock.t0_epoch = at_epoch

    def rel(self) -> float:
        return self.clock.rel()

    def interrupt(self) -> None:
        self.stop_evt.set()

    def close_sessions(self) -> None:
        self.wire.close()

    def planned_count(self) -> int:
        """Requests of the plan this run (its part) sends when nothing interrupts it."""
        return part_size(len(self.plan), self.part) if self.plan is not None else 0

    # -- one attempt -----------------------------------------------------------------------------
    def _attempt(self, row: record.Attempt, n: int, body: bytes) -> str | None:
        row.sent_s = self.rel()
        if row.attempt == 1:
            self.lateness.append(row.sent_s - row.intended_s)
        timer = GTimeout(self.T)
        timer.start()
        resp = None
        kind: str | None = None
        try:
            resp = self.wire.request(body)
        except GTimeout as e:
            if e is not timer:
                raise
            kind = "timeout"
        except (OSError, http1.ProtocolError) as e:
            if isinstance(e, (socket.timeout, TimeoutError)) \
                    or getattr(e, "errno", None) == errno.ETIMEDOUT:
                kind = "timeout"
            else:
                kind = "refused"      # no (complete) response: refused, reset, closed, garbled
            self.error_detail[f"{kind}/{type(e).__name__}"] += 1
        finally:
            timer.close()
        now = self.rel()
        status = 0
        if resp is not None:
            status = resp.status
            if 200 <= status < 300:
                w = resp.served_by
                self.served[w] = self.served.get(w, 0) + 1
                if self.validate_answers:
                    why = check_rest_answer(resp.body, self.payloads.rest_ids(n))
                    if why:
                        kind = "bad_response"
                        self.error_detail[f"bad_response/{why}"] += 1
            elif 400 <= status < 500:
                kind = "http_4xx"
                self.error_detail[f"http_4xx/{status}"] += 1
            elif status >= 500:
                kind = "http_5xx"
                self.error_detail[f"http_5xx/{status}"] += 1
            else:
                kind = "bad_response"
                self.error_detail[f"bad_response/status {status}"] += 1
        row.done_s = now
        row.http_status = status or None
        if kind is None:
            row.outcome, row.error_kind = "ok", None
        else:
            row.error_kind = kind
        if self.locust_events:
            self.env.events.request.fire(
                request_type="POST", name=self.path, response_time=(now - row.sent_s) * 1e3,
                response_length=len(resp.body) if resp is not None else 0,
                exception=None if kind is None else AttemptFailed(kind),
                context={"request_id": row.request_id, "attempt": row.attempt})
        return kind

    # -- one request (all its attempts) ------------------------------------------------------------
    def _request(self, n: int, intended: float, sem: gevent.lock.BoundedSemaphore | None) -> None:
        rid = self.payloads.op_id(n)
        self.ledger.open_request()
        ok = False
        try:
            self.guard.on_request()
            body = self.payloads.rest_body(n)
            attempt, due = 1, intended
            while True:
                row = self.ledger.attempt(rid, attempt, self.B, intended, due)
                ticket = self.guard.admit()
                if ticket is None:      # the breaker is open: failed at once, never sent
                    kind = row.error_kind = CIRCUIT_OPEN
                    row.done_s = self.rel()
                else:
                    kind = self._attempt(row, n, body)
                    self.guard.done(ticket, kind)
                if kind is None:
                    ok = True
                    break
                if kind not in RETRYABLE or not may_retry(self.retry, attempt) \
                        or not self.guard.may_retry(kind):
                    break
                u = 1.0 - random.Random(f"{self.run_id}:{n}:{attempt}").random()
                due = row.done_s + backoff_s(self.retry, attempt, u)
                if due >= self.end_s or self.stop_evt.is_set():
                    break
                wait = due - self.rel()
                if wait > 0 and self.stop_evt.wait(timeout=wait):
                    break
                attempt += 1
            self.ledger.close_request(ok)
        finally:
            if sem is not None:
                sem.release()

    # -- open loop ---------------------------------------------------------------------------------
    def _sleep_until(self, t: float) -> bool:
        """Sleep until ``t`` (run clock); True if the run was stopped meanwhile. A plain sleep
        costs less than waiting on the stop event once per request; a stop is still seen
        within 50 ms."""
        while True:
            left = t - self.rel()
            if left <= 0 or self.stop_evt.is_set():
                return self.stop_evt.is_set()
            gevent.sleep(min(left, 0.05))

    def dispatch_open(self) -> None:
        """Wake at every planned time of our part of the plan; spawn, wait for a slot, or record
        ``generator_saturated``. Never skips a planned request that is due before a stop."""
        arr: OpenArrival = self.sc.arrival
        sem = gevent.lock.BoundedSemaphore(self.max_in_flight)
        times = self.plan.intended_s
        max_late = arr.max_lateness_s
        rel, op_id, spawn = self.rel, self.payloads.op_id, self.requests_group.spawn
        run_of_due = 0
        try:
            for i in part_indices(len(times), self.part):
                t_i = float(times[i])
                if t_i > rel():
                    if self._sleep_until(t_i):
                        break
                    run_of_due = 0
                elif run_of_due >= 32:   # behind: let the requests already spawned send too
                    gevent.sleep(0)
                    run_of_due = 0
                if self.stop_evt.is_set():
                    break
                run_of_due += 1
                now = rel()
                self.dispatch_lag.append(now - t_i)
                rid = op_id(i)
                self.planned_ids.append(rid)
                if now - t_i > max_late:   # the generator itself fell behind
                    self.saturated += 1
                    self.ledger.saturated(rid, self.B, t_i, now)
                    continue
                if not sem.acquire(blocking=False):
                    left = t_i + max_late - now
                    if left <= 0 or not sem.acquire(timeout=left):
                        self.saturated += 1
                        self.ledger.saturated(rid, self.B, t_i, rel())
                        continue
                    self.cap_waits += 1
                spawn(self._request, i, t_i, sem)
        finally:
            self.dispatch_done.set()

    # -- closed loop -------------------------------------------------------------------------------
    def closed_op(self, user: User) -> None:
        now = self.rel()
        if (self.stop_evt.is_set() or now >= self.horizon
                or self.next_op >= self.sc.timing.max_requests):
            raise StopUser()
        n = self.next_op
        self.next_op += 1
        self.planned_ids.append(self.payloads.op_id(n))
        self._request(n, now, None)

    # -- Locust user classes -------------------------------------------------------------------
    def user_class(self) -> type[User]:
        run = self
        if self.plan is not None:
            class OpenLoopUser(User):
                """Runs the planned schedule (one per Locust process)."""
                host = run.url
                fixed_count = 1
                wait_time = constant(0)

                @task
                def schedule(self) -> None:
                    run.dispatch_open()
                    raise StopUser()
            return OpenLoopUser

        class ClosedLoopUser(User):
            """One client: an operation (with its retries), then think_s."""
            host = run.url
            wait_time = constant(run.sc.arrival.think_s)

            @task
            def operation(self) -> None:
                run.closed_op(self)
        return ClosedLoopUser

    # -- results -------------------------------------------------------------------------------
    def workers_answered(self) -> dict[str, int]:
        """2xx answers per serving worker (X-Served-By), for driver.json."""
        return workers.answered(self.served)

    def crosscheck(self, df) -> dict:
        """The table against the client's own count of exchanges (http1.Wire)."""
        return wirecheck.crosscheck(df, self.wire.counts(), self.wire.no_answer,
                                    self.wire.times_s, stale=self.wire.stale)

    def connections(self) -> dict:
        return {"created": self.wire.created, "discarded": self.wire.discarded,
                "stale": self.wire.stale}

    def settings(self) -> dict:
        sc = self.sc
        d = {"url": self.url, "path": self.path, "client": "loadgen.http1 (HTTP/1.1 on gevent "
             "sockets), one keep-alive connection per in-flight request",
             "timeout_s": self.T, "retry": sc.to_dict()["client"]["retry"],
             "retry_on": sorted(RETRYABLE), "batch_size": self.B, "part": list(self.part),
             "locust_version": locust.__version__, "gevent_version": gevent.__version__,
             "locust_events": self.locust_events, "shards": self.part[1],
             "arrival": sc.to_dict()["arrival"]}
        if self.plan is not None:
            d["plan"] = self.plan.describe()
            d["max_in_flight"] = self.max_in_flight
        return d


# ---------------------------------------------------------------------------------------------
# the CLI driver: python -m loadgen drive rest ...
# ---------------------------------------------------------------------------------------------
check_loopback = http1.check_loopback


def drive(scenario: Scenario, url: str, out: Path, run_id: str, *, path: str = "/predict",
          start_at: float | None = None, lateness_p99_bound_s: float = 0.02,
          payloads: Payloads | None = None, validate_answers: bool = True,
          quiet: bool = False, part: tuple[int, int] = (0, 1), max_in_flight: int | None = None,
          start_gate: Callable[[], float] | None = None) -> dict:
    """Run the REST mode of ``scenario`` against ``url``; write the table and driver.json.

    A shard (``part`` = (k, K), started by :mod:`loadgen.shards`) sends its part of the plan with
    its share of the in-flight cap, takes its t0 from ``start_gate`` (called once it is ready to
    send; every shard gets the same t0) and also writes the raw distributions the merge needs.
    """
    L.raise_fd_limit()
    if payloads is None:
        payloads = Payloads(load_texts(scenario.payload), scenario.workload.batch_size, run_id)
    # the table is checked against the client's own count: Locust's statistics would only cost
    run = RestRun(scenario, url, run_id, payloads, path=path, validate_answers=validate_answers,
                  part=part, max_in_flight=max_in_flight, locust_events=False)
    user_cls = run.user_class()
    tm = scenario.timing
    # stop_timeout: a client removed by a step down finishes its operation (graceful)
    env = Environment(user_classes=[user_cls], host=run.url, stop_timeout=tm.end_s,
                      catch_exceptions=True)
    runner = env.create_local_runner()
    run.env = env
    interrupted = []

    def on_signal(signum=None, *_):
        interrupted.append(signum)
        run.interrupt()

    handlers = [gevent.signal_handler(s, on_signal, s) for s in (signal.SIGTERM, signal.SIGINT)]
    t0_at = None
    if start_gate is not None:
        t0_at = start_gate()
        L.wait_until_epoch(t0_at, gevent.sleep)
    else:
        L.wait_until_epoch(start_at, gevent.sleep)
    # A full collection traverses every tracked object: ~90 ms once the imports and 30k rows
    # exist, a stall every few seconds at a few thousand requests/s. Frozen objects are skipped.
    gc.freeze()
    cpu = L.CpuMeter()
    run.start_clock(t0_at)
    say = (lambda *a: None) if quiet else L.progress
    if not quiet:
        L.start_line("rest", run_id, run.clock)
    beat = L.Heartbeat(cpu, tm.warmup_s, tm.duration_s, quiet)

    def progress_loop():
        k = 1
        while True:
            gevent.sleep(max(0.0, k - run.rel()))
            k += 1
            gc.freeze()   # what lived a second (rows, mostly) is never traversed again
            lg = run.ledger
            beat(run.rel(), lg.requests, lg.ok, lg.failed, lg.in_flight)

    prog = gevent.spawn(progress_loop)
    try:
        if isinstance(scenario.arrival, OpenArrival):
            runner.start(1, spawn_rate=1)
            while not run.dispatch_done.wait(timeout=0.2):
                if run.stop_evt.is_set() or run.rel() >= run.end_s:
                    break
        else:
            arr: ClosedArrival = scenario.arrival
            for at, n in client_steps(arr, run.horizon):
                wait = at - run.rel()
                if wait > 0 and run.stop_evt.wait(timeout=wait):
                    break
                runner.start(n, spawn_rate=100)  # Locust warns above 100/s
            run.stop_evt.wait(timeout=max(0.0, run.horizon - run.rel()))
        # drain: every started request finishes, or the drain window ends
        while not run.stop_evt.is_set() and run.rel() < run.end_s:
            busy = run.ledger.in_flight > 0 or (
                run.plan is not None and not run.dispatch_done.is_set())
            if not busy:
                break
            run.stop_evt.wait(timeout=0.05)
    finally:
        run.stop_evt.set()
        runner.user_greenlets.kill(block=True, timeout=5)
        run.requests_group.kill(block=True, timeout=5)
        stop_s = run.rel()
        runner.quit()
        prog.kill()
        for h in handlers:
            h.cancel()
    cpu_used = cpu.summary()            # the run's CPU, before the table is built
    run.ledger.finalize(stop_s)
    lg = run.ledger
    say(stop_s, "done", lg.requests, lg.ok, lg.failed, lg.in_flight)
    run.close_sessions()
    df = record.to_frame(lg.rows)
    counts = L.check_accounting(df, set(run.planned_ids))
    if counts["requests"] != lg.requests:
        raise L.AccountingError(f"live count {lg.requests} != table {counts['requests']}")
    if run.plan is not None and not interrupted and counts["requests"] != run.planned_count():
        raise L.AccountingError(f"plan (part {run.part[0]} of {run.part[1]}) has "
                                f"{run.planned_count()} requests, table {counts['requests']}")
    late = L.dist(run.lateness)
    arr = scenario.arrival
    xcheck = run.crosscheck(df)
    extra = [] if xcheck["match"] else \
        [f"the client counted {xcheck['wire']} exchanges but the table says {xcheck['ours']}"]
    driver = {
        **L.driver_record(mode="rest", run_id=run_id, scenario=scenario.name, clock=run.clock,
                          stop_s=stop_s, interrupted=interrupted, lateness=late,
                          saturated=run.saturated, p99_bound_s=lateness_p99_bound_s,
                          max_lateness_s=arr.max_lateness_s if isinstance(arr, OpenArrival)
                          else None, settings=run.settings(), extra=extra,
                          workers_answered=run.workers_answered()),
        "counts": counts,
        "lateness_s": late,
        "dispatch_lag_s": L.dist(run.dispatch_lag),
        "cap_waits": run.cap_waits, "generator_saturated": run.saturated,
        "connections": run.connections(),
        "error_detail": dict(run.error_detail),
        "protection": run.guard.describe(),
        "crosscheck": xcheck,
        "cpu": cpu_used,
        "payload": payloads.describe(),
        "process": L.environment_info(),
    }
    if run.part[1] > 1:   # a shard: the raw values its merge needs
        Path(out).mkdir(parents=True, exist_ok=True)
        np.savez(Path(out) / RAW_FILE, lateness_s=np.asarray(run.lateness),
                 dispatch_lag_s=np.asarray(run.dispatch_lag),
                 wire_times_s=np.asarray(run.wire.times_s), cpu_samples=np.asarray(cpu.samples))
    return L.finish(out, df, driver, mode="rest", quiet=quiet)


def start_from_stdin() -> float:
    """A shard's start gate: say it is ready, then read the shared t0 (epoch seconds) from its
    parent. The parent closing the pipe instead means: start now (it is stopping)."""
    L.emit({"event": "ready", "pid": os.getpid()})
    line = sys.stdin.readline()
    try:
        return float(line)
    except ValueError:
        return record.now_epoch()
