"""Pure: how one open-loop plan is split over K driver processes (shards).

Shard k of K takes planned requests k, k + K, k + 2K, ... : the shards' parts are disjoint, their
union is the plan, each part is in time order, and each shard sees a K-th of the arrival process
(spread evenly over the whole run, not a slice of it). Every shard keeps the plan's request ids
(``<run_id>-<i>``, i = position in the whole plan), so the parts' tables concatenate into the one
table a single process would have written.
"""

from __future__ import annotations

import os

#: More shards than this gain nothing on one host (the target needs cores too) and only add
#: processes to start, pin and merge.
MAX_SHARDS = 8


def part_indices(n: int, part: tuple[int, int]) -> range:
    """Plan positions (0..n-1) that shard ``part = (k, K)`` sends, in time order."""
    k, count = part
    if count < 1 or not 0 <= k < count:
        raise ValueError(f"part must be (k, K) with 0 <= k < K, got {part!r}")
    return range(k, n, count)


def part_size(n: int, part: tuple[int, int]) -> int:
    return len(part_indices(n, part))


def parse_part(spec: str) -> tuple[int, int]:
    """``"k/K"`` -> (k, K), checked."""
    k, sep, count = spec.partition("/")
    try:
        part = (int(k), int(count))
    except ValueError:
        raise ValueError(f"a part is k/K, got {spec!r}") from None
    if not sep:
        raise ValueError(f"a part is k/K, got {spec!r}")
    part_indices(0, part)   # validates 0 <= k < K
    return part


def cap_per_shard(max_in_flight: int, part: tuple[int, int]) -> int:
    """Shard k's share of the scenario's in-flight cap (its connections): the shares add up to
    the cap, so K shards hold no more connections than one process would (the REST deployment
    limits connections per client address). Needs K <= the cap (:func:`default_shards`)."""
    k, count = part
    part_indices(0, part)
    if count > max_in_flight:
        raise ValueError(f"{count} shards cannot share an in-flight cap of {max_in_flight}")
    return max_in_flight // count + (1 if k < max_in_flight % count else 0)


def driver_cores() -> list[int]:
    """The cores this process may run on (its CPU affinity), sorted."""
    return sorted(os.sched_getaffinity(0))


def shard_count(cores: int, planned: int, max_in_flight: int, requested: int | None = None,
                cap: int = MAX_SHARDS) -> int:
    """As many shards as asked, else one per driver core up to ``cap``; never more than the
    planned requests or the in-flight cap (each shard needs a request and a connection)."""
    want = requested if requested is not None else min(cores, cap)
    return max(1, min(want, planned, max_in_flight))
