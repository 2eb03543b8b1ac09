"""THE one place where we change Faust's consumer: the fetch wait it hard-codes.

Why: faust-streaming (faust/transport/drivers/aiokafka.py,
``AIOKafkaConsumerThread._create_worker_consumer``) builds its ``aiokafka.AIOKafkaConsumer`` with
``fetch_max_wait_ms=1500`` and no setting to change it (``fetch_min_bytes`` is left at aiokafka's
1). Apache Kafka answers a Fetch as soon as ``fetch_min_bytes`` are available, so the wait only
bounds an idle poll. Tansu (our embedded broker) holds an empty fetch for the *whole* wait even
when data arrives meanwhile, so a per-event worker at light load answers in p50 ~440 ms instead of
~20 ms. That is a property of the broker, not of streaming; the harness sets the wait on purpose
(``StreamSettings.fetch_max_wait_ms``) and records it in every run.

How: aiokafka's consumer copies its constructor arguments into attributes and only builds its
``Fetcher`` (which puts ``_fetch_max_wait_ms`` / ``_fetch_min_bytes`` into every FetchRequest) in
``start()``. Our consumer thread lets Faust build the consumer exactly as it always does, then sets
those two attributes before Faust starts it. Nothing else in Faust or aiokafka is touched, and
nothing is patched globally: only apps made with :func:`install` use this transport.

:func:`install` must be called right after ``faust.App(...)`` and before any topic or agent is
declared (declaring one creates the app's transport).
"""

from __future__ import annotations

import logging
from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger(__name__)

#: What Faust hard-codes (checked by the tests against the installed Faust source).
FAUST_HARDCODED_FETCH_MAX_WAIT_MS = 1500


def apply_fetch_settings(consumer: aiokafka.AIOKafkaConsumer, *, fetch_max_wait_ms: int,
                         fetch_min_bytes: int) -> aiokafka.AIOKafkaConsumer:
    """Set the fetch wait/min bytes of a not-yet-started aiokafka consumer (fail loudly if the
    installed aiokafka no longer keeps them where we expect)."""
    for attr in ("_fetch_max_wait_ms", "_fetch_min_bytes"):
        if not hasattr(consumer, attr):
            raise RuntimeError(f"aiokafka {aiokafka.__version__}: AIOKafkaConsumer has no {attr}; "
                               f"services/stream/fetchwait.py needs updating")
    if getattr(consumer, "_fetcher", None) is not None:
        raise RuntimeError("fetch settings must be applied before the consumer starts")
    consumer._fetch_max_wait_ms = int(fetch_max_wait_ms)
    consumer._fetch_min_bytes = int(fetch_min_bytes)
    return consumer


class FetchWaitConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, with our fetch wait applied to the consumer it creates."""

    def _create_consumer(self, loop: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_consumer(loop)
        transport = self.transport
        apply_fetch_settings(consumer, fetch_max_wait_ms=transport.fetch_max_wait_ms,
                             fetch_min_bytes=transport.fetch_min_bytes)
        log.info("fetchwait: aiokafka consumer fetch_max_wait_ms=%d fetch_min_bytes=%d "
                 "(Faust hard-codes %d)", consumer._fetch_max_wait_ms, consumer._fetch_min_bytes,
                 FAUST_HARDCODED_FETCH_MAX_WAIT_MS)
        return consumer


class FetchWaitConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> FetchWaitConsumerThread:
        return FetchWaitConsumerThread(self, loop=self.loop, beacon=self.beacon)


class FetchWaitTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport whose consumer uses our fetch wait/min bytes."""

    Consumer = FetchWaitConsumer

    def __init__(self, *args: Any, fetch_max_wait_ms: int, fetch_min_bytes: int = 1,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetch_max_wait_ms = int(fetch_max_wait_ms)
        self.fetch_min_bytes = int(fetch_min_bytes)


def install(app: Any, *, fetch_max_wait_ms: int, fetch_min_bytes: int = 1) -> FetchWaitTransport:
    """Give ``app`` (a fresh faust.App) the consumer transport with our fetch settings."""
    if getattr(app, "_transport", None) is not None:
        raise RuntimeError("fetchwait.install() must run before any topic/agent is declared "
                           "(the app already has a transport)")
    scheme = app.conf.broker_consumer[0].scheme
    if scheme not in ("kafka", "aiokafka"):
        raise ValueError(f"fetchwait works with Faust's aiokafka driver, not {scheme!r}")
    transport = FetchWaitTransport(app.conf.broker_consumer, app,
                                   fetch_max_wait_ms=fetch_max_wait_ms,
                                   fetch_min_bytes=fetch_min_bytes)
    app.transport = transport
    return transport
