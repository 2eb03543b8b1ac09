"""Which serving worker answered: the identity every worker process stamps on its answers.

Under ``bench run --target compose`` the bench only attaches to a deployment someone else scaled
(``docker compose up --scale stream=3``), and the embedded broker can't describe a consumer
group, so nothing but the answers themselves can say how many workers served a run. Each REST
answer carries an HTTP header and each prediction/DLQ record a Kafka header with
``<hostname>/<pid>`` (distinct across containers and across processes on one host); the drivers
count answers per value (docs/CONTRACTS.md).
"""

from __future__ import annotations

import os
import socket

#: Kafka record header on every prediction and DLQ record (value: UTF-8 bytes).
STREAM_HEADER = "rvs-worker"
#: HTTP response header on every ``POST /predict`` answer.
REST_HEADER = "X-Served-By"

_cached: tuple[int, str] | None = None


def worker_id() -> str:
    """``<hostname>/<pid>`` of this process, computed once per process (re-computed after a fork,
    so a uWSGI app created before fork still names the worker that answers)."""
    global _cached
    pid = os.getpid()
    if _cached is None or _cached[0] != pid:
        _cached = (pid, f"{socket.gethostname()}/{pid}")
    return _cached[1]
