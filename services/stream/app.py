"""The Faust stream processor: ``requests`` -> model -> ``predictions`` (bad input -> ``requests.dlq``).

Split like Faust's own examples: :func:`build_app` makes the ``faust.App`` and its topics, and
:func:`build_agent` adds the agent; the per-message logic (:func:`parse_request`,
:func:`process_records`, the record encoders) is plain Python, unit-tested without a broker.

Wire format (docs/CONTRACTS.md): request value JSON ``{"id", "text", "sent_at"}`` (key = id; a
model that declares ``input: "json"`` also takes ``"input"``, any JSON value, instead of
``"text"``) -> prediction value ``{"id", "label", "score", "sent_at", "served_at"}`` for a model
that declares those ``answer_fields`` (the IMDB one), else ``{"id", "answer", "sent_at",
"served_at"}`` (key = id). A model that raises, answers a different number of inputs or answers
something that is not JSON (services/model/contract.py) sends the inputs concerned to the DLQ as
``model_error`` with the ``problem`` and the ``model`` named, and one line in the log per batch.
Topics use raw bytes codecs; we decode/encode with orjson ourselves (Faust's JSON codec + models
cost more).
Every prediction and DLQ record carries the header ``rvs-worker: <hostname>/<pid>``
(:func:`worker_headers`), so the driver can tell how many workers answered.

Shapes: ``event`` makes one model call per event; ``batch`` makes one model call per batch of at
most ``take_max`` events: with ``take_mode="ready"`` (default) a batch is whatever the stream has
buffered as soon as it has anything (:func:`services.stream.take.take_ready`: no timer, the batch
grows with the load); with ``take_mode="within"`` it is Faust's
``stream.take_events(take_max, within=take_within_s)`` (a free-running timer: every event waits
for the next tick, up to ``take_within_s``).

Delivery (at-least-once): Faust acks an event when the agent body is done with it (``take_events``
acks the whole batch after the body handled it), and its commit loop (every
``broker_commit_interval``/``broker_commit_every``) first flushes the producer
(``producer.flush()`` waits for every message aiokafka has accepted), then commits the acked
offsets. Every produce mode below hands its messages to aiokafka *inside* the body (``send`` and
``direct`` await aiokafka's enqueue; ``send_soon`` only queues them in Faust's ProducerBuffer, whose
flush gives up after 0.1 s without progress, which is why it is not the default), so an offset is
committed only after its prediction (or DLQ record) is produced. A crash between produce and commit
re-delivers: duplicates are possible (also under exactly_once, faust-streaming #323/#517), so the
driver dedupes by id. An exception escaping the body would make Faust ack the message and move on
(no retry), so the body never lets one escape: bad input and model failures become DLQ records.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from services.model.contract import Contract, ModelFault, call, contract_of
from services.sticky import STICKY_PERIOD_S, sticky_partition
from services.stream.settings import StreamSettings
from services.stream.take import take_ready
from services.worker_id import STREAM_HEADER, worker_id

log = logging.getLogger("services.stream")

PredictBatch = Callable[[list], Sequence[Any]]

#: Raw bytes kept in a DLQ record (base64); larger originals are truncated and flagged.
DLQ_ORIGINAL_MAX_BYTES = 65_536

#: DLQ reasons (``reason`` field of a DLQ record).
REASONS = ("empty_message", "too_large", "not_json", "not_object", "missing_id", "bad_id",
           "missing_text", "bad_text", "empty_text", "text_too_large", "bad_sent_at",
           "missing_input", "bad_input", "model_error")


class BadRequest(ValueError):
    def __init__(self, reason: str, detail: str, request_id: str | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.request_id = request_id


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 1_048_576
    max_text_chars: int = 100_000

    @classmethod
    def of(cls, s: StreamSettings) -> Limits:
        return cls(s.max_message_bytes, s.max_text_chars)


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed message, as the agent hands it to :func:`process_records`."""
    value: bytes | None
    key: bytes | None
    topic: str
    partition: int
    offset: int


# -- per-message logic (pure) ---------------------------------------------------------------------
def parse_request(raw: bytes | None, limits: Limits = Limits(), json_input: bool = False
                  ) -> tuple[str, Any, float | None]:
    """``(id, text, sent_at)`` of a request value, or :class:`BadRequest` saying why not. With
    ``json_input`` (a model that declares ``input: "json"``) ``"input"``, any JSON value but null,
    may stand instead of ``"text"``: ``(id, input, sent_at)``."""
    if not raw:
        raise BadRequest("empty_message", "message has no value")
    if len(raw) > limits.max_message_bytes:
        raise BadRequest("too_large", f"value is {len(raw)} bytes > max_message_bytes "
                                      f"{limits.max_message_bytes}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise BadRequest("not_json", f"not valid UTF-8 JSON ({e})") from None
    if not isinstance(obj, dict):
        raise BadRequest("not_object", f"JSON {type(obj).__name__}, expected an object "
                                       f'{{"id", "text", "sent_at"}}')
    rid = obj.get("id")
    if rid is None:
        raise BadRequest("missing_id", 'no "id"')
    if not isinstance(rid, str) or not rid:
        raise BadRequest("bad_id", f'"id" must be a non-empty string, got {type(rid).__name__}')
    if json_input and "input" in obj:
        return rid, _json_input(obj, rid), _sent_at(obj, rid)
    text = obj.get("text")
    if text is None:
        if json_input:
            raise BadRequest("missing_input", 'no "text" or "input"', rid)
        raise BadRequest("missing_text", 'no "text"', rid)
    if not isinstance(text, str):
        raise BadRequest("bad_text", f'"text" must be a string, got {type(text).__name__}', rid)
    if len(text) > limits.max_text_chars:
        raise BadRequest("text_too_large", f'"text" has {len(text)} characters > max_text_chars '
                                           f"{limits.max_text_chars}", rid)
    if not text.strip():
        raise BadRequest("empty_text", '"text" is empty or blank', rid)
    return rid, text, _sent_at(obj, rid)


def _json_input(obj: dict, rid: str) -> Any:
    if "text" in obj:
        raise BadRequest("bad_input", 'send either "text" or "input", not both', rid)
    if obj["input"] is None:
        raise BadRequest("missing_input", '"input" is null', rid)
    return obj["input"]


def _sent_at(obj: dict, rid: str) -> float | None:
    sent_at = obj.get("sent_at")
    if sent_at is not None and (isinstance(sent_at, bool) or not isinstance(sent_at, (int, float))):
        raise BadRequest("bad_sent_at", f'"sent_at" must be a number (epoch s), got '
                                        f"{type(sent_at).__name__}", rid)
    return sent_at


def prediction_value(rid: str, fields: dict[str, Any], sent_at: float | None,
                     served_at: float) -> bytes:
    """``{"id", **fields, "sent_at", "served_at"}``; orjson.JSONEncodeError if ``fields`` holds
    something that is not JSON."""
    return orjson.dumps({"id": rid, **fields, "sent_at": sent_at, "served_at": served_at})


def dlq_value(reason: str, detail: str, rec: Record, *, request_id: str | None = None,
              failed_at: float | None = None, fault: ModelFault | None = None) -> bytes:
    """A DLQ record; a model failure also names the ``problem`` and the ``model``."""
    raw = rec.value or b""
    kept = raw[:DLQ_ORIGINAL_MAX_BYTES]
    extra = {"problem": fault.problem, "model": fault.model} if fault is not None else {}
    return orjson.dumps({
        "reason": reason,
        "detail": detail,
        "original": base64.b64encode(kept).decode("ascii"),
        "original_encoding": "base64",
        "original_size": len(raw),
        "original_truncated": len(kept) < len(raw),
        "topic": rec.topic,
        "partition": rec.partition,
        "offset": rec.offset,
        "key": rec.key.decode("latin-1") if rec.key is not None else None,
        "id": request_id,
        "failed_at": failed_at if failed_at is not None else time.time(),
        **extra,
    })


def decode_dlq_original(value: dict) -> bytes:
    """The original bytes of a DLQ record (as far as kept)."""
    return base64.b64decode(value["original"])


Out = list[tuple[bytes | None, bytes]]


def process_records(records: Sequence[Record], predict_batch: PredictBatch,
                    limits: Limits = Limits(), clock: Callable[[], float] = time.time
                    ) -> tuple[Out, Out]:
    """Answer a batch: ``(predictions, dlq)``, each a list of ``(key, value)`` bytes.

    One model call for all good records; if it fails, each record is retried alone so one bad
    input can't sink its batch, and the ones that still fail go to the DLQ as ``model_error``
    (as does an answer that is not JSON or not the declared shape). Never raises for bad input
    or a failing model; logs one line per batch the model failed on.
    """
    contract = contract_of(predict_batch)
    json_input = contract.input == "json"
    good: list[tuple[str, Any, float | None, Record]] = []
    dlq: Out = []
    for rec in records:
        try:
            rid, inp, sent_at = parse_request(rec.value, limits, json_input)
        except BadRequest as e:
            dlq.append((rec.key, dlq_value(e.reason, e.detail, rec, request_id=e.request_id,
                                           failed_at=clock())))
            continue
        good.append((rid, inp, sent_at, rec))
    preds: Out = []
    if not good:
        return preds, dlq
    results, batch_fault = _predict(predict_batch, contract, [g[1] for g in good])
    served_at = clock()
    faults: list[ModelFault] = []
    # the IMDB shape, a (label, score) pair, is every benchmark's hot path: one dict, no checks
    f0, f1 = contract.answer_fields if contract.answer_fields and \
        len(contract.answer_fields) == 2 else (None, None)
    dumps = orjson.dumps
    for i, ((rid, _inp, sent_at, rec), r) in enumerate(zip(good, results)):
        if not isinstance(r, ModelFault):
            try:
                if f0 is not None and type(r) is tuple and len(r) == 2:
                    value = dumps({"id": rid, f0: r[0], f1: r[1], "sent_at": sent_at,
                                   "served_at": served_at})
                else:
                    value = prediction_value(rid, contract.fields(r), sent_at, served_at)
                preds.append((rid.encode(), value))
                continue
            except ModelFault as f:
                r = f
            except orjson.JSONEncodeError as e:
                r = contract.not_json([r], e, start=i)
        faults.append(r)
        dlq.append((rec.key, dlq_value(r.reason, str(r), rec, request_id=rid,
                                       failed_at=clock(), fault=r)))
    if faults or batch_fault:
        _log_faults(faults, batch_fault, len(good))
    return preds, dlq


def _predict(predict: PredictBatch, contract: Contract, inputs: list
             ) -> tuple[list[Any], ModelFault | None]:
    """Answers (or a :class:`ModelFault` each) for ``inputs``: one call; if it fails and there
    is more than one input, one call per input. Also the batch call's fault, if any."""
    try:
        out = call(predict, contract, inputs)
        return (out if isinstance(out, list) else list(out)), None
    except ModelFault as f:
        if len(inputs) == 1:
            return [f], None
        out = []
        for x in inputs:
            try:
                out.extend(call(predict, contract, [x]))
            except ModelFault as g:
                out.append(g)
        return out, f


def _log_faults(faults: list[ModelFault], batch_fault: ModelFault | None, n: int) -> None:
    """One line for a batch: what the model did, and how many inputs went to the DLQ."""
    if batch_fault is not None:
        log.warning("%s on a batch of %d; answered one by one: %d of them dead-lettered as "
                    "model_error%s", batch_fault, n, len(faults),
                    f" (the first {faults[0].detail})" if faults else "")
    else:
        log.warning("%s; %d of %d input(s) dead-lettered as model_error", faults[0],
                    len(faults), n)


# -- Faust ----------------------------------------------------------------------------------------
def build_app(settings: StreamSettings, *, datadir: Path | str | None = None,
              worker_name: str = "worker", assignment_file: Path | str | None = None) -> Any:
    """The ``faust.App`` with our consumer fetch override and the three topics (``app.rvs_*``).

    ``assignment_file``: after every rebalance the worker writes there (atomically) which
    partitions of ``requests`` it got and in which group generation; launch.py reads it to know
    that every worker has joined (Tansu's DescribeGroups reports no members, so we can't ask).
    """
    import faust  # noqa: PLC0415

    from services.stream import fetchwait  # noqa: PLC0415

    settings = settings.resolved()  # no-op for a worker (its settings file is resolved already)
    kwargs = settings.faust_settings()
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap}",
        datadir=str(datadir) if datadir else None,
        web_port=settings.web_port or _free_port(),
        broker_client_id=f"{settings.app_id}-{worker_name}",
        autodiscover=False,
        **{k: v for k, v in kwargs.items() if v is not None},
    )
    # THE fetch-wait override (services/stream/fetchwait.py), only when it changes something;
    # before any topic exists.
    if (settings.fetch_max_wait_ms, settings.fetch_min_bytes) != (
            fetchwait.FAUST_HARDCODED_FETCH_MAX_WAIT_MS, 1):
        fetchwait.install(app, fetch_max_wait_ms=settings.fetch_max_wait_ms,
                          fetch_min_bytes=settings.fetch_min_bytes)
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
           "value_serializer": "raw", "partitions": settings.partitions, "internal": False}
    app.rvs_settings = settings
    app.rvs_requests = app.topic(settings.topic_requests, **raw)
    app.rvs_predictions = app.topic(settings.topic_predictions, **raw)
    app.rvs_dlq = app.topic(settings.topic_dlq, **raw)
    if assignment_file is not None:
        _report_assignment(app, Path(assignment_file), settings.topic_requests)
    return app


def _report_assignment(app: Any, path: Path, topic: str) -> None:
    import os  # noqa: PLC0415

    @app.on_partitions_assigned.connect
    async def _on_assigned(sender: Any, assigned: Any = (), **_: Any) -> None:
        doc = {"pid": os.getpid(), "generation": app.consumer_generation_id, "time": time.time(),
               "partitions": sorted(tp.partition for tp in assigned if tp.topic == topic)}
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(doc))
        os.replace(tmp, path)
        log.info("assigned %s partitions %s (generation %s)", topic, doc["partitions"],
                 doc["generation"])


def _free_port() -> int:
    from services.procs import free_port  # noqa: PLC0415

    return free_port()


def worker_headers() -> list[tuple[str, bytes]]:
    """The Kafka headers on every answer of this worker process: ``rvs-worker: <host>/<pid>``,
    so a driver can count how many workers answered (``--scale stream=N`` under compose).

    A list of (str, bytes) tuples: aiokafka's C record builder rejects anything but a list,
    and Faust passes a list through unchanged. One list per worker, shared by every answer:
    aiokafka serialises it when the message is appended and nothing mutates it (raw codecs).
    """
    return [(STREAM_HEADER, worker_id().encode())]


def build_agent(app: Any, predict_batch: PredictBatch) -> Any:
    """Add the agent to ``app``: consume ``requests``, answer on ``predictions``/``requests.dlq``."""
    s: StreamSettings = app.rvs_settings
    limits = Limits.of(s)
    predictions, dlq_topic = app.rvs_predictions, app.rvs_dlq
    pred_name, dlq_name = s.topic_predictions, s.topic_dlq
    mode = s.produce
    stamp = worker_headers()
    n_pred, n_dlq = s.topics()[pred_name], s.topics()[dlq_name]
    by_key = s.answer_partitioning == "key"

    async def emit(preds: Out, dlq: Out) -> None:
        now = time.monotonic()
        pp = None if by_key else sticky_partition(n_pred, now, STICKY_PERIOD_S)
        pd = None if by_key else sticky_partition(n_dlq, now, STICKY_PERIOD_S)
        if mode == "direct":
            # Faust's producer (the TransactionManager under exactly_once); awaiting send() only
            # waits until aiokafka has the message in its accumulator (delivery is batched);
            # the commit loop's producer.flush() waits for delivery before offsets are committed.
            producer = await app.maybe_start_producer()
            send = producer.send
            for k, v in preds:
                await send(pred_name, k, v, pp, None, stamp)
            for k, v in dlq:
                await send(dlq_name, k, v, pd, None, stamp)
        elif mode == "send":
            for k, v in preds:
                await predictions.send(key=k, value=v, partition=pp, headers=stamp)
            for k, v in dlq:
                await dlq_topic.send(key=k, value=v, partition=pd, headers=stamp)
        else:  # send_soon: Faust's ProducerBuffer, no await per message
            for k, v in preds:
                predictions.send_soon(key=k, value=v, partition=pp, headers=stamp)
            for k, v in dlq:
                dlq_topic.send_soon(key=k, value=v, partition=pd, headers=stamp)
        if dlq:
            log.warning("dead-lettered %d message(s): %s", len(dlq),
                        ", ".join(sorted({orjson.loads(v)["reason"] for _k, v in dlq})))

    async def fail(exc: BaseException, n: int) -> None:
        # Not bad input (that goes to the DLQ) but e.g. the producer failing. Faust would ack
        # the message and go on (no retry), losing it silently; stop the worker instead, so the
        # uncommitted offsets are re-delivered to whoever takes the partitions over.
        log.critical("agent: %s: %s while answering %d message(s); stopping the worker",
                     type(exc).__name__, exc, n, exc_info=exc)
        await app.crash(exc)

    def to_record(event: Any) -> Record:
        m = event.message
        return Record(m.value, m.key, m.topic, m.partition, m.offset)

    if s.shape == "event":
        async def answer(stream: Any) -> None:
            async for event in stream.events():
                try:
                    preds, dlq = process_records([to_record(event)], predict_batch, limits)
                    await emit(preds, dlq)
                except Exception as exc:
                    await fail(exc, 1)
    else:
        take_max, within = s.take_max, s.take_within_s

        def batches(stream: Any) -> Any:
            if s.take_mode == "ready":
                return take_ready(stream, take_max)
            return stream.take_events(take_max, within=within)

        async def answer(stream: Any) -> None:
            async for events in batches(stream):
                try:
                    preds, dlq = process_records([to_record(e) for e in events],
                                                 predict_batch, limits)
                    await emit(preds, dlq)
                except Exception as exc:
                    await fail(exc, len(events))

    answer.__name__ = answer.__qualname__ = "answer"
    return app.agent(app.rvs_requests, name=f"{s.app_id}.answer",
                     concurrency=s.agent_concurrency)(answer)
