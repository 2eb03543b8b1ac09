"""Every knob of the stream deployment, in one frozen dataclass.

``StreamSettings.to_dict()`` is what goes into meta.json: every EFFECTIVE setting, including the
consumer fetch wait that Faust itself hard-codes (see services/stream/fetchwait.py) and the
Faust settings derived from ours (``faust_settings()``), so a run says exactly what ran.

Defaults were chosen by measurement (``python -m services.stream.measure``, ``make ceiling``; the
table of what was tried is in the README, "Both deployments at their best"). The ones that matter:

* ``fetch_max_wait_ms``: Faust hard-codes aiokafka's 1500. Apache Kafka answers a waiting fetch
  as soon as ``fetch_min_bytes`` arrive (measured with ``python -m services.stream.measure --only
  "fetch wait"``: light-load p50 21 ms at 1500), so on Kafka Faust's own value stays. Tansu holds
  an empty fetch for the whole wait even when data arrives meanwhile (p50 754 ms at 1500): with
  ``BROKER=tansu`` the launcher sets 10 ms (:func:`broker_defaults`), a broker artefact, not
  streaming's.
* ``take_mode="ready"``: a batch is handed to the model as soon as the stream has buffered any
  event (services/stream/take.py), instead of Faust's ``take_events`` timer, which made every
  event wait for the next tick (0..``take_within_s``; ~5 ms p50 at light load with 10 ms).
  ``take_mode="within"`` keeps Faust's behaviour (``take_within_s`` applies only then).
* ``engine``: "faust" (the Faust worker, the default) or "lean" (services/stream/lean.py, a plain
  consumer loop with the same wire format, consumer group and readiness file): the same load on
  both tells Faust's own cost from streaming's (``make ceiling``'s ``stream-lean/*`` variants).
  For the lean engine ``effective`` lists what its consumer and producer really get.
* ``broker_session_timeout=6`` / ``broker_heartbeat_interval=1``: Kafka's group.min.session
  .timeout.ms is 6 s, and a dead worker's partitions move after the session timeout: 6 s instead
  of Faust's 60 s makes a worker kill a 6 s outage, not a minute (Tansu also holds a group join for
  about half the session timeout).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

SHAPES = ("event", "batch")
TAKE_MODES = ("ready", "within")
PRODUCE_MODES = ("send", "send_soon", "direct")
ANSWER_PARTITIONING = ("sticky", "key")
GUARANTEES = ("at_least_once", "exactly_once")
#: "faust": the Faust worker (services/stream/app.py); "lean": a plain consumer loop with the same
#: wire format (services/stream/lean.py), so Faust's own cost can be told from streaming's.
ENGINES = ("faust", "lean")
#: The lean engine's Kafka client: aiokafka (the one Faust itself uses) or confluent-kafka.
LEAN_CLIENTS = ("aiokafka", "confluent")
#: How long the lean loop waits for a record before it looks at its stop flag again.
LEAN_POLL_TIMEOUT_MS = 100
#: linger.ms of the lean engine's confluent-kafka producer when ``linger_ms`` is 0.
LEAN_CONFLUENT_LINGER_MS = 5

#: Partitions of `predictions` and the DLQ when not set: measured on Tansu 0.6.0 with
#: ``python -m bench.broker_drift`` (100 msg/s, 60 s), its CPU went 19 % -> 89 % with one
#: partition (p99 8 ms -> 1 s) and 19 % -> 30 % with 8 (p99 ~10 ms throughout). Filled one at
#: a time (``answer_partitioning="sticky"``), so that a produce request stays one batch.
DEFAULT_ANSWER_PARTITIONS = 8
#: Partitions of `requests` when not set: max(8, workers), filled sticky by the driver
#: (services/sticky.py). Measured in `steady` with one worker: p50 / p99 18.2 / 43.0 ms and a
#: flat broker (25 -> 36 %) with 8, against 22.0 / 47.2 ms and 26 -> 59 % with one.
DEFAULT_PARTITIONS = 8
COMPRESSIONS = (None, "gzip", "snappy", "lz4", "zstd")
ACKS = (-1, 0, 1)

#: Faust's own value for the consumer fetch wait (faust/transport/drivers/aiokafka.py).
FAUST_FETCH_MAX_WAIT_MS = 1500
#: On Tansu an empty fetch is held for the whole wait: 10, 5 and 2 ms all gave p50 10-14 ms there,
#: 2 ms cost idle CPU (26 % vs 16 %).
TANSU_FETCH_MAX_WAIT_MS = 10


def broker_defaults(broker_name: str) -> dict[str, Any]:
    """Settings whose best value depends on the broker (a user's own setting wins over these)."""
    return {"fetch_max_wait_ms": TANSU_FETCH_MAX_WAIT_MS} if broker_name == "tansu" else {}


def default_answer_partitions(partitions: int) -> int:
    """`predictions` and the DLQ: at least as many partitions as `requests`, and at least 8."""
    return max(DEFAULT_ANSWER_PARTITIONS, partitions)


def default_workers(n_service_cpus: int | None = None) -> int:
    """The article's rule: one core left for the rest (broker, OS), at least one worker."""
    n = n_service_cpus if n_service_cpus is not None else len(os.sched_getaffinity(0))
    return max(1, n - 1)


@dataclass(frozen=True)
class StreamSettings:
    # -- where ------------------------------------------------------------------------------------
    bootstrap: str = "127.0.0.1:9092"      # any Kafka-protocol broker; launch.start overrides it
    app_id: str = "rvs-stream"             # Faust app id == consumer group id
    topic_requests: str = "requests"
    topic_predictions: str = "predictions"
    topic_dlq: str = "requests.dlq"
    partitions: int = 0                    # of `requests`; >= workers; 0 = max(8, workers). The
                                           # driver fills them sticky (services/sticky.py): keyed,
                                           # 4 partitions for 1 worker had made p50 at 850
                                           # events/s 565 ms instead of 32 ms on Tansu
    answer_partitioning: str = "sticky"    # "sticky": one partition at a time, the next every
                                           # STICKY_PERIOD_S (Kafka's sticky partitioner, by
                                           # time); "key": by the hash of the id (one record
                                           # batch per partition in every produce request)
    answer_partitions: int = 0             # of `predictions` and the DLQ; 0 = max(8, partitions):
                                           # Tansu's memory storage lists every stored batch of a
                                           # partition on each fetch that returns data, so one
                                           # answer partition made the driver's fetches cost more
                                           # every second (README, "The embedded broker")
    # -- engine -----------------------------------------------------------------------------------
    engine: str = "faust"                  # "faust" or "lean" (a plain consumer loop, lean.py):
                                           # the lean one reads shape, take_max (records per
                                           # model call), the consumer/producer and answer
                                           # settings; Faust's own knobs (take_mode, produce,
                                           # stream_buffer_maxsize, commit interval) don't apply
    lean_client: str = "aiokafka"          # engine "lean": "aiokafka" (getmany) or "confluent"
                                           # (librdkafka consume)
    # -- how many ---------------------------------------------------------------------------------
    workers: int = 0                       # Faust worker processes; 0 = max(1, service cpus - 1)
    agent_concurrency: int = 1             # agent instances per worker (Faust `concurrency=`)
    # -- shape ------------------------------------------------------------------------------------
    shape: str = "batch"                   # "event": one model call per event; "batch": take()
    take_max: int = 256                    # batch shape: at most this many events per model call
    take_mode: str = "within"              # batch shape: "within" = Faust's take_events(take_max,
                                           # within=take_within_s); "ready" = hand over whatever
                                           # is buffered as soon as there is any (take.py): ~5 ms
                                           # less at light load, but its batches stay small under
                                           # load (measured 934 vs 2,240 reviews/s saturated)
    take_within_s: float = 0.005           # take_mode "within" only: Faust's batch timer
    produce: str = "direct"                # "send" (awaited Topic.send per answer),
                                           # "send_soon" (Faust buffer), "direct" (producer.send)
    # -- input limits (bad input goes to the DLQ) -------------------------------------------------
    max_message_bytes: int = 1_048_576     # raw request value larger than this -> DLQ
    max_text_chars: int = 100_000          # "text" longer than this -> DLQ (IMDB max ~14k)
    # -- consumer ---------------------------------------------------------------------------------
    fetch_max_wait_ms: int = FAUST_FETCH_MAX_WAIT_MS  # Faust hard-codes it; another value goes
                                           # through fetchwait.py (10 on Tansu: broker_defaults)
    fetch_min_bytes: int = 1
    stream_buffer_maxsize: int = 16384     # Faust default 4096
    broker_max_poll_records: int | None = 2000  # Faust default None (unbounded)
    consumer_max_fetch_size: int = 1_048_576    # per partition and fetch (Faust default 1 MiB)
    consumer_auto_offset_reset: str = "earliest"
    broker_commit_interval_s: float = 2.8  # Faust default 2.8
    broker_commit_every: int = 10_000      # Faust default 10_000
    broker_session_timeout_s: float = 6.0  # Faust default 60; Tansu holds a join ~half of it
    broker_heartbeat_interval_s: float = 1.0    # Faust default 3; must be < session / 3
    broker_rebalance_timeout_s: float = 20.0    # Faust default 60
    broker_request_timeout_s: float = 30.0      # Faust default 90; must be >= session timeout
    # -- producer ---------------------------------------------------------------------------------
    linger_ms: int = 0
    acks: int = -1                         # -1 == "all" (Faust default)
    compression: str | None = None
    producer_max_batch_size: int = 16384   # bytes per partition batch (Faust default)
    # -- semantics / process ----------------------------------------------------------------------
    processing_guarantee: str = "at_least_once"
    web_enabled: bool = False              # Faust's web server; bound to 127.0.0.1 when enabled
    web_port: int = 0                      # 0 = a free port per worker
    log_level: str = "INFO"
    extra_faust: Mapping[str, Any] = field(default_factory=dict)  # any other faust.App setting

    # -- validation -------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        if isinstance(self.acks, str):
            object.__setattr__(self, "acks", -1 if self.acks.lower() == "all" else int(self.acks))
        if self.compression in ("", "none"):
            object.__setattr__(self, "compression", None)
        object.__setattr__(self, "extra_faust", dict(self.extra_faust or {}))
        errs: list[str] = []

        def need(cond: bool, msg: str) -> None:
            if not cond:
                errs.append(msg)

        need(isinstance(self.bootstrap, str) and bool(self.bootstrap), "bootstrap must be 'host:port'")
        for n in ("app_id", "topic_requests", "topic_predictions", "topic_dlq"):
            need(isinstance(getattr(self, n), str) and bool(getattr(self, n)), f"{n} must be a non-empty string")
        need(len({self.topic_requests, self.topic_predictions, self.topic_dlq}) == 3,
             "topic_requests, topic_predictions and topic_dlq must differ")
        need(isinstance(self.partitions, int) and not isinstance(self.partitions, bool)
             and self.partitions >= 0, f"partitions must be an int >= 0 (0 = max(8, workers)), "
                                       f"got {self.partitions!r}")
        need(isinstance(self.answer_partitions, int) and not isinstance(self.answer_partitions, bool)
             and self.answer_partitions >= 0, f"answer_partitions must be an int >= 0 (0 = "
                                              f"max(8, partitions)), got {self.answer_partitions!r}")
        for n in ("agent_concurrency", "take_max", "max_message_bytes",
                  "max_text_chars", "stream_buffer_maxsize", "consumer_max_fetch_size",
                  "broker_commit_every", "producer_max_batch_size"):
            v = getattr(self, n)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"{n} must be an int >= 1 (got {v!r})")
        need(isinstance(self.workers, int) and self.workers >= 0, f"workers must be an int >= 0 (0 = auto), got {self.workers!r}")
        if (isinstance(self.workers, int) and isinstance(self.partitions, int) and self.workers
                and self.partitions):
            need(self.partitions >= self.workers,
                 f"partitions ({self.partitions}) must be >= workers ({self.workers}): "
                 f"a worker without a partition idles")
        need(self.shape in SHAPES, f"shape must be one of {SHAPES}, got {self.shape!r}")
        need(self.take_mode in TAKE_MODES, f"take_mode must be one of {TAKE_MODES}, got {self.take_mode!r}")
        need(self.answer_partitioning in ANSWER_PARTITIONING, f"answer_partitioning must be one "
             f"of {ANSWER_PARTITIONING}, got {self.answer_partitioning!r}")
        need(self.engine in ENGINES, f"engine must be one of {ENGINES}, got {self.engine!r}")
        need(self.lean_client in LEAN_CLIENTS, f"lean_client must be one of {LEAN_CLIENTS}, "
                                               f"got {self.lean_client!r}")
        need(self.engine != "lean" or self.processing_guarantee == "at_least_once",
             "engine 'lean' is at-least-once only (processing_guarantee must be at_least_once)")
        need(self.produce in PRODUCE_MODES, f"produce must be one of {PRODUCE_MODES}, got {self.produce!r}")
        need(isinstance(self.take_within_s, (int, float)) and self.take_within_s > 0,
             "take_within_s must be > 0 (take() without `within` stalls)")
        need(isinstance(self.fetch_max_wait_ms, int) and 0 <= self.fetch_max_wait_ms <= 60_000,
             "fetch_max_wait_ms must be an int in [0, 60000]")
        need(isinstance(self.fetch_min_bytes, int) and self.fetch_min_bytes >= 1, "fetch_min_bytes must be >= 1")
        need(self.broker_max_poll_records is None
             or (isinstance(self.broker_max_poll_records, int) and self.broker_max_poll_records >= 1),
             "broker_max_poll_records must be None or an int >= 1")
        need(self.consumer_auto_offset_reset in ("earliest", "latest"),
             "consumer_auto_offset_reset must be 'earliest' or 'latest'")
        for n in ("broker_commit_interval_s", "broker_session_timeout_s",
                  "broker_heartbeat_interval_s", "broker_rebalance_timeout_s",
                  "broker_request_timeout_s"):
            v = getattr(self, n)
            need(isinstance(v, (int, float)) and v > 0, f"{n} must be > 0")
        if not errs:
            need(self.broker_heartbeat_interval_s * 3 <= self.broker_session_timeout_s,
                 "broker_heartbeat_interval_s must be <= broker_session_timeout_s / 3")
            need(self.broker_session_timeout_s <= self.broker_request_timeout_s,
                 "broker_session_timeout_s must be <= broker_request_timeout_s (Faust refuses otherwise)")
        need(isinstance(self.linger_ms, int) and self.linger_ms >= 0, "linger_ms must be an int >= 0")
        need(self.acks in ACKS, f"acks must be one of 'all', -1, 0, 1 (got {self.acks!r})")
        need(self.compression in COMPRESSIONS, f"compression must be one of {COMPRESSIONS}")
        need(self.processing_guarantee in GUARANTEES, f"processing_guarantee must be one of {GUARANTEES}")
        need(isinstance(self.web_enabled, bool), "web_enabled must be a bool")
        need(isinstance(self.web_port, int) and 0 <= self.web_port < 65536, "web_port must be in [0, 65535]")
        need(isinstance(self.log_level, str) and self.log_level.upper() in
             ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), "log_level must be a logging level name")
        bad_extra = sorted(set(self.extra_faust) & set(_FAUST_OWNED))
        need(not bad_extra, f"extra_faust may not set {bad_extra}: use the StreamSettings field instead")
        if errs:
            raise ValueError("invalid stream settings: " + "; ".join(errs))

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> StreamSettings:
        d = dict(d or {})
        d.pop("effective", None)  # to_dict()'s derived section round-trips
        unknown = sorted(set(d) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown stream setting(s) {unknown}; valid: {', '.join(cls.field_names())}")
        return cls(**d)

    @classmethod
    def from_json_file(cls, path: Path | str) -> StreamSettings:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def replace(self, **changes: Any) -> StreamSettings:
        return dataclasses.replace(self, **changes)

    def resolved(self, n_service_cpus: int | None = None) -> StreamSettings:
        """Fill the automatic values (workers, partitions, answer_partitions = 0) for the cores the
        service runs on."""
        workers = self.workers or default_workers(n_service_cpus)
        partitions = self.partitions or max(DEFAULT_PARTITIONS, workers)
        answer = self.answer_partitions or default_answer_partitions(partitions)
        if (workers, partitions, answer) == (self.workers, self.partitions,
                                             self.answer_partitions):
            return self
        return self.replace(workers=workers, partitions=partitions, answer_partitions=answer)

    # -- output -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every effective setting (for meta.json), plus what Faust really gets under 'effective'."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["extra_faust"] = dict(self.extra_faust)
        if self.engine == "lean":
            d["effective"] = {"engine": "lean", "lean": self.lean_effective(),
                              "topics": self.topics()}
            return d
        d["effective"] = {
            "engine": "faust",
            "faust": {k: _jsonable(v) for k, v in self.faust_settings().items()},
            "aiokafka_consumer": {
                "fetch_max_wait_ms": self.fetch_max_wait_ms,
                "fetch_max_wait_ms_faust_default": FAUST_FETCH_MAX_WAIT_MS,
                "fetch_max_wait_overridden": self.fetch_max_wait_ms != FAUST_FETCH_MAX_WAIT_MS,
                "fetch_min_bytes": self.fetch_min_bytes,
                "max_poll_records": self.broker_max_poll_records,
                "max_partition_fetch_bytes": self.consumer_max_fetch_size,
                "enable_auto_commit": False,
            },
            "topics": self.topics(),
        }
        return d

    def topics(self) -> dict[str, int]:
        answer = self.answer_partitions or default_answer_partitions(self.partitions)
        return {self.topic_requests: self.partitions, self.topic_predictions: answer,
                self.topic_dlq: answer}

    # -- the lean engine's clients ----------------------------------------------------------------
    def lean_effective(self) -> dict[str, Any]:
        """What the lean worker's consumer and producer get, and how it batches and commits."""
        if self.lean_client == "confluent":
            consumer, producer = self.confluent_consumer_config(), self.confluent_producer_config()
            fetch = f"consume(num_messages={self.take_max}, timeout=0), else poll(" \
                    f"{LEAN_POLL_TIMEOUT_MS} ms) then consume({self.take_max - 1}, 0)"
        else:
            consumer, producer = self.aiokafka_consumer_config(), self.aiokafka_producer_config()
            fetch = f"getmany(timeout_ms={LEAN_POLL_TIMEOUT_MS}, max_records={self.take_max})"
        return {"client": self.lean_client,
                "consumer": {k: _jsonable(v) for k, v in consumer.items()},
                "producer": {k: _jsonable(v) for k, v in producer.items()},
                "fetch": fetch,
                "model_calls": "one per record" if self.shape == "event" else "one per fetch",
                "commit": "every fetch, after the broker acknowledged all its answers"}

    def aiokafka_consumer_config(self) -> dict[str, Any]:
        """``AIOKafkaConsumer`` keyword arguments of the lean worker (bootstrap and group here)."""
        return {"bootstrap_servers": self.bootstrap, "group_id": self.app_id,
                "enable_auto_commit": False,
                "auto_offset_reset": self.consumer_auto_offset_reset,
                "fetch_max_wait_ms": self.fetch_max_wait_ms,
                "fetch_min_bytes": self.fetch_min_bytes,
                "max_partition_fetch_bytes": self.consumer_max_fetch_size,
                "max_poll_records": self.take_max,
                "session_timeout_ms": int(self.broker_session_timeout_s * 1000),
                "heartbeat_interval_ms": int(self.broker_heartbeat_interval_s * 1000),
                "rebalance_timeout_ms": int(self.broker_rebalance_timeout_s * 1000),
                "request_timeout_ms": int(self.broker_request_timeout_s * 1000)}

    def aiokafka_producer_config(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.bootstrap, "linger_ms": self.linger_ms,
                "acks": "all" if self.acks == -1 else self.acks,
                "compression_type": self.compression,
                "max_batch_size": self.producer_max_batch_size,
                "request_timeout_ms": int(self.broker_request_timeout_s * 1000)}

    def confluent_consumer_config(self) -> dict[str, Any]:
        """librdkafka configuration of the lean worker's consumer (confluent-kafka)."""
        return {"bootstrap.servers": self.bootstrap, "group.id": self.app_id,
                "enable.auto.commit": False, "enable.auto.offset.store": False,
                "auto.offset.reset": self.consumer_auto_offset_reset,
                "fetch.wait.max.ms": self.fetch_max_wait_ms,
                "fetch.min.bytes": self.fetch_min_bytes,
                "max.partition.fetch.bytes": self.consumer_max_fetch_size,
                "session.timeout.ms": int(self.broker_session_timeout_s * 1000),
                "heartbeat.interval.ms": int(self.broker_heartbeat_interval_s * 1000),
                "partition.assignment.strategy": "range", "log_level": 4}

    def confluent_producer_config(self) -> dict[str, Any]:
        # librdkafka with linger.ms 0 sends each answer of a batch in a request of its own: the
        # lean loop then waited on acks (backlog: 836 events/s at 24 % CPU, 3,613 at 93 % with 5)
        linger = self.linger_ms or LEAN_CONFLUENT_LINGER_MS
        return {"bootstrap.servers": self.bootstrap, "linger.ms": linger,
                "acks": self.acks, "compression.type": self.compression or "none",
                "batch.size": self.producer_max_batch_size, "enable.idempotence": False,
                "message.timeout.ms": int(self.broker_request_timeout_s * 1000),
                "log_level": 4}

    def faust_settings(self) -> dict[str, Any]:
        """Keyword arguments for ``faust.App`` (except id/broker/datadir, set by the app)."""
        s: dict[str, Any] = {
            "stream_buffer_maxsize": self.stream_buffer_maxsize,
            "broker_max_poll_records": self.broker_max_poll_records,
            "consumer_max_fetch_size": self.consumer_max_fetch_size,
            "consumer_auto_offset_reset": self.consumer_auto_offset_reset,
            "broker_commit_interval": float(self.broker_commit_interval_s),
            "broker_commit_every": self.broker_commit_every,
            "broker_session_timeout": float(self.broker_session_timeout_s),
            "broker_heartbeat_interval": float(self.broker_heartbeat_interval_s),
            "broker_rebalance_timeout": float(self.broker_rebalance_timeout_s),
            "broker_request_timeout": float(self.broker_request_timeout_s),
            "producer_linger": self.linger_ms / 1000.0,
            "producer_acks": self.acks,
            "producer_compression_type": self.compression,
            "producer_max_batch_size": self.producer_max_batch_size,
            "processing_guarantee": self.processing_guarantee,
            "web_enabled": self.web_enabled,
            "web_bind": "127.0.0.1",
            "web_host": "127.0.0.1",
            "topic_allow_declare": False,   # every topic is pre-created by launch.start
            "topic_disable_leader": True,   # no <app>-__assignor-__leader topic
            "key_serializer": "raw",
            "value_serializer": "raw",
        }
        s.update(self.extra_faust)
        return s


#: Faust settings derived from StreamSettings fields (extra_faust may not shadow them).
_FAUST_OWNED = ("stream_buffer_maxsize", "broker_max_poll_records", "consumer_max_fetch_size",
                "consumer_auto_offset_reset", "broker_commit_interval", "broker_commit_every",
                "broker_session_timeout", "broker_heartbeat_interval", "broker_rebalance_timeout",
                "broker_request_timeout", "producer_linger", "producer_linger_ms", "producer_acks",
                "producer_compression_type", "producer_max_batch_size", "processing_guarantee",
                "web_enabled", "web_bind", "web_host", "web_port", "broker", "id", "datadir",
                "key_serializer", "value_serializer")


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)
