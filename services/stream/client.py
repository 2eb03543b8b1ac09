"""A small confluent-kafka client of the stream deployment, for tests and measurements.

(The benchmark's driver lives in loadgen/; this is the minimum to send requests and read answers.)
Its consumer reads ``predictions`` and ``requests.dlq`` from the beginning of every partition (fresh
topics per run: on Tansu "seek to end" can't be trusted) with a small ``fetch.wait.max.ms``:
Tansu holds an empty fetch for the whole wait, and librdkafka's default is 500 ms.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import orjson

#: A consumer of `predictions` on Tansu must use a small fetch wait too (librdkafka default 500).
CONSUMER_FETCH_WAIT_MS = 5


class StreamClient:
    def __init__(self, bootstrap: str, *, requests: str = "requests",
                 predictions: str = "predictions", dlq: str = "requests.dlq",
                 linger_ms: int = 0, fetch_wait_ms: int = CONSUMER_FETCH_WAIT_MS):
        from confluent_kafka import Consumer, Producer, TopicPartition

        self.topic_requests, self.topic_predictions, self.topic_dlq = requests, predictions, dlq
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": linger_ms,
                                  "log_level": 3, "queue.buffering.max.messages": 1_000_000})
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "rvs-stream-client",
                                  "enable.auto.commit": False, "log_level": 3,
                                  "fetch.wait.max.ms": fetch_wait_ms, "fetch.min.bytes": 1})
        md = self.consumer.list_topics(timeout=10)
        assign = []
        for t in (predictions, dlq):
            if t not in md.topics:
                raise RuntimeError(f"topic {t!r} does not exist on {bootstrap}")
            assign += [TopicPartition(t, p, 0) for p in sorted(md.topics[t].partitions)]
        self.consumer.assign(assign)
        self.predictions: dict[str, dict] = {}   # id -> prediction value (first seen)
        self.received_at: dict[str, float] = {}  # id -> time.time() when first seen
        self.duplicates = 0
        self.dlq: list[dict] = []

    # -- sending ----------------------------------------------------------------------------------
    def send(self, rid: str, text: str, *, sent_at: float | None = None) -> float:
        now = time.time() if sent_at is None else sent_at
        self.producer.produce(self.topic_requests, key=rid.encode(),
                              value=orjson.dumps({"id": rid, "text": text, "sent_at": now}))
        self.producer.poll(0)
        return now

    def send_raw(self, value: bytes | None, key: bytes | None = None) -> None:
        self.producer.produce(self.topic_requests, key=key, value=value)
        self.producer.poll(0)

    def send_many(self, items: Iterable[tuple[str, str]]) -> int:
        n = 0
        produce, poll = self.producer.produce, self.producer.poll
        for rid, text in items:
            while True:
                try:
                    produce(self.topic_requests, key=rid.encode(),
                            value=orjson.dumps({"id": rid, "text": text, "sent_at": time.time()}))
                    break
                except BufferError:
                    poll(0.01)
            n += 1
            if n % 1000 == 0:
                poll(0)
        return n

    def flush(self, timeout: float = 30.0) -> None:
        left = self.producer.flush(timeout)
        if left:
            raise RuntimeError(f"{left} request(s) not acknowledged by the broker")

    # -- receiving --------------------------------------------------------------------------------
    def poll(self, timeout: float = 0.05, max_messages: int = 10_000) -> int:
        # poll() returns as soon as one message is there (consume() waits for the whole timeout
        # unless max_messages arrive), then drain what else is ready without waiting.
        first = self.consumer.poll(timeout)
        if first is None:
            return 0
        now = time.time()
        msgs = [first, *self.consumer.consume(max_messages, 0)]
        for m in msgs:
            if m.error():
                continue
            v = orjson.loads(m.value())
            if m.topic() == self.topic_dlq:
                self.dlq.append(v)
                continue
            rid = v.get("id")
            if rid in self.predictions:
                self.duplicates += 1
            else:
                self.predictions[rid] = v
                self.received_at[rid] = now
        return len(msgs)

    def wait_for(self, ids: Iterable[str], timeout: float = 30.0) -> set[str]:
        """Poll until every id has a prediction; returns the ids still missing at the deadline."""
        missing = {i for i in ids if i not in self.predictions}
        deadline = time.monotonic() + timeout
        while missing and time.monotonic() < deadline:
            self.poll(0.05)
            missing = {i for i in missing if i not in self.predictions}
        return missing

    def wait_dlq(self, n: int, timeout: float = 30.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.dlq) < n and time.monotonic() < deadline:
            self.poll(0.05)
        return self.dlq

    def wait_dlq_keys(self, keys: Iterable[str], timeout: float = 30.0) -> dict[str, dict]:
        """Poll until a DLQ record is there for every key; returns ``{key: record}`` found
        (fewer than asked at the deadline)."""
        want, found, seen = set(keys), {}, 0
        deadline = time.monotonic() + timeout
        while True:
            for d in self.dlq[seen:]:
                if d.get("key") in want:
                    found[d["key"]] = d
            seen = len(self.dlq)
            if len(found) == len(want) or time.monotonic() > deadline:
                return found
            self.poll(0.05)

    def roundtrip(self, rid: str, text: str, timeout: float = 10.0) -> float:
        """Send one request, wait for its prediction; seconds from send to receipt."""
        t0 = time.perf_counter()
        self.send(rid, text)
        self.producer.flush(5)
        if self.wait_for([rid], timeout):
            raise TimeoutError(f"no prediction for {rid} within {timeout}s")
        return time.perf_counter() - t0

    def close(self) -> None:
        self.consumer.close()
        self.producer.flush(5)
        self.producer = None  # destroy it now, not at interpreter exit after the broker is gone

    def __enter__(self) -> StreamClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
