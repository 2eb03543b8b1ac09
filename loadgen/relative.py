"""Loads stated relative to a deployment's capacity, resolved into absolute ones.

Why: a client count or a rate fixed in a scenario pushes a fast machine less far past its
capacity than a slow one (the article's ``seed`` failed 5.7 % of REST requests on one VM and
0.3 % on a faster one). A scenario may instead say how far past capacity it means to go:

* open loop, ``unit: capacity``: every rate is a fraction of the reference deployment's
  saturated operations/s (0.5 = half its capacity);
* closed loop, ``unit: timeout_fill``: every client count is a multiple of the count whose
  queueing fills the client's deadline. With N clients and no think time a saturated service
  answers each after about N / capacity seconds (Little's law), so N = timeout_s x capacity is
  where answers start to miss the deadline and the article's retries begin.

The capacity comes from a short calibration phase of the same run (bench/calibrate.py); the
resolved scenario is what both modes run, and :func:`describe` is what meta.json records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from loadgen.scenario import (ClosedArrival, OpenArrival, Rate, RateBurst, RateConstant,
                              RateRamp, RateSteps, Scenario, rate_to_dict)


@dataclass(frozen=True)
class Capacity:
    """What the calibration phase measured of the reference deployment."""

    mode: str
    ops_per_s: float        # ok operations/s, saturated, in the calibration window
    batch_size: int         # reviews per operation
    timeout_s: float        # the reference mode's client deadline

    @property
    def timeout_fill_clients(self) -> float:
        """Closed-loop clients (no think time) whose queueing fills the deadline."""
        return self.timeout_s * self.ops_per_s


def scale_rate(rate: Rate, k: float) -> Rate:
    """Every rate of ``rate`` multiplied by ``k`` (times unchanged)."""
    if isinstance(rate, RateConstant):
        return replace(rate, ops_per_s=rate.ops_per_s * k)
    if isinstance(rate, RateSteps):
        return replace(rate, steps=tuple((t, r * k) for t, r in rate.steps))
    if isinstance(rate, RateRamp):
        return replace(rate, from_ops_per_s=rate.from_ops_per_s * k,
                       to_ops_per_s=rate.to_ops_per_s * k)
    if isinstance(rate, RateBurst):
        return replace(rate, base_ops_per_s=rate.base_ops_per_s * k,
                       peak_ops_per_s=rate.peak_ops_per_s * k)
    raise TypeError(f"unknown rate {rate!r}")


def resolve(sc: Scenario, cap: Capacity) -> Scenario:
    """The absolute scenario both modes run; an absolute one is returned unchanged."""
    if not sc.is_relative:
        return sc
    if cap.ops_per_s <= 0 or not math.isfinite(cap.ops_per_s):
        raise ValueError(f"calibration of {cap.mode} served nothing ({cap.ops_per_s} ops/s): "
                         "a relative load cannot be resolved")
    a = sc.arrival
    if isinstance(a, OpenArrival):
        arrival = replace(a, rate=scale_rate(a.rate, cap.ops_per_s), unit="ops_per_s")
    else:
        assert isinstance(a, ClosedArrival)
        fill = cap.timeout_fill_clients
        clients = tuple((t, max(1, round(x * fill))) for t, x in a.clients)
        arrival = replace(a, clients=clients, unit="clients")
    return replace(sc, arrival=arrival, calibration=None)


def describe(relative: Scenario, resolved: Scenario, cap: Capacity) -> dict:
    """meta.json's ``calibration`` block: what was measured and what the load became."""
    a, r = relative.arrival, resolved.arrival
    out = {"mode": cap.mode, "ops_per_s": cap.ops_per_s,
           "reviews_per_s": cap.ops_per_s * cap.batch_size, "batch_size": cap.batch_size,
           "timeout_s": cap.timeout_s, "unit": a.unit}
    if isinstance(a, ClosedArrival):
        out["timeout_fill_clients"] = cap.timeout_fill_clients
        out["steps"] = [{"at_s": t, "multiple": x, "clients": n}
                        for (t, x), (_, n) in zip(a.clients, r.clients)]
    else:
        out["rate"] = {"relative": rate_to_dict(a.rate), "resolved": rate_to_dict(r.rate)}
    return out
