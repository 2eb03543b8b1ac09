"""The lean stream engine: a plain Kafka consumer loop serving the model, no stream framework.

It answers exactly like the Faust worker (services/stream/app.py): the same request parsing, one
model call per fetched batch (:func:`services.stream.app.process_records`; one per record with
``shape="event"``), the same prediction and DLQ records, DLQ reasons and ``rvs-worker`` header,
answers spread over ``predictions`` and the DLQ one partition at a time (services/sticky.py) or by
key, and the same consumer group (``app_id``) and ``assignment.json`` for readiness. What it
leaves out is Faust's per-event machinery (events, streams, acks, the conductor): the gap between
the two engines under the same load is Faust's own cost, the rest is streaming's.

Delivery, at-least-once, per fetched batch: fetch up to ``take_max`` records, answer them, hand
every answer to the producer, wait until the broker has acknowledged all of them, and only then
commit the batch's offsets (next offset per partition). That wait and the commit run while the
next batch is fetched and computed (one batch in flight at most, committed in order), so the
loop does not idle for two broker round trips per batch. A model failure becomes a DLQ record
(``process_records`` never raises for it); a producer failure (or anything unexpected) stops the
worker with a non-zero exit before the commit, so whoever owns the partitions next gets the batch
again. SIGTERM finishes the batch, commits it and leaves the group; SIGKILL leaves the last
uncommitted batch to be re-delivered. A rebalance waits for the batch in hand to be committed.

Two clients, one loop shape: :class:`AioLoop` (aiokafka's ``getmany``, the client Faust itself
runs on) and :class:`ConfluentLoop` (librdkafka's ``consume``), ``StreamSettings.lean_client``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import struct
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from services.sticky import STICKY_PERIOD_S, sticky_partition
from services.stream.app import (Limits, Out, PredictBatch, Record, process_records,
                                 worker_headers)
from services.stream.settings import LEAN_POLL_TIMEOUT_MS, StreamSettings

#: Batches whose answers may wait for the broker's acks while the next ones are computed: at
#: most this many times take_max records are answered again after a crash.
MAX_IN_FLIGHT = 4

log = logging.getLogger("services.stream.lean")


class DeliveryFailed(RuntimeError):
    """The broker did not acknowledge an answer: the batch must not be committed."""


# -- the per-batch logic (pure) -------------------------------------------------------------------
@dataclass(frozen=True)
class Answered:
    """One fetched batch, answered: what to produce, and what to commit once it is delivered."""
    preds: Out
    dlq: Out
    offsets: dict[tuple[str, int], int]   # (topic, partition) -> next offset to consume


def next_offsets(records: Sequence[Record]) -> dict[tuple[str, int], int]:
    """The offset to commit per partition: one past the highest offset in the batch."""
    out: dict[tuple[str, int], int] = {}
    for r in records:
        k = (r.topic, r.partition)
        if r.offset + 1 > out.get(k, -1):
            out[k] = r.offset + 1
    return out


def answer(records: Sequence[Record], predict: PredictBatch, limits: Limits,
           shape: str = "batch") -> Answered:
    """Answer a fetched batch: one model call for all of it (``shape="event"``: one per record)."""
    if shape == "event":
        preds: Out = []
        dlq: Out = []
        for r in records:
            p, d = process_records([r], predict, limits)
            preds.extend(p)
            dlq.extend(d)
    else:
        preds, dlq = process_records(records, predict, limits)
    return Answered(preds, dlq, next_offsets(records))


@dataclass(frozen=True)
class Targets:
    """Where answers go: topic names, their partition counts, sticky or by key."""
    predictions: str
    dlq: str
    n_predictions: int
    n_dlq: int
    by_key: bool

    @classmethod
    def of(cls, s: StreamSettings) -> Targets:
        t = s.topics()
        return cls(s.topic_predictions, s.topic_dlq, t[s.topic_predictions], t[s.topic_dlq],
                   s.answer_partitioning == "key")

    def routes(self, a: Answered, now: float) -> list[tuple[str, int | None, Out]]:
        """(topic, partition or None = by key, records) for the non-empty parts of ``a``."""
        out = []
        for topic, n, recs in ((self.predictions, self.n_predictions, a.preds),
                               (self.dlq, self.n_dlq, a.dlq)):
            if recs:
                part = None if self.by_key else (sticky_partition(n, now, STICKY_PERIOD_S) or 0)
                out.append((topic, part, recs))
        return out


def write_assignment(path: Path, generation: int, partitions: Sequence[int]) -> dict:
    """``assignment.json`` as the Faust worker writes it (launch.wait_ready reads it)."""
    doc = {"pid": os.getpid(), "generation": generation, "time": time.time(),
           "partitions": sorted(partitions)}
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(doc))
    os.replace(tmp, path)
    log.info("assigned partitions %s (generation %s)", doc["partitions"], generation)
    return doc


def _lost_membership(e: BaseException, n: int) -> None:
    """A commit refused because the group moved on (e.g. the worker was frozen past its session
    timeout): the answers are delivered, the partitions' new owner will answer the batch again
    (duplicates, which at-least-once allows). Not a reason to stop: the client rejoins."""
    log.warning("commit of %d answered record(s) refused (%s: %s): the group rebalanced; their "
                "new owner re-delivers them", n, type(e).__name__, e)


def _log_dlq(dlq: Out) -> None:
    if dlq:
        log.warning("dead-lettered %d message(s): %s", len(dlq),
                    ", ".join(sorted({orjson.loads(v)["reason"] for _k, v in dlq})))


# -- aiokafka -------------------------------------------------------------------------------------
@dataclass
class Flight:
    """A batch handed to the producer: ``acked`` resolves when the broker acknowledged all of its
    answers (or fails), ``answered`` says what to commit then."""
    acked: Any
    answered: Answered
    n: int


class AioLoop:
    """The loop on aiokafka: ``getmany`` -> answer -> ``send_batch``, with the broker's acks and
    the commits behind it.

    Up to :data:`MAX_IN_FLIGHT` batches may wait for their acks while the next ones are fetched
    and computed; acked batches are taken in order, and the offsets of those only are committed
    (one commit at a time, covering every batch acked meanwhile). A loop that waited out the ack
    and the commit of each batch idled at the broker's round trips: measured with a backlog, 44 %
    of its core with one batch in flight. ``consumer`` and ``producer`` are started aiokafka
    clients (fakes in unit tests); :meth:`subscribe` registers a listener that writes
    ``assignment_file`` and makes a revocation wait until the batches in hand are committed.
    """

    def __init__(self, s: StreamSettings, predict: PredictBatch, consumer: Any, producer: Any, *,
                 assignment_file: Path | None = None):
        self.s, self.predict, self.consumer, self.producer = s, predict, consumer, producer
        self.limits, self.targets, self.stamp = Limits.of(s), Targets.of(s), worker_headers()
        self.assignment_file = assignment_file
        self.lock = asyncio.Lock()      # held from answer to hand-over; a revocation waits for it
        self.flights: deque[Flight] = deque()      # handed over, in order, not yet taken as acked
        self.delivered: dict[tuple[str, int], int] = {}   # acked, not yet committed
        self.committing: asyncio.Task | None = None
        self.failure: BaseException | None = None  # a failed delivery seen by a revocation
        self.answered = 0

    def subscribe(self) -> None:
        from aiokafka import ConsumerRebalanceListener

        loop = self

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: Any) -> None:
                async with loop.lock:   # the batches in hand are committed before we let go
                    try:
                        await loop.settle()
                    except Exception as e:  # noqa: BLE001 — aiokafka would only log it:
                        loop.failure = e    # the loop raises it before its next commit

            async def on_partitions_assigned(self, assigned: Any) -> None:
                if loop.assignment_file is not None:
                    gen = loop.consumer._coordinator.generation  # noqa: SLF001 (no public API)
                    write_assignment(loop.assignment_file, gen,
                                     [tp.partition for tp in assigned
                                      if tp.topic == loop.s.topic_requests])

        self.consumer.subscribe([self.s.topic_requests], listener=Listener())

    async def step(self) -> int:
        """One batch: fetch, answer, hand the answers to the producer, then take the batches the
        broker acknowledged meanwhile (waiting only when too many are in flight) and start a
        commit of them. Returns how many records it handled (0 when none came in the poll
        timeout)."""
        # getmany waits out a rebalance in progress (it returns no record that may belong to
        # another member afterwards), so it runs outside the lock; the lock is taken before the
        # next await, so a revocation can't slip in between and always waits for the commit
        got = await self.consumer.getmany(timeout_ms=LEAN_POLL_TIMEOUT_MS,
                                          max_records=self.s.take_max)
        if self.failure is not None:
            raise self.failure
        records = [Record(m.value, m.key, m.topic, m.partition, m.offset)
                   for msgs in got.values() for m in msgs]
        if not records:
            await self.settle()
            return 0
        async with self.lock:
            a = answer(records, self.predict, self.limits, self.s.shape)
            futures = await self.hand_over(a)
            self.flights.append(Flight(asyncio.gather(*futures), a, len(records)))
            await self.reap(wait=len(self.flights) > MAX_IN_FLIGHT)
        return len(records)

    async def reap(self, *, wait: bool = False) -> None:
        """Take the acknowledged batches in order (``wait``: until at most MAX_IN_FLIGHT remain),
        raising :class:`DeliveryFailed` at the first failed one, then commit what they cover if no
        commit is under way."""
        flights = self.flights
        while flights and (flights[0].acked.done() or wait):
            f = flights.popleft()
            try:
                await f.acked
            except Exception as e:
                flights.clear()   # nothing after a failed batch may be committed
                raise DeliveryFailed(f"{type(e).__name__}: {e}") from e
            self.delivered.update(f.answered.offsets)
            self.answered += f.n
            _log_dlq(f.answered.dlq)
            wait = len(flights) > MAX_IN_FLIGHT
        if self.delivered and (self.committing is None or self.committing.done()):
            if self.committing is not None:
                await self.committing   # raises what the last commit raised
            offsets, self.delivered = self.delivered, {}
            self.committing = asyncio.ensure_future(self.commit(offsets))

    async def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        from aiokafka import TopicPartition
        from aiokafka.errors import CommitFailedError, IllegalStateError

        try:
            await self.consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})
        except (CommitFailedError, IllegalStateError) as e:
            _lost_membership(e, len(offsets))

    async def settle(self) -> None:
        """Wait for every batch in flight to be acknowledged and committed (raises if one
        failed: then nothing from it on is committed)."""
        while self.flights:
            await self.reap(wait=True)
        if self.committing is not None:
            await self.committing
            self.committing = None
        if self.delivered:
            offsets, self.delivered = self.delivered, {}
            await self.commit(offsets)

    async def hand_over(self, a: Answered) -> list[asyncio.Future]:
        """Give every answer to the producer; the futures resolve when the broker acknowledged."""
        futures = []
        producer, stamp = self.producer, self.stamp
        for topic, part, recs in self.targets.routes(a, time.monotonic()):
            if part is None:
                for k, v in recs:
                    futures.append(await producer.send(topic, v, k, headers=stamp))
                continue
            batch = producer.create_batch()
            for k, v in recs:
                if batch.append(key=k, value=v, timestamp=None, headers=stamp) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=part))
                    batch = producer.create_batch()
                    batch.append(key=k, value=v, timestamp=None, headers=stamp)
            futures.append(await producer.send_batch(batch, topic, partition=part))
        return futures

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.step()
        await self.settle()


async def run_aiokafka(s: StreamSettings, predict: PredictBatch, assignment_file: Path,
                       stop: asyncio.Event) -> int:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(**s.aiokafka_consumer_config())
    producer = AIOKafkaProducer(**s.aiokafka_producer_config())
    await producer.start()
    await consumer.start()
    loop = AioLoop(s, predict, consumer, producer, assignment_file=assignment_file)
    loop.subscribe()
    try:
        await loop.run(stop)
    except Exception as e:
        # nothing of the batch in hand is committed: it is re-delivered after the rebalance
        log.critical("lean worker: %s: %s; stopping without committing the batch in hand",
                     type(e).__name__, e, exc_info=e)
        await _quietly(consumer.stop())
        await _quietly(producer.stop())
        return 1
    log.info("stopping after %d records: leaving the group", loop.answered)
    await consumer.stop()   # no auto-commit: run() committed the last batch
    await producer.stop()
    return 0


async def _quietly(aw: Any) -> None:
    try:
        await asyncio.wait_for(aw, 10)
    except Exception as e:  # noqa: BLE001 — already failing; say so and go on exiting
        log.warning("while stopping: %s: %s", type(e).__name__, e)


# -- confluent-kafka ------------------------------------------------------------------------------
def _membership_codes() -> frozenset[int]:
    from confluent_kafka import KafkaError

    return frozenset({KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID,
                      KafkaError.REBALANCE_IN_PROGRESS, KafkaError._ASSIGNMENT_LOST,  # noqa: SLF001
                      KafkaError._STATE})  # noqa: SLF001


def generation_of(group_metadata: bytes) -> int:
    """The group generation in librdkafka's serialised ConsumerGroupMetadata: ``"CGMDv2:"``, then
    the generation id as a native-endian int32, then the NUL-terminated group and member ids
    (rd_kafka_consumer_group_metadata_write). confluent-kafka has no accessor for it; -1 if the
    format is not that one."""
    magic = b"CGMDv2:"
    if not group_metadata.startswith(magic) or len(group_metadata) < len(magic) + 4:
        return -1
    return struct.unpack_from("=i", group_metadata, len(magic))[0]


@dataclass
class InFlight:
    """A batch handed to librdkafka: answers not yet acknowledged, errors, what to commit."""
    answered: Answered
    n: int
    left: int = 0
    errors: list[str] = field(default_factory=list)

    def report(self, err: Any, _msg: Any) -> None:
        """librdkafka's delivery report of one answer (called inside ``poll``/``flush``)."""
        self.left -= 1
        if err is not None:
            self.errors.append(str(err))


class ConfluentLoop:
    """The same loop on confluent-kafka: ``consume`` -> answer -> ``produce``, with the delivery
    reports and (asynchronous) commits of acknowledged batches behind it, in order, as in
    :class:`AioLoop`. One thread: a rebalance callback runs inside ``consume``/``poll``, and
    :meth:`settle` there commits the batches in flight before the partitions go."""

    def __init__(self, s: StreamSettings, predict: PredictBatch, consumer: Any, producer: Any, *,
                 assignment_file: Path | None = None):
        self.s, self.predict, self.consumer, self.producer = s, predict, consumer, producer
        self.limits, self.targets, self.stamp = Limits.of(s), Targets.of(s), worker_headers()
        self.assignment_file = assignment_file
        self.flights: deque[InFlight] = deque()
        self.delivered: dict[tuple[str, int], int] = {}   # acked, not yet committed
        self.high: dict[tuple[str, int], int] = {}        # every acked offset, for a sync commit
        self.unsynced = False                             # async commits since the last sync one
        self.failure: BaseException | None = None
        self.answered = 0
        self.owned: set[int] = set()

    def subscribe(self) -> None:
        def on_assign(consumer: Any, parts: Any) -> None:
            self.owned = {tp.partition for tp in parts if tp.topic == self.s.topic_requests}
            if self.assignment_file is not None:
                try:
                    gen = generation_of(consumer.consumer_group_metadata())
                    write_assignment(self.assignment_file, gen, sorted(self.owned))
                except Exception:  # an exception can't cross librdkafka's callback: say it here
                    log.exception("writing %s", self.assignment_file)
                    raise

        def on_revoke(consumer: Any, parts: Any) -> None:
            try:
                self.settle(sync=True)
            except Exception as e:  # noqa: BLE001 — raised by step() before its next commit
                self.failure = e
            self.high.clear()   # never commit again for partitions that may have moved on

        self.consumer.subscribe([self.s.topic_requests], on_assign=on_assign,
                                on_revoke=on_revoke)

    def fetch(self) -> list[Any]:
        from confluent_kafka import KafkaError

        # consume(n, t) waits the whole t unless n records come; so take what is there, and
        # only when nothing is, wait for one record and take what came with it
        n = self.s.take_max
        msgs = self.consumer.consume(n, 0)
        if not msgs:
            first = self.consumer.poll(LEAN_POLL_TIMEOUT_MS / 1000)
            if first is None:
                return []
            msgs = [first, *self.consumer.consume(n - 1, 0)] if n > 1 else [first]
        out = []
        for m in msgs:
            err = m.error()
            if err is None:
                out.append(m)
            elif not err.retriable() and err.code() != KafkaError._PARTITION_EOF:  # noqa: SLF001
                raise RuntimeError(f"consumer: {err}")
        return out

    def step(self) -> int:
        msgs = self.fetch()
        if self.failure is not None:
            raise self.failure
        if not msgs:
            self.settle()
            return 0
        records = [Record(m.value(), m.key(), m.topic(), m.partition(), m.offset()) for m in msgs]
        a = answer(records, self.predict, self.limits, self.s.shape)
        self.flights.append(self.hand_over(a, len(records)))
        self.reap(wait=len(self.flights) > MAX_IN_FLIGHT)
        return len(records)

    def hand_over(self, a: Answered, n: int) -> InFlight:
        flight = InFlight(a, n)
        produce, poll = self.producer.produce, self.producer.poll
        for topic, part, recs in self.targets.routes(a, time.monotonic()):
            kw = {} if part is None else {"partition": part}
            for k, v in recs:
                while True:
                    try:
                        produce(topic, v, k, headers=self.stamp, on_delivery=flight.report, **kw)
                        break
                    except BufferError:
                        poll(0.01)
                flight.left += 1
        poll(0)
        return flight

    def reap(self, *, wait: bool = False) -> None:
        """Take the acknowledged batches in order (``wait``: until at most MAX_IN_FLIGHT remain),
        raising :class:`DeliveryFailed` at the first failed one, and commit what they cover
        (asynchronously: librdkafka sends commits in order, and a lost one only re-delivers)."""
        flights, poll = self.flights, self.producer.poll
        poll(0)                         # serve the delivery reports that came
        while flights and (flights[0].left <= 0 or wait):
            f = flights[0]
            deadline = time.monotonic() + self.s.broker_request_timeout_s
            while f.left > 0 and time.monotonic() < deadline:
                poll(0.05)
            flights.popleft()
            if f.left > 0 or f.errors:
                flights.clear()         # nothing after a failed batch may be committed
                raise DeliveryFailed(f"{f.left} answers unacknowledged, {len(f.errors)} failed"
                                     + (f": {f.errors[0]}" if f.errors else ""))
            self.delivered.update(f.answered.offsets)
            self.answered += f.n
            _log_dlq(f.answered.dlq)
            wait = len(flights) > MAX_IN_FLIGHT
        if self.delivered:
            self.commit(sync=False)

    def commit(self, *, sync: bool) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        self.high.update(self.delivered)
        offsets = self.high if sync else self.delivered
        self.delivered = {}
        self.unsynced = not sync
        try:
            self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                 asynchronous=not sync)
        except KafkaException as e:
            if e.args[0].code() not in _membership_codes():
                raise
            _lost_membership(e, len(offsets))

    def settle(self, sync: bool = True) -> None:
        """Wait for every batch in flight to be acknowledged, then commit (raises if one failed:
        then nothing from it on is committed)."""
        while self.flights:
            self.reap(wait=True)
        if self.delivered or (sync and self.unsynced):
            self.commit(sync=sync)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.step()
        self.settle(sync=True)


def run_confluent(s: StreamSettings, predict: PredictBatch, assignment_file: Path,
                  stop: threading.Event) -> int:
    from confluent_kafka import Consumer, Producer

    consumer = Consumer(s.confluent_consumer_config())
    producer = Producer(s.confluent_producer_config())
    loop = ConfluentLoop(s, predict, consumer, producer, assignment_file=assignment_file)
    loop.subscribe()
    try:
        loop.run(stop)
    except Exception as e:
        log.critical("lean worker: %s: %s; stopping without committing the batch in hand",
                     type(e).__name__, e, exc_info=e)
        consumer.close()
        return 1
    log.info("stopping after %d records: leaving the group", loop.answered)
    consumer.close()   # leaves the group; run() committed the last batch synchronously
    producer.flush(10)
    return 0


# -- the process ----------------------------------------------------------------------------------
def serve(s: StreamSettings, predict: PredictBatch, datadir: Path,
          assignment_name: str = "assignment.json") -> int:
    """Run the lean worker until SIGTERM/SIGINT; the process exit code."""
    datadir.mkdir(parents=True, exist_ok=True)
    assignment_file = datadir / assignment_name
    if s.lean_client == "confluent":
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        return run_confluent(s, predict, assignment_file, stop)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await run_aiokafka(s, predict, assignment_file, stop)

    return asyncio.run(main())
