"""Stream driver: a confluent-kafka producer on the scenario's schedule and a consumer of the
predictions topic that matches every answer to its request by id.

Row granularity: **one row per event = one review = one request** (``batch_size`` 1 on the row).
An operation of B reviews is B events with ids ``<run_id>-<n>.<k>`` (``<run_id>-<n>`` when B = 1);
open loop produces all B at the operation's intended time; a closed-loop client produces them and
waits until all B are answered (or its deadline passes), thinks, then starts its next operation.
Compare modes on reviews/s when B > 1 (a REST row carries B reviews, a stream row one).

An event succeeds when its prediction arrives before ``request_intended_s + T``, where T is
``client.stream_timeout_s`` when the scenario sets it, else ``client.timeout_s``.
A later answer makes the row ``timeout`` with ``done_s`` = when it did arrive; no answer by the end
of the drain window is ``no_prediction`` (``done_s`` = the deadline); still unanswered before its
deadline when the driver was stopped is ``in_flight``. Extra answers for an id count in
``duplicates``, never as a second success. A delivery failure reported by the producer is
``produce_error`` and is retried per the scenario's retry policy (a new attempt row, same id).
A timeout is *not* retried on the stream: the event is durably queued and will be answered;
producing it again would only add work (REST retries because an abandoned HTTP request is lost).

Threads: the main thread plans, produces and keeps every row; one consumer thread only stamps
arrival times, counts this run's answers per ``rvs-worker`` header (driver.json
``workers_answered``) and hands (time, [(key, valid)]) batches over a queue. No locks on the rows.
"""

from __future__ import annotations

import heapq
import queue
import random
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka import libversion as _libversion
from confluent_kafka import version as _version

from loadgen import ledger as L
from loadgen import record, workers
from loadgen.payloads import Payloads, check_stream_answer, load_texts
from loadgen.scenario import ClosedArrival, OpenArrival, Scenario
from loadgen.schedule import backoff_s, clients_at, may_retry, plan_open
from services.sticky import REQUEST_STICKY_S, sticky_partition

# event states
PENDING, IN_FLIGHT, OK, LATE, PRODUCE_ERR, SATURATED, BAD, RETRY_WAIT = range(8)
FINAL_FAILED = (LATE, PRODUCE_ERR, SATURATED, BAD)
OFFSET_BEGINNING = -2


def check_loopback(bootstrap: str, allow_remote: bool) -> None:
    for hp in bootstrap.split(","):
        host = hp.rsplit(":", 1)[0].strip("[]")
        if not allow_remote and host not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit(f"refusing bootstrap {bootstrap}: only loopback unless --allow-remote")


def producer_config(bootstrap: str, run_id: str, timeout_s: float, *,
                    idempotent: bool = True) -> dict:
    """Batching tuned so the producer is never the bottleneck (~100k msg/s of 1.3 KB here) while
    adding at most ``linger.ms`` to an event's latency. ``acks=all`` and, where the broker has
    it, the idempotent producer: a request the broker acknowledged is in its log, and a send
    retried across a broker restart is written once (:func:`broker_producer_defaults`)."""
    return {
        "bootstrap.servers": bootstrap,
        "client.id": f"rvs-driver-{run_id}",
        "linger.ms": 1,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 2_000_000,
        "queue.buffering.max.kbytes": 2_097_151,
        "acks": "all",
        "enable.idempotence": bool(idempotent),
        "compression.type": "none",
        "socket.nagle.disable": True,
        "message.timeout.ms": max(1000, int(timeout_s * 1000)),
        "delivery.report.only.error": True,
        "log_level": 3,
    }


def broker_producer_defaults(broker_name: str) -> dict:
    """Producer settings that depend on the broker: Tansu refuses ``InitProducerId`` (no
    idempotent producer), Apache Kafka has it."""
    return {"idempotent": broker_name != "tansu"}


def broker_name(bootstrap: str, timeout_s: float = 10.0) -> str:
    """Which broker answers on ``bootstrap`` ("kafka" or "tansu"), from its cluster id."""
    from confluent_kafka.admin import AdminClient

    from services.broker import name_of_cluster

    md = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3}).list_topics(
        timeout=timeout_s)
    return name_of_cluster(getattr(md, "cluster_id", None))


def consumer_config(bootstrap: str, run_id: str) -> dict:
    """Partitions are assigned by hand (no group join: Tansu holds a join ~half the session
    timeout); the group id is fresh and nothing is committed. A short fetch wait, because Tansu
    holds an empty fetch for the whole wait even when data arrives meanwhile."""
    return {
        "bootstrap.servers": bootstrap,
        "group.id": f"rvs-driver-{run_id}-{uuid.uuid4().hex[:8]}",
        "client.id": f"rvs-driver-{run_id}-answers",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 5,
        "fetch.min.bytes": 1,
        "fetch.error.backoff.ms": 10,
        "session.timeout.ms": 6000,
        "enable.partition.eof": False,
        "socket.nagle.disable": True,
        "log_level": 3,
    }


class _Answers(threading.Thread):
    """Reads ``predictions``; counts this run's answers (keys starting with ``prefix``) per
    ``rvs-worker`` header, since the topic also holds probes and earlier runs' answers."""

    def __init__(self, conf: dict, topic: str, partitions: list[int], clock: L.Clock,
                 validate: bool, out: queue.SimpleQueue, prefix: bytes = b""):
        super().__init__(daemon=True, name="answers")
        self.consumer = Consumer(conf)
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self.clock, self.validate, self.out, self.prefix = clock, validate, out, prefix
        self.stop_evt = threading.Event()
        self.messages = 0
        self.errors = Counter()
        self.served: dict[bytes | None, int] = {}   # raw rvs-worker value -> answers
        self.cpu_s = 0.0

    def workers_answered(self) -> dict[str, int]:
        return workers.answered(dict(self.served))   # a copy: C-level, atomic under the GIL

    def run(self) -> None:
        c0 = time.thread_time()
        consume, poll, rel, put, validate = self.consumer.consume, self.consumer.poll, \
            self.clock.rel, self.out.put, self.validate
        prefix, served, worker_of = self.prefix, self.served, workers.stream_worker
        try:
            while not self.stop_evt.is_set():
                # poll() returns as soon as one answer is there; consume(n, timeout) would wait
                # the WHOLE timeout unless n messages arrive (librdkafka's batch consume), which
                # added up to 50 ms (~25 ms on average) to every answer's measured time at light
                # load. Then drain what else is ready without waiting.
                first = poll(0.05)
                if first is None:
                    continue
                t = rel()
                msgs = [first, *consume(num_messages=10000, timeout=0)]
                batch = []
                for m in msgs:
                    if m.error():
                        self.errors[str(m.error().code())] += 1
                        continue
                    k = m.key()
                    if k is not None and k.startswith(prefix):
                        w = worker_of(m.headers())
                        served[w] = served.get(w, 0) + 1
                    batch.append((k, check_stream_answer(m.value()) if validate else True))
                self.messages += len(batch)
                put((t, batch))
        finally:
            self.cpu_s = time.thread_time() - c0
            self.consumer.close()


class StreamRun:
    def __init__(self, scenario: Scenario, bootstrap: str, run_id: str, payloads: Payloads, *,
                 topics: tuple[str, str] = ("requests", "predictions"),
                 validate_answers: bool = True):
        self.sc = scenario
        self.bootstrap = bootstrap
        self.run_id = run_id
        self.payloads = payloads
        self.req_topic, self.pred_topic = topics
        self.validate = validate_answers
        self.B = scenario.workload.batch_size
        self.T = scenario.client.stream_deadline_s
        self.retry = scenario.client.retry
        tm = scenario.timing
        self.horizon, self.end_s = tm.horizon_s, tm.end_s
        self.plan = None
        cap = 1024
        if isinstance(scenario.arrival, OpenArrival):
            self.plan = plan_open(scenario.arrival, self.horizon, tm.max_requests)
            cap = max(1, len(self.plan) * self.B)
        self._alloc(cap)
        self.n = 0                     # events with a row
        self.n_ops = 0                 # operations started
        self.ok = 0
        self.failed = 0                # final failures (late, produce error, saturated, bad)
        self.expired_ptr = 0           # events [0, ptr) are past their deadline
        self.expired_open = 0          # of those, still in flight (will be late/no_prediction)
        self.retired: list[record.Attempt] = []
        self.retry_heap: list[tuple[float, int]] = []
        self.lateness: list[float] = []
        self.produce_lag: list[float] = []
        self.saturated = 0
        self.foreign = 0               # answers whose id is not of this run (e.g. __probe__)
        self.after_failure = 0         # answers for events already failed for another reason
        self.buffer_full = 0
        self.produce_errors = Counter()
        self.stop = False
        self.clock: L.Clock | None = None
        self.answers_q: queue.SimpleQueue = queue.SimpleQueue()
        self.broker_name: str | None = None       # found at connect()
        self.pconf = producer_config(bootstrap, run_id, self.T)
        self.cconf = consumer_config(bootstrap, run_id)
        self.broker_down: list[float] = []        # when librdkafka said "all brokers down"
        self.producer: Producer | None = None
        self.consumer_thread: _Answers | None = None
        # closed loop: which client runs operation n (-1 once the client moved on)
        self.op_client: list[int] = []

    # -- storage -------------------------------------------------------------------------------
    def _alloc(self, cap: int) -> None:
        self.req_int = np.full(cap, np.nan)
        self.intended = np.full(cap, np.nan)
        self.sent = np.full(cap, np.nan)
        self.done = np.full(cap, np.nan)
        self.state = np.zeros(cap, dtype=np.int8)
        self.attempt = np.ones(cap, dtype=np.int32)
        self.dups = np.zeros(cap, dtype=np.int32)

    def _grow(self, need: int) -> None:
        cap = len(self.state)
        if need <= cap:
            return
        new = max(need, cap * 2)
        for name, fill in (("req_int", np.nan), ("intended", np.nan), ("sent", np.nan),
                           ("done", np.nan), ("state", 0), ("attempt", 1), ("dups", 0)):
            old = getattr(self, name)
            arr = np.full(new, fill, dtype=old.dtype)
            arr[:cap] = old
            setattr(self, name, arr)

    # -- kafka ---------------------------------------------------------------------------------
    def connect(self) -> None:
        self.broker_name = broker_name(self.bootstrap)
        self.pconf = producer_config(self.bootstrap, self.run_id, self.T,
                                     **broker_producer_defaults(self.broker_name))
        self.producer = Producer({**self.pconf, "on_delivery": self._on_delivery,
                                  "error_cb": self._on_error})
        md = self.producer.list_topics(timeout=10)
        for t in (self.req_topic, self.pred_topic):
            if t not in md.topics or md.topics[t].error is not None:
                raise SystemExit(f"topic {t!r} does not exist on {self.bootstrap} (create it "
                                 f"first; the stream deployment/bench does) - topics there: "
                                 f"{sorted(md.topics)[:20]}")
        self.partitions = sorted(md.topics[self.pred_topic].partitions)
        self.req_partitions = len(md.topics[self.req_topic].partitions)

    def start_consumer(self) -> None:
        self.consumer_thread = _Answers(self.cconf, self.pred_topic, self.partitions, self.clock,
                                        self.validate, self.answers_q,
                                        self.payloads.prefix.encode())
        self.consumer_thread.start()

    def _on_error(self, err) -> None:
        """librdkafka's client-level errors (called from poll()): one line per broker outage."""
        if err.code() != KafkaError._ALL_BROKERS_DOWN:
            return
        t = self.clock.rel() if self.clock else 0.0
        self.broker_down.append(round(t, 3))
        L.emit({"event": "broker_down", "t": round(t, 3), "bootstrap": self.bootstrap,
                "error": err.str()})
        sys.stderr.write(
            f"stream driver: broker {self.bootstrap} is not answering ({err.str()}) at "
            f"t={t:.1f}s; requests wait up to {self.T:g}s for it, then fail (accounted as "
            f"produce_error / no_prediction). If it does not come back, stop the run (Ctrl-C) "
            f"and look at the broker's log.\n")
        sys.stderr.flush()

    def _on_delivery(self, err, msg) -> None:
        if err is None:
            return
        key = msg.key()
        j = self.payloads.parse_event_id(key.decode()) if key else None
        self.produce_errors[str(err.name())] += 1
        if j is None or j >= self.n or self.state[j] != IN_FLIGHT:
            return
        now = self.clock.rel()
        a = int(self.attempt[j])
        if may_retry(self.retry, a) and not self.stop:
            u = 1.0 - random.Random(f"{self.run_id}:{j}:{a}").random()
            due = now + backoff_s(self.retry, a, u)
            if due < self.end_s:
                self.retired.append(self._row(j, "error", "produce_error", done=now))
                self.state[j] = RETRY_WAIT
                self.attempt[j] = a + 1
                self.intended[j] = due
                self.sent[j] = np.nan
                heapq.heappush(self.retry_heap, (due, j))
                return
        self._final_fail(j, PRODUCE_ERR, now)

    def _final_fail(self, j: int, state: int, now: float) -> None:
        self.state[j] = state
        self.done[j] = now
        self.failed += 1
        if j < self.expired_ptr:
            self.expired_open -= 1

    def _produce(self, j: int, now: float) -> None:
        n, k = divmod(j, self.B)
        eid = self.payloads.event_id(n, k)
        self.sent[j] = now
        value = self.payloads.event_value(eid, j, self.clock.t0_epoch + now)
        key = eid.encode()
        for _ in range(100):
            try:
                # sticky by time (services/sticky.py): a produce request stays one batch
                part = sticky_partition(self.req_partitions, now, REQUEST_STICKY_S)
                self.producer.produce(self.req_topic, value, key, -1 if part is None else part)
                break
            except BufferError:
                self.buffer_full += 1
                self.producer.poll(0.005)
        else:
            self.produce_errors["local queue full"] += 1
            self._final_fail(j, PRODUCE_ERR, self.clock.rel())
            return
        self.state[j] = IN_FLIGHT

    def _new_event(self, j: int, req_intended: float) -> None:
        self.req_int[j] = req_intended
        self.intended[j] = req_intended
        self.n = max(self.n, j + 1)

    def _start_op(self, n: int, intended: float, now: float) -> None:
        """Rows for the B events of operation n, produced now (or saturated)."""
        B = self.B
        self._grow((n + 1) * B)
        self.n_ops = max(self.n_ops, n + 1)
        lag = now - intended
        late = isinstance(self.sc.arrival, OpenArrival) and lag > self.sc.arrival.max_lateness_s
        for k in range(B):
            j = n * B + k
            self._new_event(j, intended)
            if late:
                self.state[j] = SATURATED
                self.done[j] = now
                self.failed += 1
                self.saturated += 1
            else:
                t = self.clock.rel()
                self._produce(j, t)
                if k == 0:
                    self.lateness.append(t - intended)

    # -- answers -------------------------------------------------------------------------------
    def _drain_answers(self, block_s: float = 0.0) -> list[int]:
        """Apply queued answers; returns the event indexes answered for the first time."""
        first: list[int] = []
        try:
            item = self.answers_q.get(timeout=block_s) if block_s > 0 else \
                self.answers_q.get_nowait()
        except queue.Empty:
            return first
        while True:
            t, batch = item
            for key, valid in batch:
                j = self.payloads.parse_event_id(key.decode()) if key else None
                if j is None or j >= self.n:
                    self.foreign += 1
                    continue
                s = self.state[j]
                if s == IN_FLIGHT or s == RETRY_WAIT:
                    if s == RETRY_WAIT:
                        self._unretire(j)   # the broker had it after all: that attempt answered
                    self.done[j] = t
                    if j < self.expired_ptr:
                        self.expired_open -= 1
                    if not valid:
                        self.state[j] = BAD
                        self.failed += 1
                    elif t <= self.req_int[j] + self.T:
                        self.state[j] = OK
                        self.ok += 1
                    else:
                        self.state[j] = LATE
                        self.failed += 1
                    first.append(j)
                elif s == OK or s == LATE or s == BAD:
                    self.dups[j] += 1
                else:
                    self.after_failure += 1
            try:
                item = self.answers_q.get_nowait()
            except queue.Empty:
                return first

    def _unretire(self, j: int) -> None:
        rid = self.payloads.event_id(*divmod(j, self.B))
        for i in range(len(self.retired) - 1, -1, -1):
            r = self.retired[i]
            if r.request_id == rid:
                del self.retired[i]
                self.attempt[j], self.intended[j], self.sent[j] = r.attempt, r.intended_s, r.sent_s
                break
        self.retry_heap = [(d, x) for d, x in self.retry_heap if x != j]
        heapq.heapify(self.retry_heap)

    def _advance_expired(self, now: float) -> None:
        T, n = self.T, self.n
        p = self.expired_ptr
        while p < n and self.req_int[p] + T < now:
            if self.state[p] in (IN_FLIGHT, RETRY_WAIT, PENDING):
                self.expired_open += 1
            p += 1
        self.expired_ptr = p

    def _retries_due(self, now: float) -> None:
        while self.retry_heap and self.retry_heap[0][0] <= now:
            _, j = heapq.heappop(self.retry_heap)
            if self.state[j] == RETRY_WAIT:
                self._produce(j, self.clock.rel())

    def counts(self) -> tuple[int, int, int, int]:
        failed = self.failed + self.expired_open
        return self.n, self.ok, failed, self.n - self.ok - failed

    # -- loops ---------------------------------------------------------------------------------
    def run_open(self, tick) -> None:
        times = self.plan.intended_s
        n_ops = len(times)
        i = 0
        poll = self.producer.poll
        while not self.stop:
            now = self.clock.rel()
            produced = 0
            while i < n_ops and times[i] <= now and not self.stop:
                self.produce_lag.append(now - times[i])
                self._start_op(i, float(times[i]), now)
                i += 1
                produced += self.B
                if produced >= 2000:
                    poll(0)
                    produced = 0
                    now = self.clock.rel()
            poll(0)
            self._retries_due(now)
            self._drain_answers()
            tick()
            if i >= n_ops:
                break
            wait = float(times[i]) - self.clock.rel()
            if wait > 0:
                self._drain_answers(block_s=min(wait, 0.05))
        self.drain(tick)

    def run_closed(self, tick) -> None:
        arr: ClosedArrival = self.sc.arrival
        C = arr.max_clients
        busy_op = [-1] * C           # operation in progress per client
        pending = [0] * C            # events of it not yet answered
        deadline = [0.0] * C
        ready = [0.0] * C            # when an idle client may start its next operation
        max_ops = self.sc.timing.max_requests
        poll = self.producer.poll
        while not self.stop:
            now = self.clock.rel()
            active = clients_at(arr, now)
            for c in range(C):
                if busy_op[c] >= 0 and (pending[c] <= 0 or now >= deadline[c]):
                    self.op_client[busy_op[c]] = -1
                    busy_op[c] = -1
                    ready[c] = now + arr.think_s
                if (busy_op[c] < 0 and c < active and ready[c] <= now and now < self.horizon
                        and self.n_ops < max_ops):
                    n = self.n_ops
                    self.op_client.append(c)
                    busy_op[c], pending[c], deadline[c] = n, self.B, now + self.T
                    self._start_op(n, now, now)
                    now = self.clock.rel()
            poll(0)
            self._retries_due(now)
            for j in self._drain_answers():
                n = j // self.B
                c = self.op_client[n] if n < len(self.op_client) else -1
                if c >= 0 and busy_op[c] == n:
                    pending[c] -= 1
            tick()
            if now >= self.horizon and all(b < 0 for b in busy_op):
                break
            if now >= self.horizon and now >= self.end_s:
                break
            cands = [deadline[c] for c in range(C) if busy_op[c] >= 0]
            if now < self.horizon and self.n_ops < max_ops:
                cands += [ready[c] for c in range(C) if busy_op[c] < 0 and c < active]
                cands += [at for at, _ in arr.clients if at > now][:1]
            wait = min(min(cands, default=now + 0.05) - now, 0.05)
            if self.retry_heap:
                wait = min(wait, self.retry_heap[0][0] - now)
            if wait > 0:
                for j in self._drain_answers(block_s=wait):
                    n = j // self.B
                    c = self.op_client[n] if n < len(self.op_client) else -1
                    if c >= 0 and busy_op[c] == n:
                        pending[c] -= 1
        self.drain(tick)

    def drain(self, tick) -> None:
        """After the last planned send: wait for answers until none is outstanding or the drain
        window ends (late answers still arrive in it and are recorded as such)."""
        poll = self.producer.poll
        while not self.stop:
            now = self.clock.rel()
            if now >= self.end_s:
                break
            poll(0)
            self._retries_due(now)
            self._drain_answers(block_s=0.02)
            tick()
            open_ = self.n - self.ok - self.failed
            if open_ <= 0 and not self.retry_heap:
                break

    # -- rows ----------------------------------------------------------------------------------
    def _row(self, j: int, outcome: str, kind: str | None, *, done: float) -> record.Attempt:
        n, k = divmod(j, self.B)
        return record.Attempt(self.run_id, "stream", self.payloads.event_id(n, k),
                              int(self.attempt[j]), 1, float(self.req_int[j]),
                              float(self.intended[j]), float(self.sent[j]), float(done), outcome,
                              kind, None, int(self.dups[j]))

    def frame(self, stop_s: float) -> pd.DataFrame:
        n = self.n
        st = self.state[:n]
        keep = st != RETRY_WAIT           # an attempt never started has no row
        kinds = np.array([None, "in_flight", None, "timeout", "produce_error",
                          "generator_saturated", "bad_response", None], dtype=object)
        kind = kinds[st]
        done = self.done[:n].copy()
        deadline = self.req_int[:n] + self.T
        pend = (st == IN_FLIGHT) | (st == PENDING)
        nopred = pend & (deadline <= stop_s)
        kind[nopred] = "no_prediction"
        done[nopred] = deadline[nopred]
        infl = pend & ~nopred
        kind[infl] = "in_flight"
        done[infl] = stop_s
        outcome = np.where(st == OK, "ok", "error").astype(object)
        ids = [self.payloads.event_id(*divmod(j, self.B)) for j in range(n)]
        df = pd.DataFrame({
            "run_id": self.run_id, "mode": "stream", "request_id": ids,
            "attempt": self.attempt[:n], "batch_size": 1, "request_intended_s": self.req_int[:n],
            "intended_s": self.intended[:n], "sent_s": self.sent[:n], "done_s": done,
            "outcome": outcome, "error_kind": kind, "http_status": None,
            "duplicates": self.dups[:n]})
        frames = [df[keep]]
        if self.retired:
            frames.append(pd.DataFrame([{c: getattr(r, c) for c in record.COLUMNS}
                                        for r in self.retired]))
        df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        t = pa.Table.from_pandas(df[record.COLUMNS], schema=record.SCHEMA, preserve_index=False)
        return t.to_pandas(types_mapper={pa.int32(): pd.Int32Dtype()}.get)

    def settings(self) -> dict:
        p = {k: v for k, v in self.pconf.items()}
        c = {k: v for k, v in self.cconf.items()}
        return {"bootstrap": self.bootstrap, "topics": {"requests": self.req_topic,
                                                       "predictions": self.pred_topic},
                "partitions_consumed": self.partitions, "consumer_assignment": "manual, "
                "all partitions from the beginning (no group join); ids of other runs ignored",
                "producer": p, "consumer": c, "timeout_s": self.T,
                "broker": self.broker_name,
                "producer_idempotent": bool(p.get("enable.idempotence")),
                "retry": self.sc.to_dict()["client"]["retry"], "retry_on": ["produce_error"],
                "batch_size": self.B, "row_granularity": "one row per event (review)",
                "validate_answers": self.validate,
                "confluent_kafka": _version()[0], "librdkafka": _libversion()[0],
                "arrival": self.sc.to_dict()["arrival"],
                **({"plan": self.plan.describe()} if self.plan is not None else {})}


def drive(scenario: Scenario, bootstrap: str, out: Path, run_id: str, *,
          topics: tuple[str, str] = ("requests", "predictions"), start_at: float | None = None,
          lateness_p99_bound_s: float = 0.02, payloads: Payloads | None = None,
          validate_answers: bool = True, quiet: bool = False) -> dict:
    if payloads is None:
        payloads = Payloads(load_texts(scenario.payload), scenario.workload.batch_size, run_id)
    run = StreamRun(scenario, bootstrap, run_id, payloads, topics=topics,
                    validate_answers=validate_answers)
    try:
        run.connect()
    except KafkaException as e:
        raise SystemExit(f"broker {bootstrap}: {e}") from None
    interrupted: list[int] = []

    def on_signal(signum, _frame):
        interrupted.append(signum)
        run.stop = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    L.wait_until_epoch(start_at)
    cpu = L.CpuMeter()
    run.clock = L.Clock()
    run.start_consumer()
    tm = scenario.timing
    if not quiet:
        L.start_line("stream", run_id, run.clock)
    beat = L.Heartbeat(cpu, tm.warmup_s, tm.duration_s, quiet)
    next_tick = [1.0]

    def tick() -> None:
        now = run.clock.rel()
        if now < next_tick[0]:
            return
        next_tick[0] = float(int(now) + 1)
        run._advance_expired(now)
        beat(now, *run.counts())

    try:
        if run.plan is not None:
            run.run_open(tick)
        else:
            run.run_closed(tick)
    finally:
        stop_s = run.clock.rel()
        run.stop = True
        for s, h in old.items():
            signal.signal(s, h)
        run.consumer_thread.stop_evt.set()
        run.consumer_thread.join(5)
        unflushed = run.producer.flush(2.0)
    run._drain_answers()          # what the consumer handed over before it stopped
    run._advance_expired(stop_s)
    df = run.frame(stop_s)
    B = run.B
    if run.plan is not None:
        expected = {payloads.event_id(*divmod(j, B)) for j in range(run.n)}
        if not interrupted and run.n != len(run.plan) * B:
            raise L.AccountingError(f"plan has {len(run.plan) * B} events, table {run.n}")
    else:
        expected = {payloads.event_id(*divmod(j, B)) for j in range(run.n_ops * B)}
    counts = L.check_accounting(df, expected)
    n, ok, failed, infl = run.counts()
    if not quiet:
        L.progress(stop_s, "done", counts["requests"], counts["ok"], counts["failed"], 0)
    late = L.dist(run.lateness)
    arr = scenario.arrival
    ct = run.consumer_thread
    answered = df["done_s"] - df["request_intended_s"]
    driver = {
        **L.driver_record(mode="stream", run_id=run_id, scenario=scenario.name, clock=run.clock,
                          stop_s=stop_s, interrupted=interrupted, lateness=late,
                          saturated=run.saturated, p99_bound_s=lateness_p99_bound_s,
                          max_lateness_s=arr.max_lateness_s if isinstance(arr, OpenArrival)
                          else None, settings=run.settings(),
                          workers_answered=ct.workers_answered()),
        "counts": {**counts, "operations": run.n_ops, "foreign_answers": run.foreign,
                   "answers_after_failure": run.after_failure,
                   "late_answers": int((df["error_kind"] == "timeout").sum()),
                   "answers_received": ct.messages, "consumer_errors": dict(ct.errors),
                   "produce_errors": dict(run.produce_errors),
                   "broker_down_at_s": list(run.broker_down),
                   "producer_queue_full_waits": run.buffer_full,
                   "unflushed_at_exit": int(unflushed)},
        "lateness_s": late,
        "produce_lag_s": L.dist(run.produce_lag),
        "generator_saturated": run.saturated,
        "latency_ok_ms": L.dist(answered[df["outcome"] == "ok"], scale=1e3, digits=3),
        "cpu": {**cpu.summary(), "consumer_thread_cpu_s": round(ct.cpu_s, 3)},
        "payload": payloads.describe(),
        "process": L.environment_info(),
    }
    return L.finish(out, df, driver, mode="stream", quiet=quiet,
                    duplicates=counts["duplicates"])
