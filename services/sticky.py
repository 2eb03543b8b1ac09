"""Sticky partitioning by time: every message to one partition for a while, then the next.

Why: Tansu 0.6's memory storage keeps one object per record batch and lists all of a partition's
objects on every fetch that returns data (README, "The embedded broker's growing log"). Keyed
messages split every produce request into one batch per partition, multiplying the objects that
every busy fetch then lists; filling one partition at a time keeps a produce request one batch
while still spreading the log over the partitions. Kafka's own sticky partitioner does the same
per batch. Used by the stream worker for its answers and by the stream driver for its requests
(each id is independent: no consumer relies on a key's partition).
"""

from __future__ import annotations

#: The worker's answers: one partition for 100 ms (a single driver consumer reads them all).
STICKY_PERIOD_S = 0.1
#: The driver's requests: 10 ms, so that several workers still share a steady load finely.
REQUEST_STICKY_S = 0.01


def sticky_partition(n: int, now: float, period_s: float) -> int | None:
    """The partition for a message produced at ``now`` (monotonic or relative seconds), among
    ``n``: one partition per ``period_s``, round robin. None for a single partition."""
    return int(now / period_s) % n if n > 1 else None
