"""The stream deployment: settings, the per-message logic and DLQ records (unit), and the real
stack (``-m stack``: real Tansu + real Faust workers + the REAL model from var/model)."""

from __future__ import annotations

import base64
import json
import os
import re
import statistics
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

from services.stream.app import (
    DLQ_ORIGINAL_MAX_BYTES,
    REASONS,
    Limits,
    Record,
    parse_request,
    process_records,
)
from services.stream.settings import (FAUST_FETCH_MAX_WAIT_MS, StreamSettings, broker_defaults,
                                      default_workers)

sys.path.insert(0, str(Path(__file__).parent))
from fixtures.stack import needs_model  # noqa: E402


# -- settings -------------------------------------------------------------------------------------
def test_settings_defaults_are_valid_and_fetch_wait_follows_the_broker():
    s = StreamSettings()
    assert s.fetch_max_wait_ms == FAUST_FETCH_MAX_WAIT_MS  # Kafka answers a waiting fetch at once
    tansu = StreamSettings.from_dict(broker_defaults("tansu"))
    assert tansu.fetch_max_wait_ms < 100 < FAUST_FETCH_MAX_WAIT_MS  # Tansu holds it to the end
    assert broker_defaults("kafka") == {}
    assert s.partitions == 0 and s.shape in ("event", "batch")  # 0 = one per worker
    assert s.broker_heartbeat_interval_s * 3 <= s.broker_session_timeout_s <= 10


def test_from_dict_rejects_unknown_keys_listing_valid_ones():
    with pytest.raises(ValueError) as e:
        StreamSettings.from_dict({"shape": "batch", "fetch_wait": 5})
    msg = str(e.value)
    assert "fetch_wait" in msg and "fetch_max_wait_ms" in msg and "take_max" in msg


@pytest.mark.parametrize("bad", [
    {"shape": "micro"}, {"partitions": -1}, {"workers": 5, "partitions": 4}, {"workers": -1},
    {"take_within_s": 0}, {"take_max": 0}, {"fetch_max_wait_ms": -1}, {"acks": 2},
    {"compression": "brotli"}, {"processing_guarantee": "maybe"}, {"produce": "yolo"},
    {"broker_heartbeat_interval_s": 5, "broker_session_timeout_s": 6},
    {"broker_session_timeout_s": 60, "broker_request_timeout_s": 30},
    {"topic_dlq": "requests"}, {"extra_faust": {"broker_session_timeout": 1}},
    {"broker_max_poll_records": 0}, {"take_mode": "sometimes"},
])
def test_invalid_settings_fail_with_a_reason(bad):
    with pytest.raises(ValueError, match="invalid stream settings"):
        StreamSettings.from_dict(bad)


def test_settings_normalise_and_resolve_workers():
    s = StreamSettings.from_dict({"acks": "all", "compression": "none"})
    assert s.acks == -1 and s.compression is None
    assert default_workers(1) == 1 and default_workers(2) == 1 and default_workers(4) == 3
    assert StreamSettings().resolved(3).workers == 2
    assert StreamSettings(workers=2).resolved(8).workers == 2
    # max(8, workers) partitions unless set (Tansu lists a partition's batches on every fetch,
    # the driver fills them sticky); set ones are kept (and must cover the workers)
    assert StreamSettings().resolved(3).partitions == 8
    assert StreamSettings(workers=12).resolved(1).partitions == 12
    assert StreamSettings(partitions=6).resolved(3).partitions == 6
    assert StreamSettings(partitions=2).resolved(3).topics() == {"requests": 2, "predictions": 8,
                                                                 "requests.dlq": 8}
    assert StreamSettings().resolved(3).answer_partitions == 8
    assert StreamSettings(partitions=12).resolved(3).topics()["predictions"] == 12
    assert StreamSettings(answer_partitions=3).resolved(3).topics()["requests.dlq"] == 3
    with pytest.raises(ValueError, match="answer_partitions"):
        StreamSettings(answer_partitions=-1)


def test_to_dict_has_every_effective_setting_and_round_trips():
    s = StreamSettings(shape="event", fetch_max_wait_ms=7, workers=1, partitions=4)
    d = s.to_dict()
    json.dumps(d)  # meta.json material
    for f in StreamSettings.field_names():
        assert f in d
    eff = d["effective"]
    assert eff["aiokafka_consumer"]["fetch_max_wait_ms"] == 7
    assert eff["aiokafka_consumer"]["fetch_max_wait_ms_faust_default"] == 1500
    assert eff["aiokafka_consumer"]["fetch_max_wait_overridden"] is True
    assert eff["faust"]["web_enabled"] is False and eff["faust"]["web_bind"] == "127.0.0.1"
    assert eff["faust"]["stream_buffer_maxsize"] == s.stream_buffer_maxsize
    assert eff["topics"] == {"requests": 4, "predictions": 8, "requests.dlq": 8}
    assert StreamSettings.from_dict(d) == s


def test_faust_still_hard_codes_the_fetch_wait_we_override():
    """If Faust ever gets a setting (or changes the constant), fetchwait.py must be revisited."""
    import faust.transport.drivers.aiokafka as drv

    src = Path(drv.__file__).read_text()
    assert f"fetch_max_wait_ms={FAUST_FETCH_MAX_WAIT_MS}" in src


def test_fetchwait_sets_the_consumer_before_start():
    import aiokafka

    from services.stream.fetchwait import apply_fetch_settings

    class Fake(aiokafka.AIOKafkaConsumer):
        def __init__(self):  # no loop/network: only the attributes aiokafka keeps
            self._fetch_max_wait_ms, self._fetch_min_bytes, self._fetcher = 1500, 1, None

    c = apply_fetch_settings(Fake(), fetch_max_wait_ms=10, fetch_min_bytes=3)
    assert (c._fetch_max_wait_ms, c._fetch_min_bytes) == (10, 3)
    started = Fake()
    started._fetcher = object()
    with pytest.raises(RuntimeError, match="before the consumer starts"):
        apply_fetch_settings(started, fetch_max_wait_ms=10, fetch_min_bytes=1)


def test_real_aiokafka_consumer_keeps_fetch_settings_in_the_attributes_we_set():
    import asyncio

    import aiokafka

    from services.stream.fetchwait import apply_fetch_settings

    async def make():
        return aiokafka.AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", fetch_max_wait_ms=1500)

    c = asyncio.run(make())
    apply_fetch_settings(c, fetch_max_wait_ms=10, fetch_min_bytes=1)
    assert c._fetch_max_wait_ms == 10


def test_build_app_installs_the_fetchwait_transport_and_raw_topics():
    from services.stream.app import build_app
    from services.stream.fetchwait import FetchWaitConsumerThread, FetchWaitTransport

    app = build_app(StreamSettings(fetch_max_wait_ms=12, bootstrap="127.0.0.1:1"),
                    datadir=Path("/tmp") / f"rvs-test-{uuid.uuid4().hex[:6]}")
    assert isinstance(app.transport, FetchWaitTransport)
    assert app.transport.fetch_max_wait_ms == 12
    assert app.transport.Consumer._new_consumer_thread.__qualname__.startswith("FetchWaitConsumer")
    assert issubclass(FetchWaitConsumerThread, __import__(
        "faust.transport.drivers.aiokafka", fromlist=["x"]).AIOKafkaConsumerThread)
    assert app.conf.web_enabled is False
    assert app.conf.broker_session_timeout == StreamSettings().broker_session_timeout_s
    assert app.rvs_requests.get_topic_name() == "requests"


def test_batches_default_to_faust_take_within_and_record_the_mode():
    s = StreamSettings()
    assert s.shape == "batch" and s.take_mode == "within" and s.take_within_s == 0.005
    assert s.to_dict()["take_mode"] == "within"
    assert StreamSettings.from_dict(StreamSettings(take_mode="ready").to_dict()).take_mode == "ready"


def _run_take(use_ready: bool, max_: int = 4, burst: int = 11) -> tuple[float, list[list[bytes]]]:
    """A real Faust agent (test context, no broker) batching with take_ready or take_events:
    (ms from one put to the batch being handed over at light load, batches of a burst)."""
    import asyncio

    import faust

    from services.stream.take import take_ready

    async def main():
        app = faust.App(f"t-take-{uuid.uuid4().hex[:6]}", broker="kafka://127.0.0.1:1",
                        autodiscover=False, web_enabled=False)
        got, stamps = [], []

        @app.agent()
        async def agent(stream):
            it = take_ready(stream, max_) if use_ready else stream.take_events(max_, within=0.05)
            async for events in it:
                got.append([e.value for e in events])
                stamps.append(time.perf_counter())
                await asyncio.sleep(0.02)

        async with agent.test_context() as ctx:
            await asyncio.sleep(0.05)
            t0 = time.perf_counter()
            await ctx.put(b"first", wait=False)
            for _ in range(100):
                if stamps:
                    break
                await asyncio.sleep(0.005)
            single_ms = (stamps[0] - t0) * 1e3
            for i in range(burst):
                await ctx.put(str(i).encode(), wait=False)
            for _ in range(200):
                if sum(map(len, got)) >= burst + 1:
                    break
                await asyncio.sleep(0.01)
        return single_ms, got

    return asyncio.run(main())


def test_take_ready_hands_over_at_once_and_batches_a_burst():
    single_ms, got = _run_take(use_ready=True)
    assert got[0] == [b"first"]
    assert single_ms < 25, f"take_ready took {single_ms:.1f} ms for a lone event (no timer wait)"
    rest = got[1:]
    assert [v for b in rest for v in b] == [str(i).encode() for i in range(11)]  # order, no loss
    assert all(1 <= len(b) <= 4 for b in rest) and max(map(len, rest)) > 1  # batched, <= max_
    # Faust's take_events, for contrast: a lone event waits for the 50 ms timer
    w_single_ms, _ = _run_take(use_ready=False, burst=1)
    assert w_single_ms > single_ms


def test_build_agent_uses_the_take_mode_setting(monkeypatch):
    """take_mode reaches the agent: "ready" -> take_ready, "within" -> Faust's take_events."""
    import asyncio

    from services.stream import app as app_mod

    calls = []

    async def no_batches():
        return
        yield  # an empty async generator

    def fake_take_ready(stream, n):
        calls.append(("ready", n))
        return no_batches()

    class FakeStream:
        def take_events(self, n, within):
            calls.append(("within", n, within))
            return no_batches()

    monkeypatch.setattr(app_mod, "take_ready", fake_take_ready)
    for mode in ("ready", "within"):
        app = app_mod.build_app(StreamSettings(take_mode=mode, take_max=7,
                                               bootstrap="127.0.0.1:1"),
                                datadir=Path("/tmp") / f"rvs-test-{uuid.uuid4().hex[:6]}")
        agent = app_mod.build_agent(app, fake_predict)
        asyncio.run(agent.fun(FakeStream()))
    assert calls == [("ready", 7), ("within", 7, 0.005)]


@pytest.mark.parametrize("produce", ["direct", "send", "send_soon"])
def test_every_answer_and_dlq_record_names_its_worker(monkeypatch, produce):
    """Each produce mode stamps ``rvs-worker: <host>/<pid>`` on predictions and DLQ records, as
    a list of (str, bytes) that aiokafka's record builder and Faust's header handling accept."""
    import asyncio
    import socket
    from types import SimpleNamespace

    from aiokafka.record.default_records import DefaultRecordBatchBuilder
    from faust.types.core import prepare_headers

    from services.stream import app as app_mod

    app = app_mod.build_app(StreamSettings(shape="event", produce=produce, bootstrap="127.0.0.1:1"),
                            datadir=Path("/tmp") / f"rvs-test-{uuid.uuid4().hex[:6]}")
    sent = []   # (topic, key, headers, partition)

    async def producer_send(topic, key, value, partition, timestamp, headers):
        sent.append((topic, key, headers, partition))

    async def start_producer():
        return SimpleNamespace(send=producer_send)

    def topic_sender(name, awaited):
        def send_soon(*, key, value, partition=None, headers=None):
            sent.append((name, key, prepare_headers(headers), partition))  # as Faust hands it on

        async def send(**kw):
            send_soon(**kw)
        return send if awaited else send_soon

    monkeypatch.setattr(app, "maybe_start_producer", start_producer)
    for topic in (app.rvs_predictions, app.rvs_dlq):
        monkeypatch.setattr(topic, "send", topic_sender(topic.get_topic_name(), True))
        monkeypatch.setattr(topic, "send_soon", topic_sender(topic.get_topic_name(), False))
    agent = app_mod.build_agent(app, fake_predict)

    class FakeStream:
        async def events(self):
            for i, value in enumerate([b'{"id":"g1","text":"good"}', b"not json"]):
                yield SimpleNamespace(message=SimpleNamespace(
                    value=value, key=b"k", topic="requests", partition=0, offset=i))

    asyncio.run(agent.fun(FakeStream()))
    assert [(t, k) for t, k, _, _ in sent] == [("predictions", b"g1"), ("requests.dlq", b"k")]
    me = f"{socket.gethostname()}/{os.getpid()}".encode()
    for _t, _k, headers, partition in sent:
        assert headers == [("rvs-worker", me)] and isinstance(headers, list)
        assert 0 <= partition < 8   # sticky answer partitioning over the 8 answer partitions
        DefaultRecordBatchBuilder.estimate_size_in_bytes(b"k", b"v", headers)  # a list, or raises


def test_sticky_partition_keeps_one_partition_per_period_and_visits_all():
    from services.sticky import sticky_partition

    assert sticky_partition(1, 123.4, 0.1) is None                  # one partition: no choice
    p = sticky_partition(8, 100.01, 0.1)
    assert sticky_partition(8, 100.08, 0.1) == p                    # same period, same partition
    assert sticky_partition(8, 100.15, 0.1) == (p + 1) % 8          # next period, the next one
    assert {sticky_partition(8, 100.05 + 0.1 * i, 0.1) for i in range(8)} == set(range(8))


def test_key_partitioning_leaves_the_partition_to_the_producer(monkeypatch):
    import asyncio
    from types import SimpleNamespace

    from services.stream import app as app_mod

    app = app_mod.build_app(StreamSettings(shape="event", answer_partitioning="key",
                                           bootstrap="127.0.0.1:1"),
                            datadir=Path("/tmp") / f"rvs-test-{uuid.uuid4().hex[:6]}")
    parts = []

    async def producer_send(topic, key, value, partition, timestamp, headers):
        parts.append(partition)

    async def start_producer():
        return SimpleNamespace(send=producer_send)

    monkeypatch.setattr(app, "maybe_start_producer", start_producer)
    agent = app_mod.build_agent(app, fake_predict)

    class FakeStream:
        async def events(self):
            yield SimpleNamespace(message=SimpleNamespace(
                value=b'{"id":"g1","text":"good"}', key=b"g1", topic="requests", partition=0,
                offset=0))

    asyncio.run(agent.fun(FakeStream()))
    assert parts == [None]
    with pytest.raises(ValueError, match="answer_partitioning"):
        StreamSettings(answer_partitioning="random")


# -- the per-message logic ------------------------------------------------------------------------
def fake_predict(texts):  # unit tests only (the real path always loads services.model)
    return [(1, 0.9) if "good" in t else (0, 0.1) for t in texts]


def rec(value, offset=7, key=b"k1"):
    return Record(value=value, key=key, topic="requests", partition=2, offset=offset)


def test_parse_request_good():
    assert parse_request(b'{"id":"a","text":"good","sent_at":1.5}') == ("a", "good", 1.5)
    assert parse_request(b'{"id":"a","text":"good"}') == ("a", "good", None)


BAD_CASES = [
    (None, "empty_message"),
    (b"", "empty_message"),
    (b"not json at all", "not_json"),
    (b"\xff\xfe\x00garbage", "not_json"),
    (b'{"id": "a", "text": "x"', "not_json"),
    (b"[1, 2, 3]", "not_object"),
    (b'"just a string"', "not_object"),
    (b"42", "not_object"),
    (b'{"text": "good"}', "missing_id"),
    (b'{"id": 5, "text": "good"}', "bad_id"),
    (b'{"id": "", "text": "good"}', "bad_id"),
    (b'{"id": "a"}', "missing_text"),
    (b'{"id": "a", "text": null}', "missing_text"),
    (b'{"id": "a", "text": 12}', "bad_text"),
    (b'{"id": "a", "text": ["good"]}', "bad_text"),
    (b'{"id": "a", "text": ""}', "empty_text"),
    (b'{"id": "a", "text": "   \\n "}', "empty_text"),
    (b'{"id": "a", "text": "good", "sent_at": "yesterday"}', "bad_sent_at"),
    (b'{"id": "a", "text": "good", "sent_at": true}', "bad_sent_at"),
    (orjson.dumps({"id": "a", "text": "x" * 101}), "text_too_large"),
    (b"x" * 2000, "too_large"),
]


@pytest.mark.parametrize("raw,reason", BAD_CASES)
def test_bad_messages_become_dlq_records_with_reason_and_origin(raw, reason):
    limits = Limits(max_message_bytes=1000, max_text_chars=100)
    preds, dlq = process_records([rec(raw)], fake_predict, limits, clock=lambda: 123.0)
    assert preds == []
    assert len(dlq) == 1
    key, value = dlq[0]
    assert key == b"k1"
    d = orjson.loads(value)
    assert d["reason"] == reason and reason in REASONS
    assert d["detail"]
    assert (d["topic"], d["partition"], d["offset"]) == ("requests", 2, 7)
    assert d["original_encoding"] == "base64"
    assert base64.b64decode(d["original"]) == (raw or b"")
    assert d["original_size"] == len(raw or b"") and d["original_truncated"] is False
    assert d["failed_at"] == 123.0
    assert d["key"] == "k1"


def test_huge_original_is_truncated_in_the_dlq():
    raw = b"{" + b"x" * (DLQ_ORIGINAL_MAX_BYTES * 3)
    _, dlq = process_records([rec(raw)], fake_predict, Limits(max_message_bytes=10**9))
    d = orjson.loads(dlq[0][1])
    assert d["reason"] == "not_json" and d["original_truncated"] is True
    assert d["original_size"] == len(raw)
    assert base64.b64decode(d["original"]) == raw[:DLQ_ORIGINAL_MAX_BYTES]


def test_a_batch_answers_the_good_and_dead_letters_the_bad_in_one_model_call():
    calls = []

    def predict(texts):
        calls.append(list(texts))
        return fake_predict(texts)

    batch = [rec(b'{"id":"g1","text":"good film","sent_at":10.0}', 1),
             rec(b"oops", 2),
             rec(b'{"id":"g2","text":"bad film"}', 3)]
    preds, dlq = process_records(batch, predict, clock=lambda: 11.0)
    assert calls == [["good film", "bad film"]]
    assert [k for k, _ in preds] == [b"g1", b"g2"]
    p1, p2 = (orjson.loads(v) for _, v in preds)
    assert p1 == {"id": "g1", "label": 1, "score": 0.9, "sent_at": 10.0, "served_at": 11.0}
    assert p2 == {"id": "g2", "label": 0, "score": 0.1, "sent_at": None, "served_at": 11.0}
    assert [orjson.loads(v)["offset"] for _, v in dlq] == [2]


def test_model_failure_isolated_per_message():
    def predict(texts):
        if any("boom" in t for t in texts):
            raise ValueError("boom")
        return fake_predict(texts)

    batch = [rec(b'{"id":"a","text":"good"}', 1), rec(b'{"id":"b","text":"boom"}', 2)]
    preds, dlq = process_records(batch, predict)
    assert [k for k, _ in preds] == [b"a"]
    d = orjson.loads(dlq[0][1])
    assert d["reason"] == "model_error" and d["id"] == "b" and "boom" in d["detail"]


def test_model_returning_wrong_length_is_a_model_error():
    preds, dlq = process_records([rec(b'{"id":"a","text":"good"}')], lambda t: [])
    assert preds == [] and orjson.loads(dlq[0][1])["reason"] == "model_error"


def test_assignment_completeness_rule():
    from services.stream.launch import group_complete

    a = {"generation": 1, "partitions": [0, 1]}
    b = {"generation": 1, "partitions": [2, 3]}
    assert group_complete([a, b], 4)[0]
    assert not group_complete([a, None], 4)[0]
    assert not group_complete([a, {"generation": 0, "partitions": [2, 3]}], 4)[0]
    assert not group_complete([a, {"generation": 1, "partitions": []}], 2)[0]
    assert not group_complete([{"generation": 1, "partitions": [0, 1, 2]}], 4)[0]


# -- the real stack -------------------------------------------------------------------------------


@pytest.fixture()
def stack(stream_stack):
    """The session's embedded broker + one Faust worker (tests/conftest.py), shared with test_fuzz.py."""
    return stream_stack


@pytest.mark.stack
@needs_model
def test_stack_200_reviews_match_the_model_in_process(stack):
    from services.model import load_model

    texts = _reviews(200)
    c = stack["client"]
    ids = [f"t-{uuid.uuid4().hex[:6]}-{i}" for i in range(len(texts))]
    c.send_many(zip(ids, texts))
    c.flush()
    missing = c.wait_for(ids, timeout=60)
    assert not missing, f"{len(missing)} of 200 unanswered"
    expected = load_model().predict_batch(texts)
    for rid, (label, score) in zip(ids, expected):
        p = c.predictions[rid]
        assert set(p) == {"id", "label", "score", "sent_at", "served_at"}
        assert p["label"] == label
        assert p["score"] == pytest.approx(score, abs=1e-12)
        assert p["served_at"] >= p["sent_at"] - 1
    assert not [d for d in c.dlq if d.get("id") in set(ids)]


@pytest.mark.stack
@needs_model
def test_stack_bad_messages_go_to_the_dlq_and_the_worker_keeps_serving(stack):
    c = stack["client"]
    n0 = len(c.dlq)
    bads = [(b"not json", "not_json"), (b"[1]", "not_object"), (b'{"id":"m1"}', "missing_text"),
            (b'{"id":"e1","text":""}', "empty_text"), (b'{"id":"w1","text":3}', "bad_text"),
            (orjson.dumps({"id": "h1", "text": "y " * 15_000}), "text_too_large")]
    for raw, _ in bads:
        c.send_raw(raw, key=b"bad")
    good = f"good-after-bad-{uuid.uuid4().hex[:6]}"
    c.send(good, "A wonderful, moving film with a great cast.")
    c.flush()
    assert not c.wait_for([good], timeout=30)
    got = c.wait_dlq(n0 + len(bads), timeout=30)[n0:]
    assert sorted(d["reason"] for d in got) == sorted(r for _, r in bads)
    for d in got:
        assert d["topic"] == "requests" and isinstance(d["partition"], int)
        assert isinstance(d["offset"], int) and d["offset"] >= 0
        assert base64.b64decode(d["original"]) in {raw for raw, _ in bads}
    assert all(p.alive() for p in stack["ep"].procs)


@pytest.mark.stack
@needs_model
def test_stack_light_load_latency_far_below_the_fetch_wait(stack):
    """At light load a request is answered far below Faust's hard-coded 1.5 s fetch wait: Apache
    Kafka answers a waiting fetch as soon as data arrives, Tansu only with the override."""
    c = stack["client"]
    texts = _reviews(21)
    lat = [c.roundtrip(f"lat-{uuid.uuid4().hex[:6]}-{i}", t) for i, t in enumerate(texts)]
    med = statistics.median(lat[1:])
    assert med < 0.3, f"median round trip {med * 1e3:.0f} ms: the fetch-wait override is not working"
    log = (stack["run"] / "logs" / "stream-worker-0.log").read_text()
    wait = stack["settings"].fetch_max_wait_ms
    assert wait == (10 if stack["broker"].name == "tansu" else FAUST_FETCH_MAX_WAIT_MS)
    installed = re.search(r"fetch_max_wait_ms=(\d+) fetch_min_bytes=1 \(Faust hard-codes 1500\)",
                          log)
    assert (installed is not None) == (wait != FAUST_FETCH_MAX_WAIT_MS), log[-2000:]
    assert installed is None or int(installed.group(1)) == wait


@pytest.mark.stack
@needs_model
def test_stack_probe_ids_are_prefixed_and_settings_recorded(stack):
    from services.stream.launch import PROBE_PREFIX

    ep = stack["ep"]
    assert ep.settings["workers"] == 1
    assert ep.settings["fetch_max_wait_ms"] == stack["settings"].fetch_max_wait_ms
    assert ep.topics == {"requests": "requests", "predictions": "predictions",
                         "dlq": "requests.dlq"}
    assert ep.versions["faust-streaming"] and ep.ready_s < 30
    saved = json.loads((stack["run"] / "stream-settings.json").read_text())
    assert saved == json.loads(json.dumps(ep.settings))
    c = stack["client"]
    c.poll(0.2)
    assert any(k.startswith(PROBE_PREFIX) for k in c.predictions)


def _reviews(n: int, seed: int = 7) -> list[str]:
    from services.model import sample_reviews

    texts, _labels = sample_reviews(n, seed)
    return list(texts)
