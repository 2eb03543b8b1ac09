"""REST driver: Locust as a library (Environment + LocalRunner, headless, in-process).

Locust is closed-loop by design (its maintainers declined fixed-RPS and coordinated-omission
requests), so the open model is our own scheduling inside one Locust user: the intended send times
are planned first (:mod:`loadgen.schedule`); a dispatcher greenlet wakes at each one and spawns a
request greenlet, under a cap of ``max_in_flight`` concurrent requests (each holds one keep-alive
connection). When the cap is full the request waits for a slot, which makes it *late* (the lateness
``sent_s - intended_s`` is on its row and latency still counts from ``intended_s``); when it would
be later than ``max_lateness_s`` it is not sent and its row says ``generator_saturated``. Closed
loop is what Locust does natively: N users, each one operation (with its retries) then ``think_s``.

Requests go through Locust's own fast client (:class:`locust.contrib.fasthttp.FastHttpSession`,
geventhttpclient), one session per connection, so Locust's request events and statistics see every
attempt; our rows are cross-checked against Locust's counts at the end. Each attempt has a hard
deadline (``client.timeout_s``, a gevent timeout around the whole exchange); a connection that
timed out or broke is closed, never reused. Retries (policy from the scenario) happen on
``timeout``, ``refused`` and ``http_5xx``; never on 4xx or a bad 2xx body. Every 2xx answer is
counted per its ``X-Served-By`` worker (driver.json ``workers_answered``).

Import this module first in a process: importing locust monkey-patches the standard library.
"""

from __future__ import annotations

import locust  # noqa: F401,I001  (gevent monkey-patching must happen before anything else)

import errno
import random
import signal
import socket
from collections import Counter
from pathlib import Path

import gevent
import gevent.event
import gevent.lock
import gevent.pool
from gevent import Timeout as GTimeout
from locust import User, constant, task
from locust.contrib.fasthttp import FastHttpSession, LocustBadStatusCode
from locust.env import Environment
from locust.exception import StopUser

from loadgen import ledger as L
from loadgen import record, workers
from loadgen.payloads import Payloads, check_rest_answer, load_texts
from loadgen.resilience import CIRCUIT_OPEN, ClientGuard
from loadgen.scenario import ClosedArrival, OpenArrival, Scenario
from loadgen.schedule import (
    backoff_s,
    client_steps,
    may_retry,
    plan_open,
)

RETRYABLE = frozenset({"timeout", "refused", "http_5xx", CIRCUIT_OPEN})
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


class _AttemptTimeout(Exception):
    """Reported to Locust for an attempt our deadline cut short outside Locust's own handling."""


class RestRun:
    """One mode's REST load: plan, dispatch, attempts, rows. Used by the CLI driver and by the
    locustfile (``part=(index, count)`` takes every count-th planned request, for Locust's
    distributed mode)."""

    def __init__(self, scenario: Scenario, url: str, run_id: str, payloads: Payloads, *,
                 path: str = "/predict", part: tuple[int, int] = (0, 1),
                 validate_answers: bool = True):
        self.sc = scenario
        self.url = url.rstrip("/")
        self.path = path
        self.run_id = run_id
        self.payloads = payloads
        self.part = part
        self.validate_answers = validate_answers
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
        self.stop_evt = gevent.event.Event()
        self.dispatch_done = gevent.event.Event()
        self.requests_group = gevent.pool.Group()   # open-loop request greenlets
        self.free: list[FastHttpSession] = []       # idle keep-alive connections
        self.sessions_created = 0
        self.sessions_discarded = 0
        self.lateness: list[float] = []             # first attempts: sent - intended
        self.dispatch_lag: list[float] = []         # open loop: dispatcher wake-up - intended
        self.cap_waits = 0
        self.saturated = 0
        self.manual_events = 0
        self.error_detail: Counter = Counter()
        self.served: dict[str | None, int] = {}     # X-Served-By of 2xx answers -> count
        self.next_op = 0
        self.planned_ids: list[str] = []
        self.plan = None
        if isinstance(scenario.arrival, OpenArrival):
            self.plan = plan_open(scenario.arrival, self.horizon, tm.max_requests)

    # -- clock -----------------------------------------------------------------------------------
    def start_clock(self) -> None:
        self.clock = L.Clock()

    def rel(self) -> float:
        return self.clock.rel()

    def interrupt(self) -> None:
        self.stop_evt.set()

    # -- connections -----------------------------------------------------------------------------
    def _session(self) -> FastHttpSession:
        if self.free:
            return self.free.pop()
        self.sessions_created += 1
        sess = FastHttpSession(
            self.url, request_event=self.env.events.request, user=None, insecure=True,
            concurrency=1, network_timeout=self.T, connection_timeout=self.T,
            max_retries=0, max_redirects=0,
        )
        sess.client.cookiejar = None   # no cookies in this protocol: skip the jar per request
        return sess

    def _discard(self, sess: FastHttpSession) -> None:
        self.sessions_discarded += 1
        try:
            sess.client.close()
        except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is dropped
            pass

    def close_sessions(self) -> None:
        while self.free:
            self._discard(self.free.pop())

    # -- one attempt -----------------------------------------------------------------------------
    def _attempt(self, row: record.Attempt, n: int, body: bytes) -> str | None:
        sess = self._session()
        ctx = {"request_id": row.request_id, "attempt": row.attempt}
        row.sent_s = self.rel()
        if row.attempt == 1:
            self.lateness.append(row.sent_s - row.intended_s)
        timer = GTimeout(self.T)
        timer.start()
        resp = None
        kind: str | None = None
        status = 0
        try:
            resp = sess.request("POST", self.path, data=body, headers=HEADERS,
                                catch_response=True, name=self.path, context=ctx)
        except GTimeout as e:
            if e is not timer:
                raise
            kind = "timeout"
        finally:
            timer.close()
        now = self.rel()
        if resp is None:  # our deadline hit outside Locust's handler: report it to Locust ourselves
            self.manual_events += 1
            self.env.events.request.fire(
                request_type="POST", name=self.path, response_time=(now - row.sent_s) * 1e3,
                response_length=0, exception=_AttemptTimeout("timeout"), context=ctx)
            self.error_detail["timeout/outside-locust"] += 1
        else:
            with resp:
                exc = resp.request_meta.get("exception") or getattr(resp, "error", None)
                # geventhttpclient wraps timeouts (ours included) and broken pipes in
                # RetriesExceeded(original=...): judge by the original error
                root = getattr(exc, "original", None) or exc
                status = resp.status_code or 0
                if root is timer or isinstance(root, (GTimeout, socket.timeout, TimeoutError)) \
                        or getattr(root, "errno", None) == errno.ETIMEDOUT:
                    kind = "timeout"
                    if root is not timer:
                        self.error_detail[f"timeout/{type(root).__name__}"] += 1
                elif exc is not None and not isinstance(exc, LocustBadStatusCode):
                    kind = "refused"      # no (complete) response: refused, reset, closed
                    self.error_detail[f"refused/{type(root).__name__}"] += 1
                elif 200 <= status < 300:
                    w = resp.headers.get(workers.REST_HEADER) if resp.headers else None
                    if isinstance(w, list):         # the header repeated: keep every value
                        w = ",".join(w)
                    self.served[w] = self.served.get(w, 0) + 1
                    if self.validate_answers:
                        why = check_rest_answer(resp.content or b"",
                                                self.payloads.rest_ids(n))
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
                if kind is None:
                    resp.success()
                else:
                    resp.failure(kind)
        row.done_s = now
        row.http_status = status or None
        if kind is None:
            row.outcome, row.error_kind = "ok", None
            self.free.append(sess)
        else:
            row.error_kind = kind
            if kind in ("timeout", "refused"):
                self._discard(sess)
            else:
                self.free.append(sess)  # a complete HTTP answer: the connection is fine
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
    def dispatch_open(self) -> None:
        """Wake at every planned time of our part of the plan; spawn, wait for a slot, or record
        ``generator_saturated``. Never skips a planned request that is due before a stop."""
        arr: OpenArrival = self.sc.arrival
        sem = gevent.lock.BoundedSemaphore(arr.max_in_flight)
        times = self.plan.intended_s
        k, parts = self.part
        try:
            for i in range(k, len(times), parts):
                t_i = float(times[i])
                wait = t_i - self.rel()
                if wait > 0 and self.stop_evt.wait(timeout=wait):
                    break
                if self.stop_evt.is_set():
                    break
                now = self.rel()
                self.dispatch_lag.append(now - t_i)
                self.planned_ids.append(self.payloads.op_id(i))
                if now - t_i > arr.max_lateness_s:   # the generator itself fell behind
                    self.saturated += 1
                    self.ledger.saturated(self.payloads.op_id(i), self.B, t_i, now)
                    continue
                if not sem.acquire(blocking=False):
                    left = t_i + arr.max_lateness_s - now
                    if left <= 0 or not sem.acquire(timeout=left):
                        self.saturated += 1
                        self.ledger.saturated(self.payloads.op_id(i), self.B, t_i, self.rel())
                        continue
                    self.cap_waits += 1
                self.requests_group.spawn(self._request, i, t_i, sem)
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

    def locust_crosscheck(self, df) -> dict:
        st = self.env.stats.total
        reported = df[df["sent_s"].notna() & (df["error_kind"] != "in_flight")]
        ours = {"requests": int(len(reported)),
                "failures": int((reported["outcome"] == "error").sum())}
        theirs = {"requests": int(st.num_requests), "failures": int(st.num_failures)}
        svc = (reported["done_s"] - reported["sent_s"]) * 1e3
        errors = Counter()
        for e in self.env.stats.errors.values():
            errors[str(e.error)] += e.occurrences
        return {
            "match": ours == theirs, "ours": ours, "locust": theirs,
            "locust_errors": dict(errors),
            "response_time_ms": {
                "locust_p50": st.get_response_time_percentile(0.5) if st.num_requests else None,
                "locust_p99": st.get_response_time_percentile(0.99) if st.num_requests else None,
                "ours_p50": round(float(svc.quantile(0.5)), 3) if len(svc) else None,
                "ours_p99": round(float(svc.quantile(0.99)), 3) if len(svc) else None,
            },
            "events_fired_by_us": self.manual_events,
        }

    def settings(self) -> dict:
        sc = self.sc
        d = {"url": self.url, "path": self.path, "client": "locust.contrib.fasthttp.FastHttpSession"
             " (geventhttpclient), one keep-alive connection per in-flight request",
             "timeout_s": self.T, "retry": sc.to_dict()["client"]["retry"],
             "retry_on": sorted(RETRYABLE), "batch_size": self.B, "part": list(self.part),
             "locust_version": locust.__version__, "gevent_version": gevent.__version__,
             "arrival": sc.to_dict()["arrival"]}
        if self.plan is not None:
            d["plan"] = self.plan.describe()
        return d


# ---------------------------------------------------------------------------------------------
# the CLI driver: python -m loadgen drive rest ...
# ---------------------------------------------------------------------------------------------
def check_loopback(url: str, allow_remote: bool) -> None:
    from urllib.parse import urlparse
    host = urlparse(url).hostname or ""
    if not allow_remote and host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"refusing to drive {url}: only loopback targets unless --allow-remote")


def drive(scenario: Scenario, url: str, out: Path, run_id: str, *, path: str = "/predict",
          start_at: float | None = None, lateness_p99_bound_s: float = 0.02,
          payloads: Payloads | None = None, validate_answers: bool = True,
          quiet: bool = False) -> dict:
    """Run the REST mode of ``scenario`` against ``url``; write the table and driver.json."""
    L.raise_fd_limit()
    if payloads is None:
        payloads = Payloads(load_texts(scenario.payload), scenario.workload.batch_size, run_id)
    run = RestRun(scenario, url, run_id, payloads, path=path, validate_answers=validate_answers)
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
    L.wait_until_epoch(start_at, gevent.sleep)
    cpu = L.CpuMeter()
    run.start_clock()
    say = (lambda *a: None) if quiet else L.progress
    if not quiet:
        L.start_line("rest", run_id, run.clock)
    beat = L.Heartbeat(cpu, tm.warmup_s, tm.duration_s, quiet)

    def progress_loop():
        k = 1
        while True:
            gevent.sleep(max(0.0, k - run.rel()))
            k += 1
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
    run.ledger.finalize(stop_s)
    lg = run.ledger
    say(stop_s, "done", lg.requests, lg.ok, lg.failed, lg.in_flight)
    run.close_sessions()
    df = record.to_frame(lg.rows)
    counts = L.check_accounting(df, set(run.planned_ids))
    if counts["requests"] != lg.requests:
        raise L.AccountingError(f"live count {lg.requests} != table {counts['requests']}")
    if run.plan is not None and not interrupted and counts["requests"] != len(run.plan):
        raise L.AccountingError(f"plan has {len(run.plan)} requests, table {counts['requests']}")
    late = L.dist(run.lateness)
    arr = scenario.arrival
    xcheck = run.locust_crosscheck(df)
    extra = [] if xcheck["match"] else \
        [f"Locust counted {xcheck['locust']} but the table says {xcheck['ours']}"]
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
        "connections": {"created": run.sessions_created, "discarded": run.sessions_discarded},
        "error_detail": dict(run.error_detail),
        "protection": run.guard.describe(),
        "locust": xcheck,
        "cpu": cpu.summary(),
        "payload": payloads.describe(),
        "process": L.environment_info(),
    }
    return L.finish(out, df, driver, mode="rest", quiet=quiet)
