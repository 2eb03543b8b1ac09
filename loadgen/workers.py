"""Answers per serving worker, from the identity each worker stamps on its answers.

The bench knows how many workers it started only when it started them; attached to a compose
deployment (``--scale stream=3``) it knows nothing, so the drivers count who answered:
``driver.json`` ``workers_answered`` = ``{"<hostname>/<pid>": answers}`` (docs/CONTRACTS.md).
The counting sits on the drivers' hot paths: a dict keyed by the raw header value, decoded once
at the end by :func:`answered`.
"""

from __future__ import annotations

from collections.abc import Mapping

from services.worker_id import REST_HEADER, STREAM_HEADER

__all__ = ["REST_HEADER", "STREAM_HEADER", "UNKNOWN", "answered", "stream_worker"]

#: Key for answers that named no worker (a service without the stamp, a no-op target).
UNKNOWN = "unknown"


def stream_worker(headers: list[tuple[str, bytes]] | None) -> bytes | None:
    """The ``rvs-worker`` value of a Kafka message's headers (confluent-kafka's
    ``Message.headers()``), or None when it has none."""
    if headers:
        for name, value in headers:
            if name == STREAM_HEADER:
                return value
    return None


def answered(counts: Mapping[bytes | str | None, int]) -> dict[str, int]:
    """Raw per-worker counts -> ``{worker_id: n}`` for driver.json, sorted by worker id, with
    answers that named no worker under ``"unknown"``."""
    out: dict[str, int] = {}
    for w, n in counts.items():
        key = UNKNOWN if w is None else w
        if isinstance(key, bytes):
            key = key.decode("utf-8", "replace")
        out[key] = out.get(key, 0) + int(n)
    return dict(sorted(out.items()))
