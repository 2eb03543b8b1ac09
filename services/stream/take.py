"""Micro-batches without a timer: yield whatever the stream has buffered, as soon as it has any.

Why: Faust's ``Stream.take_events(max_, within=...)`` is driven by a free-running timer: its loop
wakes every ``within`` seconds (or when ``max_`` events are buffered) and only then hands the
buffer to the agent. At light load every event waits for the next tick, 0..``within`` (measured:
with ``within=10 ms`` the request leg is ~5 ms longer at the median than per-event processing, and
a 1 ms timer wakes the worker 1000 times a second for nothing).

:func:`take_ready` keeps everything else of ``take_events`` (same buffering processor on the
stream, same passive drainer, the batch is acked only after the agent body is done with it, at
most ``max_`` events per batch) and changes only *when* a batch is handed over: as soon as the
buffer holds at least one event. Events that arrived together (one fetch response, or everything
that queued up while the body was busy with the previous batch) are moved into the buffer by the
drainer before the body gets control back, so the batch grows with the load by itself: one event
per model call at light load, up to ``max_`` near saturation, and no idle wait at any load.

It uses the same Stream internals as ``take_events`` (``add_processor``, ``_enable_passive``,
``enable_acks``, ``ack``); :func:`check_stream_api` fails loudly if the installed Faust no longer
has them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from mode.utils.aiter import aiter

#: How often an idle take_ready loop wakes to check whether the stream is stopping.
IDLE_CHECK_S = 1.0

_NEEDED = ("add_processor", "_enable_passive", "_processors", "enable_acks", "ack",
           "wait_for_stopped", "should_stop", "current_event", "channel")


def check_stream_api(stream: Any) -> None:
    missing = [a for a in _NEEDED if not hasattr(stream, a)]
    if missing:
        import faust  # noqa: PLC0415

        raise RuntimeError(f"faust {faust.__version__}: Stream has no {missing}; "
                           f"services/stream/take.py needs updating")


def take_ready(stream: Any, max_: int, *, idle_check_s: float = IDLE_CHECK_S
               ) -> AsyncGenerator[Sequence[Any], None]:
    """``async for events in take_ready(stream, 256): ...``: lists of 1..``max_`` events, each
    list handed over as soon as it is non-empty, acked after the body has handled it."""
    check_stream_api(stream)
    agen = _take_ready(stream, max_, idle_check_s)
    active = getattr(stream, "_active_agens", None)  # Stream.on_stop closes leftovers (faust>=0.11)
    if active is not None:
        active.add(agen)
    return agen


async def _take_ready(stream: Any, max_: int, idle_check_s: float
                      ) -> AsyncGenerator[Sequence[Any], None]:
    if max_ < 1:
        raise ValueError("max_ must be >= 1")
    events: list[Any] = []
    ready = asyncio.Event()            # set when the buffer holds >= 1 event
    consumed = asyncio.Event()         # set when the body is done with a full buffer
    consuming: asyncio.Future | None = None  # set while the body holds the batch
    loop = asyncio.get_running_loop()
    saved_enable_acks = stream.enable_acks

    async def add_to_buffer(value: Any) -> Any:
        nonlocal consuming
        try:
            if consuming is not None:
                try:
                    await consuming         # the body has the batch: don't touch the buffer
                finally:
                    consuming = None
            event = stream.current_event
            if event is None:
                raise RuntimeError("take_ready found current_event is None")
            events.append(event)
            ready.set()
            if len(events) >= max_:         # never hand over more than max_ events
                consumed.clear()
                await stream.wait(consumed)
        except asyncio.CancelledError:  # pragma: no cover
            raise
        except Exception as exc:  # pragma: no cover - Faust does the same in take_events
            stream.log.exception("Error adding to take_ready buffer: %r", exc)
            await stream.crash(exc)
        return value

    stream.enable_acks = False          # we ack each batch ourselves, after the body
    stream.add_processor(add_to_buffer)
    stream._enable_passive(aiter(stream.channel))  # as take_events does
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(ready, timeout=idle_check_s)
            if not events:
                continue
            consuming = loop.create_future()
            batch = list(events)
            try:
                yield batch
            finally:
                events.clear()
                ready.clear()
                for event in batch:
                    await stream.ack(event)
                if not consuming.done():
                    consuming.set_result(None)
                consumed.set()
    finally:
        stream.enable_acks = saved_enable_acks
        try:
            stream._processors.remove(add_to_buffer)
        except ValueError:  # pragma: no cover
            pass
