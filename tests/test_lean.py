"""The lean stream engine (services/stream/lean.py): its loop's delivery rules with fake clients
(unit), and the lean worker on the real embedded Kafka with the real model (``-m stack``)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

from services.stream import lean
from services.stream.app import Record
from services.stream.settings import StreamSettings

sys.path.insert(0, str(Path(__file__).parent))
from fixtures.stack import needs_model  # noqa: E402

ME = f"{socket.gethostname()}/{os.getpid()}".encode()


def fake_predict(texts):  # unit tests only (the real path always loads services.model)
    return [(1, 0.9) if "good" in t else (0, 0.1) for t in texts]


def msg(offset: int, value: bytes, partition: int = 0, key: bytes | None = b"k"):
    """An aiokafka ConsumerRecord's attributes the loop reads."""
    return SimpleNamespace(topic="requests", partition=partition, offset=offset, key=key,
                           value=value)


def good(i: int) -> bytes:
    return orjson.dumps({"id": f"g{i}", "text": f"good film {i}", "sent_at": 1.0})


# -- fakes of aiokafka's consumer and producer ----------------------------------------------------
class FakeConsumer:
    def __init__(self, batches):
        self.batches = list(batches)     # each: {tp: [records]}
        self.commits = []
        self.listener = None
        self.events = []                 # the order things happened in

    def subscribe(self, topics, listener=None):
        self.listener = listener

    async def getmany(self, timeout_ms=0, max_records=None):
        if not self.batches:
            await asyncio.sleep(0)
            return {}
        return self.batches.pop(0)

    async def commit(self, offsets):
        self.events.append("commit")
        self.commits.append({(tp.topic, tp.partition): o for tp, o in offsets.items()})


class FakeProducer:
    """send_batch/send return futures the test resolves; ``sent`` keeps what was handed over."""

    def __init__(self, events, max_batch_size=16384):
        from aiokafka import AIOKafkaProducer

        # a real (never started) producer makes the real BatchBuilders, with their size limit
        self.real = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1",
                                     max_batch_size=max_batch_size)
        self.events = events
        self.sent = []                   # (topic, partition, [(key, value, headers)])
        self.futures = []

    def create_batch(self):
        builder = self.real.create_batch()
        builder.rvs_records = []
        append = builder.append

        def recording_append(*, key, value, timestamp, headers):
            meta = append(key=key, value=value, timestamp=timestamp, headers=headers)
            if meta is not None:
                builder.rvs_records.append((key, value, headers))
            return meta
        builder.append = recording_append
        return builder

    def _future(self):
        fut = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        return fut

    async def send_batch(self, batch, topic, *, partition):
        self.events.append(f"send {topic}")
        self.sent.append((topic, partition, list(batch.rvs_records)))
        return self._future()

    async def send(self, topic, value=None, key=None, partition=None, timestamp_ms=None,
                   headers=None):
        self.events.append(f"send {topic}")
        self.sent.append((topic, partition, [(key, value, headers)]))
        return self._future()


def aio_loop(batches, settings=None, predict=fake_predict, **producer_kw):
    s = settings or StreamSettings(engine="lean", partitions=8)
    consumer = FakeConsumer(batches)
    producer = FakeProducer(consumer.events, **producer_kw)
    return lean.AioLoop(s, predict, consumer, producer), consumer, producer


async def settle(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


# -- aiokafka loop: delivery before commit --------------------------------------------------------
def test_offsets_are_committed_only_after_the_broker_acknowledged_every_answer():
    from aiokafka import TopicPartition

    tp0, tp3 = TopicPartition("requests", 0), TopicPartition("requests", 3)

    async def main():
        loop, consumer, producer = aio_loop([{tp0: [msg(5, good(1)), msg(6, good(2))],
                                              tp3: [msg(41, b"not json", partition=3)]},
                                             {tp0: [msg(7, good(3))]}])
        assert await loop.step() == 3            # handed over; acks and commit come behind
        assert [e for e in consumer.events if e.startswith("send")] == [
            "send predictions", "send requests.dlq"]
        producer.futures[0].set_result(None)
        await settle()
        assert await loop.step() == 1            # the next batch is answered meanwhile
        assert consumer.commits == []            # the first one's DLQ record is not acked
        producer.futures[1].set_result(None)
        await settle()
        await loop.reap()
        await settle()
        # one past the highest offset of each partition, the dead-lettered one included; the
        # second batch is not acknowledged, so not committed
        assert consumer.commits == [{("requests", 0): 7, ("requests", 3): 42}]
        producer.futures[2].set_result(None)
        await loop.settle()
        assert consumer.commits[-1] == {("requests", 0): 8} and loop.answered == 4

    asyncio.run(main())


def test_the_loop_waits_when_too_many_batches_are_unacknowledged():
    from aiokafka import TopicPartition

    async def main():
        tp = TopicPartition("requests", 0)
        n = lean.MAX_IN_FLIGHT + 1
        loop, consumer, producer = aio_loop([{tp: [msg(i, good(i))]} for i in range(n)])
        for _ in range(n - 1):
            assert await loop.step() == 1        # up to MAX_IN_FLIGHT: no wait
        last = asyncio.create_task(loop.step())
        await settle()
        assert len(producer.futures) == n and not last.done()   # one too many: waits
        producer.futures[0].set_result(None)
        assert await asyncio.wait_for(last, 1) == 1
        for f in producer.futures[1:]:
            f.set_result(None)
        await loop.settle()
        assert consumer.commits[-1] == {("requests", 0): n} and loop.answered == n

    asyncio.run(main())


def test_a_failed_delivery_raises_and_commits_nothing():
    from aiokafka import TopicPartition
    from aiokafka.errors import KafkaTimeoutError

    async def main():
        tp = TopicPartition("requests", 0)
        loop, consumer, producer = aio_loop([{tp: [msg(0, good(1))]}, {tp: [msg(1, good(2))]}])
        await loop.step()
        producer.futures[0].set_exception(KafkaTimeoutError("no ack"))
        await settle()
        with pytest.raises(lean.DeliveryFailed, match="KafkaTimeoutError"):
            await loop.step()                    # the next batch finds the failure
        producer.futures[1].set_result(None)     # a later batch delivered: still no commit
        await loop.settle()
        assert consumer.commits == [] and loop.answered == 0

    asyncio.run(main())


def test_a_failure_seen_by_a_revocation_stops_the_loop_before_any_later_commit():
    from aiokafka import TopicPartition

    async def main():
        tp = TopicPartition("requests", 0)
        loop, consumer, producer = aio_loop([{tp: [msg(0, good(1))]}, {tp: [msg(1, good(2))]}])
        loop.subscribe()
        await loop.step()
        producer.futures[0].set_exception(RuntimeError("broker gone"))
        await consumer.listener.on_partitions_revoked(set())   # aiokafka swallows its errors
        with pytest.raises(lean.DeliveryFailed, match="broker gone"):
            await loop.step()
        assert consumer.commits == [] and len(producer.futures) == 1

    asyncio.run(main())


def test_answers_have_the_faust_workers_wire_format_header_and_sticky_partition():
    from aiokafka import TopicPartition

    async def main():
        loop, consumer, producer = aio_loop([{TopicPartition("requests", 2): [
            msg(0, good(1), 2), msg(1, b'{"id":"x","text":""}', 2), msg(2, good(2), 2)]}])
        await loop.step()
        (ptopic, ppart, preds), (dtopic, dpart, dlq) = producer.sent
        assert (ptopic, dtopic) == ("predictions", "requests.dlq")
        assert 0 <= ppart < 8 and 0 <= dpart < 8            # sticky over 8 answer partitions
        assert [k for k, _v, _h in preds] == [b"g1", b"g2"]
        assert set(orjson.loads(preds[0][1])) == {"id", "label", "score", "sent_at", "served_at"}
        d = orjson.loads(dlq[0][1])
        assert d["reason"] == "empty_text" and (d["partition"], d["offset"]) == (2, 1)
        assert {h for _k, _v, hs in preds + dlq for h in map(tuple, hs)} == {("rvs-worker", ME)}

    asyncio.run(main())


def test_a_big_batch_is_split_over_several_record_batches_none_lost():
    from aiokafka import TopicPartition

    async def main():
        recs = [msg(i, good(i)) for i in range(300)]
        loop, consumer, producer = aio_loop([{TopicPartition("requests", 0): recs}],
                                            max_batch_size=2048)
        assert await loop.step() == 300
        for f in producer.futures:
            f.set_result(None)
        await loop.settle()
        assert len(producer.sent) > 1                            # the 2 KB limit split it
        assert len({part for _t, part, _r in producer.sent}) == 1    # all to one partition
        keys = [k for _t, _p, rs in producer.sent for k, _v, _h in rs]
        assert keys == [f"g{i}".encode() for i in range(300)]    # every answer, in order, once
        assert consumer.commits == [{("requests", 0): 300}]

    asyncio.run(main())


def test_key_partitioning_sends_each_answer_with_its_key_and_no_partition():
    from aiokafka import TopicPartition

    async def main():
        s = StreamSettings(engine="lean", answer_partitioning="key")
        loop, consumer, producer = aio_loop(
            [{TopicPartition("requests", 0): [msg(0, good(1)), msg(1, good(2))]}], settings=s)
        await loop.step()
        assert [(t, p, [k for k, _v, _h in r]) for t, p, r in producer.sent] == [
            ("predictions", None, [b"g1"]), ("predictions", None, [b"g2"])]

    asyncio.run(main())


def test_a_raising_model_dead_letters_the_batch_and_still_commits():
    from aiokafka import TopicPartition

    calls = []

    def broken(texts):
        calls.append(len(texts))
        raise MemoryError("model down")

    async def main():
        loop, consumer, producer = aio_loop(
            [{TopicPartition("requests", 0): [msg(0, good(1)), msg(1, good(2))]}], predict=broken)
        await loop.step()
        for f in producer.futures:
            f.set_result(None)
        await loop.settle()
        assert calls == [2, 1, 1]                    # the batch, then each alone
        [(topic, _p, dlq)] = producer.sent
        assert topic == "requests.dlq"
        assert [orjson.loads(v)["reason"] for _k, v, _h in dlq] == ["model_error"] * 2
        assert consumer.commits == [{("requests", 0): 2}]   # answered (dead-lettered), not lost

    asyncio.run(main())


def test_a_commit_refused_after_a_rebalance_keeps_the_worker_serving():
    """Frozen past its session timeout, the worker finds its commit refused: the answers are out,
    the partitions' new owner answers them again; the loop goes on (the client rejoins)."""
    from aiokafka import TopicPartition
    from aiokafka.errors import CommitFailedError

    async def main():
        tp = TopicPartition("requests", 0)
        loop, consumer, producer = aio_loop([{tp: [msg(0, good(1))]}, {tp: [msg(1, good(2))]}])
        real_commit = consumer.commit

        async def refuse_once(offsets):
            consumer.commit = real_commit
            raise CommitFailedError("generation moved on")
        consumer.commit = refuse_once
        for _ in range(2):
            assert await loop.step() == 1
            producer.futures[-1].set_result(None)
            await loop.settle()                  # the first commit is refused, no exception
        assert consumer.commits == [{("requests", 0): 2}] and loop.answered == 2

    asyncio.run(main())


def test_a_revocation_waits_for_the_batch_in_hand_to_be_committed():
    from aiokafka import TopicPartition

    async def main():
        loop, consumer, producer = aio_loop([{TopicPartition("requests", 0): [msg(0, good(1))]}])
        loop.subscribe()
        await loop.step()
        revoke = asyncio.create_task(consumer.listener.on_partitions_revoked(set()))
        await settle()
        assert not revoke.done()                     # the batch is not committed yet
        producer.futures[0].set_result(None)
        await asyncio.wait_for(revoke, 1)
        assert consumer.commits == [{("requests", 0): 1}]

    asyncio.run(main())


def test_the_assignment_file_has_what_launch_reads(tmp_path):
    from aiokafka import TopicPartition

    from services.stream.launch import assignments, group_complete

    async def main():
        loop, consumer, _ = aio_loop([])
        loop.assignment_file = tmp_path / "assignment.json"
        consumer._coordinator = SimpleNamespace(generation=4)
        loop.subscribe()
        await consumer.listener.on_partitions_assigned(
            {TopicPartition("requests", p) for p in (3, 1, 2, 0)}
            | {TopicPartition("other", 9)})

    asyncio.run(main())
    [doc] = assignments([tmp_path])
    assert doc["pid"] == os.getpid() and doc["generation"] == 4 and doc["time"] > 0
    assert doc["partitions"] == [0, 1, 2, 3]
    assert group_complete([doc], 4) == (True, "ok")


def test_event_shape_calls_the_model_once_per_record():
    calls = []

    def predict(texts):
        calls.append(len(texts))
        return fake_predict(texts)

    recs = [Record(good(i), b"k", "requests", 0, i) for i in range(3)]
    a = lean.answer(recs, predict, lean.Limits(), "event")
    assert calls == [1, 1, 1] and len(a.preds) == 3
    calls.clear()
    a = lean.answer(recs, predict, lean.Limits(), "batch")
    assert calls == [3] and a.offsets == {("requests", 0): 3}


# -- confluent-kafka loop -------------------------------------------------------------------------
class FakeCKMessage:
    def __init__(self, offset, value, partition=0):
        self._o, self._v, self._p = offset, value, partition

    def error(self):
        return None

    def value(self):
        return self._v

    def key(self):
        return b"k"

    def topic(self):
        return "requests"

    def partition(self):
        return self._p

    def offset(self):
        return self._o


class FakeCKConsumer:
    def __init__(self, msgs, events):
        self.msgs, self.events, self.commits = list(msgs), events, []

    def consume(self, n, timeout):
        out, self.msgs = self.msgs[:n], self.msgs[n:]
        return out

    def poll(self, timeout):
        return None

    def commit(self, offsets, asynchronous):
        self.events.append("commit")
        self.commits.append({(tp.topic, tp.partition): tp.offset for tp in offsets})


class FakeCKProducer:
    def __init__(self, events, fail: str | None = None):
        self.events, self.fail, self.pending, self.sent = events, fail, [], []

    def produce(self, topic, value, key, headers, on_delivery, partition=None):
        self.sent.append((topic, partition, key, headers))
        self.pending.append(on_delivery)

    def poll(self, timeout):
        if timeout:                # librdkafka calls the delivery reports inside poll()
            for cb in self.pending:
                cb(self.fail, None)
            self.pending = []
        return 0


def test_confluent_loop_commits_after_the_delivery_reports_and_not_on_a_failed_one():
    s = StreamSettings(engine="lean", lean_client="confluent", take_max=2)
    events: list[str] = []
    consumer = FakeCKConsumer([FakeCKMessage(0, good(1)), FakeCKMessage(1, b"[1]", 5),
                               FakeCKMessage(2, good(3))], events)
    producer = FakeCKProducer(events)
    loop = lean.ConfluentLoop(s, fake_predict, consumer, producer)
    assert loop.step() == 2                                   # at most take_max per batch
    assert consumer.commits == []                             # no delivery report yet
    assert [(t, k) for t, _p, k, _h in producer.sent] == [("predictions", b"g1"),
                                                          ("requests.dlq", b"k")]
    assert all(h == [("rvs-worker", ME)] for *_x, h in producer.sent)
    producer.poll(1)                                          # its reports come, all fine
    assert consumer.commits == []                             # committed by the next step
    producer.fail = "KafkaError{code=_MSG_TIMED_OUT}"
    assert loop.step() == 1
    assert consumer.commits == [{("requests", 0): 1, ("requests", 5): 2}]
    with pytest.raises(lean.DeliveryFailed, match="1 failed"):
        loop.settle(sync=True)                               # the second one's report failed
    assert len(consumer.commits) == 1                        # the failed batch: no commit


def test_generation_is_read_from_librdkafkas_group_metadata():
    # as confluent-kafka 2.16 / librdkafka returned it on the embedded Kafka
    meta = (b"CGMDv2:" + (7).to_bytes(4, sys.byteorder) + b"rvs-stream\x00rdkafka-d5b0\x00\x01")
    assert lean.generation_of(meta) == 7
    assert lean.generation_of(b"something else") == -1


# -- settings and launch --------------------------------------------------------------------------
def test_engine_setting_is_validated_and_recorded():
    assert StreamSettings().engine == "faust"
    with pytest.raises(ValueError, match="engine"):
        StreamSettings(engine="spark")
    with pytest.raises(ValueError, match="lean_client"):
        StreamSettings(engine="lean", lean_client="kafka-python")
    with pytest.raises(ValueError, match="at-least-once only"):
        StreamSettings(engine="lean", processing_guarantee="exactly_once")
    s = StreamSettings(engine="lean", take_max=128, fetch_max_wait_ms=9, bootstrap="h:1")
    d = s.to_dict()
    eff = d["effective"]
    assert d["engine"] == "lean" and eff["engine"] == "lean" and "faust" not in eff
    assert eff["lean"]["client"] == "aiokafka"
    c = eff["lean"]["consumer"]
    assert (c["group_id"], c["max_poll_records"], c["fetch_max_wait_ms"]) == ("rvs-stream", 128, 9)
    assert c["enable_auto_commit"] is False and eff["lean"]["producer"]["acks"] == "all"
    assert StreamSettings.from_dict(d) == s
    ck = StreamSettings(engine="lean", lean_client="confluent").to_dict()["effective"]["lean"]
    assert ck["consumer"]["enable.auto.commit"] is False and ck["producer"]["acks"] == -1
    assert ck["producer"]["linger.ms"] == 5   # librdkafka: 0 = one request per answer
    assert StreamSettings(engine="lean", lean_client="confluent", linger_ms=2
                          ).confluent_producer_config()["linger.ms"] == 2
    assert StreamSettings().to_dict()["effective"]["engine"] == "faust"


def test_the_real_clients_accept_the_lean_configs():
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from confluent_kafka import Consumer, Producer

    s = StreamSettings(engine="lean", bootstrap="127.0.0.1:1", compression="gzip")

    async def make():
        await AIOKafkaConsumer(**s.aiokafka_consumer_config()).stop()
        AIOKafkaProducer(**s.aiokafka_producer_config())

    asyncio.run(make())
    Consumer(s.confluent_consumer_config()).close()
    Producer(s.confluent_producer_config())


def test_launch_starts_the_lean_subcommand_and_a_restart_reuses_its_argv(tmp_path):
    from services.stream import __main__ as cli
    from services.stream import launch

    argv = launch.worker_argv(tmp_path / "s.json", "worker-0", tmp_path / "d", "lean")
    assert argv[1:4] == ["-m", "services.stream", "lean"]
    assert launch.worker_datadir(SimpleNamespace(argv=argv)) == tmp_path / "d"
    assert launch.worker_argv(tmp_path / "s.json", "w", tmp_path / "d")[3] == "worker"
    assert launch.versions("lean")["engine"] == "lean"
    with pytest.raises(SystemExit):   # the subcommand exists and wants its settings
        cli.main(["lean"])


# -- the real stack -------------------------------------------------------------------------------
@pytest.fixture()
def lean_stack(tmp_path):
    """A fresh embedded broker (last core) + one lean worker (first core) with the real model."""
    from services import procs
    from services.broker import start_broker
    from services.stream import launch
    from services.stream.client import StreamClient

    cpus = sorted(os.sched_getaffinity(0))
    svc, brk = ([cpus[0]], [cpus[-1]]) if len(cpus) > 1 else (None, None)
    sup = procs.Supervisor(tmp_path / "logs")
    try:
        broker = start_broker(sup, tmp_path, cpus=brk)
        s = StreamSettings(engine="lean", workers=1)
        ep = launch.start(sup, s, tmp_path, bootstrap=broker.bootstrap, cpus=svc, timeout_s=60)
        client = StreamClient(broker.bootstrap)
        yield {"sup": sup, "ep": ep, "client": client, "settings": s, "run": tmp_path}
        client.close()
    finally:
        pids = [p.pid for p in sup.procs]
        sup.stop_all()
    assert pids and not any(procs.group_alive(p) for p in pids), "a stack process outlived the test"


@pytest.mark.stack
@needs_model
def test_stack_lean_worker_answers_dead_letters_and_redelivers_after_a_kill(lean_stack):
    from services.model import load_model, sample_reviews
    from services.stream import launch

    c, sup, ep = lean_stack["client"], lean_stack["sup"], lean_stack["ep"]
    assert ep.procs[0].argv[3] == "lean" and ep.versions["engine"] == "lean"
    assert ep.settings["effective"]["engine"] == "lean"

    # 1. good requests get the model's answers, a bad one goes to the DLQ
    texts = list(sample_reviews(50, 3)[0])
    ids = [f"ok-{uuid.uuid4().hex[:6]}-{i}" for i in range(len(texts))]
    c.send_many(zip(ids, texts))
    c.send_raw(b"definitely not json", key=b"bad-1")
    c.flush()
    assert not c.wait_for(ids, timeout=30)
    for rid, (label, score) in zip(ids, load_model().predict_batch(texts)):
        assert c.predictions[rid]["label"] == label
        assert c.predictions[rid]["score"] == pytest.approx(score, abs=1e-12)
    assert c.wait_dlq_keys(["bad-1"], timeout=30)["bad-1"]["reason"] == "not_json"

    # 2. SIGKILL the worker while it is answering a burst: nothing is committed after the last
    # acknowledged batch, so what it had not answered is served after the restart
    burst = [f"kill-{uuid.uuid4().hex[:6]}-{i}" for i in range(10_000)]
    c.send_many((rid, texts[i % len(texts)]) for i, rid in enumerate(burst))
    c.flush()
    deadline = time.monotonic() + 30
    while sum(r in c.predictions for r in burst) < 500 and time.monotonic() < deadline:
        c.poll(0.01)
    worker = ep.procs[0]
    os.kill(worker.pid, signal.SIGKILL)
    worker.popen.wait(timeout=10)
    c.poll(0.5)
    before = {r for r in burst if r in c.predictions}
    assert 500 <= len(before) < len(burst), "the kill did not land mid-burst"
    new = launch.restart_worker(sup, worker)
    assert new.argv == worker.argv and new.pid != worker.pid
    missing = c.wait_for(burst, timeout=90)
    assert not missing, f"{len(missing)} of {len(burst)} requests lost after the kill"
    assert new.alive()

    # 3. SIGTERM: the worker finishes, commits, leaves the group and exits 0
    sup.stop(new)
    assert new.popen.returncode == 0, new.log_tail(20)
    assert "leaving the group" in new.log_tail(5)
