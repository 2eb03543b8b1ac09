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
commit the batch's offsets (next offset per partition). A model failure becomes a DLQ record
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from services.sticky import STICKY_PERIOD_S, sticky_partition
from services.stream.app import (Limits, Out, PredictBatch, Record, process_records,
                                 worker_headers)
from services.stream.settings import LEAN_POLL_TIMEOUT_MS, StreamSettings

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
class AioLoop:
    """The loop on aiokafka: ``getmany`` -> answer -> ``send_batch`` -> await delivery -> commit.

    ``consumer`` and ``producer`` are started aiokafka clients (fakes in unit tests); the consumer
    is subscribed by :meth:`subscribe` with a listener that writes ``assignment_file`` and makes
    a revocation wait for the batch in hand.
    """

    def __init__(self, s: StreamSettings, predict: PredictBatch, consumer: Any, producer: Any, *,
                 assignment_file: Path | None = None):
        self.s, self.predict, self.consumer, self.producer = s, predict, consumer, producer
        self.limits, self.targets, self.stamp = Limits.of(s), Targets.of(s), worker_headers()
        self.assignment_file = assignment_file
        self.lock = asyncio.Lock()      # held from answer to commit; a revocation waits for it
        self.answered = 0

    def subscribe(self) -> None:
        from aiokafka import ConsumerRebalanceListener

        loop = self

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: Any) -> None:
                async with loop.lock:   # the batch in hand is committed before we let go
                    pass

            async def on_partitions_assigned(self, assigned: Any) -> None:
                if loop.assignment_file is not None:
                    gen = loop.consumer._coordinator.generation  # noqa: SLF001 (no public API)
                    write_assignment(loop.assignment_file, gen,
                                     [tp.partition for tp in assigned
                                      if tp.topic == loop.s.topic_requests])

        self.consumer.subscribe([self.s.topic_requests], listener=Listener())

    async def step(self) -> int:
        """One batch: fetch, answer, produce, wait for the broker's acks, commit. Returns how many
        records it handled (0 when nothing came within the poll timeout)."""
        from aiokafka import TopicPartition
        from aiokafka.errors import CommitFailedError, IllegalStateError

        # getmany waits out a rebalance in progress (it returns no record that may belong to
        # another member afterwards), so it runs outside the lock; the lock is taken before the
        # next await, so a revocation can't slip in between and always waits for the commit
        got = await self.consumer.getmany(timeout_ms=LEAN_POLL_TIMEOUT_MS,
                                          max_records=self.s.take_max)
        records = [Record(m.value, m.key, m.topic, m.partition, m.offset)
                   for msgs in got.values() for m in msgs]
        if not records:
            return 0
        async with self.lock:
            a = answer(records, self.predict, self.limits, self.s.shape)
            await self.deliver(a)
            try:
                await self.consumer.commit({TopicPartition(t, p): o
                                            for (t, p), o in a.offsets.items()})
            except (CommitFailedError, IllegalStateError) as e:
                _lost_membership(e, len(records))
            self.answered += len(records)
            _log_dlq(a.dlq)
            return len(records)

    async def deliver(self, a: Answered) -> None:
        """Hand every answer to the producer, then wait until the broker acknowledged them all."""
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
        try:
            await asyncio.gather(*futures)
        except Exception as e:
            raise DeliveryFailed(f"{type(e).__name__}: {e}") from e

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.step()


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
    await consumer.stop()   # no auto-commit: the last batch was committed in step()
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


class ConfluentLoop:
    """The same loop on confluent-kafka: ``consume`` -> answer -> ``produce`` -> ``flush`` and
    check every delivery report -> synchronous ``commit``. One thread: a rebalance callback runs
    inside ``consume``/``poll``, so never while a batch is in hand."""

    def __init__(self, s: StreamSettings, predict: PredictBatch, consumer: Any, producer: Any, *,
                 assignment_file: Path | None = None):
        self.s, self.predict, self.consumer, self.producer = s, predict, consumer, producer
        self.limits, self.targets, self.stamp = Limits.of(s), Targets.of(s), worker_headers()
        self.assignment_file = assignment_file
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

        self.consumer.subscribe([self.s.topic_requests], on_assign=on_assign)

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
        from confluent_kafka import KafkaException, TopicPartition

        msgs = self.fetch()
        if not msgs:
            return 0
        records = [Record(m.value(), m.key(), m.topic(), m.partition(), m.offset()) for m in msgs]
        a = answer(records, self.predict, self.limits, self.s.shape)
        self.deliver(a)
        try:
            self.consumer.commit(offsets=[TopicPartition(t, p, o)
                                          for (t, p), o in a.offsets.items()],
                                 asynchronous=False)
        except KafkaException as e:
            if e.args[0].code() not in _membership_codes():
                raise
            _lost_membership(e, len(records))
        self.answered += len(records)
        _log_dlq(a.dlq)
        return len(records)

    def deliver(self, a: Answered) -> None:
        errors: list[str] = []

        def report(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        produce, poll = self.producer.produce, self.producer.poll
        n = 0
        for topic, part, recs in self.targets.routes(a, time.monotonic()):
            kw = {} if part is None else {"partition": part}
            for k, v in recs:
                while True:
                    try:
                        produce(topic, v, k, headers=self.stamp, on_delivery=report, **kw)
                        break
                    except BufferError:
                        poll(0.01)
                n += 1
        left = self.producer.flush(self.s.broker_request_timeout_s)
        if left or errors:
            raise DeliveryFailed(f"{left} of {n} answers unacknowledged, {len(errors)} failed"
                                 + (f": {errors[0]}" if errors else ""))

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.step()


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
    consumer.close()   # leaves the group; the last batch was committed in step()
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
