"""Pure planning: when each operation is *due* (open loop), how many clients run (closed loop),
and how long a retry waits. No clocks, no I/O: the same inputs always give the same plan.

Open loop (wrk2's lesson): every intended send time is planned before the run starts, seeded, and
kept on every row, so a slow service cannot slow the arrivals down and hide its queue. The rate
``lambda(t)`` (ops/s) is piecewise linear; times are found by inverting its integral
``Lambda(t)``: operation ``i`` is due when ``Lambda(t) = u_i`` with ``u_i = i`` (process
``constant``: evenly spaced in expected count) or ``u_i`` = partial sums of Exp(1) draws
(process ``poisson``: an inhomogeneous Poisson process by time rescaling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from loadgen.scenario import (
    ClosedArrival,
    OpenArrival,
    Rate,
    RateBurst,
    RateConstant,
    RateRamp,
    RateSteps,
    Retry,
)


# ---------------------------------------------------------------------------------------------
# rate function
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Segment:
    t0: float
    t1: float
    r0: float   # ops/s at t0
    r1: float   # ops/s at t1 (linear in between)

    @property
    def mass(self) -> float:
        return 0.5 * (self.r0 + self.r1) * (self.t1 - self.t0)


def segments(rate: Rate, horizon_s: float) -> list[Segment]:
    """``rate`` over [0, horizon_s) as linear pieces (jumps = two pieces meeting at one time)."""
    H = float(horizon_s)
    if H <= 0:
        return []
    if isinstance(rate, RateConstant):
        return [Segment(0.0, H, rate.ops_per_s, rate.ops_per_s)]
    if isinstance(rate, RateSteps):
        out = []
        steps = list(rate.steps)
        for i, (at, r) in enumerate(steps):
            if at >= H:
                break
            end = min(steps[i + 1][0], H) if i + 1 < len(steps) else H
            out.append(Segment(at, end, r, r))
        return out
    if isinstance(rate, RateRamp):
        start = min(rate.start_s, H)
        end = min(rate.end_s if rate.end_s is not None else H, H)
        a, b = rate.from_ops_per_s, rate.to_ops_per_s
        out = []
        if start > 0:
            out.append(Segment(0.0, start, a, a))
        if end > start:
            full_end = rate.end_s if rate.end_s is not None else H
            r_end = a + (b - a) * (end - start) / (full_end - start)
            out.append(Segment(start, end, a, r_end))
        if end < H:
            out.append(Segment(end, H, b, b))
        return out
    if isinstance(rate, RateBurst):
        windows = []
        t = rate.at_s
        while t < H:
            windows.append((t, min(t + rate.length_s, H)))
            if rate.every_s is None:
                break
            t += rate.every_s
        out, cur = [], 0.0
        for w0, w1 in windows:
            if w0 > cur:
                out.append(Segment(cur, w0, rate.base_ops_per_s, rate.base_ops_per_s))
            out.append(Segment(w0, w1, rate.peak_ops_per_s, rate.peak_ops_per_s))
            cur = w1
        if cur < H:
            out.append(Segment(cur, H, rate.base_ops_per_s, rate.base_ops_per_s))
        return out
    raise TypeError(f"unknown rate {rate!r}")


def rate_at(rate: Rate, t: float, horizon_s: float) -> float:
    for s in segments(rate, horizon_s):
        if s.t0 <= t < s.t1:
            return s.r0 + (s.r1 - s.r0) * (t - s.t0) / (s.t1 - s.t0)
    return 0.0


def expected_count(rate: Rate, horizon_s: float) -> float:
    return float(sum(s.mass for s in segments(rate, horizon_s)))


def _invert(segs: list[Segment], u: np.ndarray) -> np.ndarray:
    """Times t with Lambda(t) = u (u sorted, 0 <= u < total mass)."""
    cum = np.concatenate([[0.0], np.cumsum([s.mass for s in segs])])
    idx = np.searchsorted(cum, u, side="right") - 1
    idx = np.clip(idx, 0, len(segs) - 1)
    t0 = np.array([s.t0 for s in segs])[idx]
    t1 = np.array([s.t1 for s in segs])[idx]
    r0 = np.array([s.r0 for s in segs])[idx]
    r1 = np.array([s.r1 for s in segs])[idx]
    d = u - cum[idx]
    L = t1 - t0
    k = np.where(L > 0, (r1 - r0) / (2.0 * np.where(L > 0, L, 1.0)), 0.0)
    disc = np.maximum(r0 * r0 + 4.0 * k * d, 0.0)
    denom = r0 + np.sqrt(disc)
    # x solves r0*x + k*x^2 = d; this form is stable for k -> 0 and for r0 == 0
    x = np.where(denom > 0, 2.0 * d / np.where(denom > 0, denom, 1.0), 0.0)
    return np.minimum(t0 + x, np.nextafter(t1, t0))


@dataclass(frozen=True)
class OpenPlan:
    intended_s: np.ndarray       # float64, sorted, in [0, horizon_s)
    horizon_s: float
    expected: float              # Lambda(horizon)
    truncated: bool              # hit max_requests before the horizon

    def __len__(self) -> int:
        return len(self.intended_s)

    def describe(self) -> dict:
        n = len(self.intended_s)
        return {"planned": n, "expected": round(self.expected, 3), "horizon_s": self.horizon_s,
                "truncated_at_max_requests": self.truncated,
                "first_s": float(self.intended_s[0]) if n else None,
                "last_s": float(self.intended_s[-1]) if n else None}


def plan_open(arrival: OpenArrival, horizon_s: float, max_requests: int) -> OpenPlan:
    """Intended send times (seconds from t0) for an open-loop arrival, bounded by the horizon
    (warm-up + measured window) and by ``max_requests``."""
    segs = [s for s in segments(arrival.rate, horizon_s) if s.t1 > s.t0]
    total = float(sum(s.mass for s in segs))
    if total <= 0 or not segs:
        return OpenPlan(np.zeros(0), horizon_s, 0.0, False)
    if arrival.process == "constant":
        n = min(int(math.ceil(total)), max_requests + 1)
        u = np.arange(n, dtype=np.float64)
        u = u[u < total]
    else:
        rng = np.random.default_rng(arrival.seed)
        chunks, acc, last = [], 0, 0.0
        while last < total and acc <= max_requests:
            want = int(total - last + 6 * math.sqrt(total - last + 1) + 64)
            c = last + np.cumsum(rng.exponential(1.0, size=want))
            chunks.append(c)
            acc += len(c)
            last = float(c[-1])
        u = np.concatenate(chunks)
        u = u[u < total]
    truncated = len(u) > max_requests
    u = u[:max_requests]
    return OpenPlan(_invert(segs, u), float(horizon_s), total, truncated)


# ---------------------------------------------------------------------------------------------
# closed loop
# ---------------------------------------------------------------------------------------------
def clients_at(arrival: ClosedArrival, t: float) -> int:
    """Clients that should be active at ``t`` (seconds from t0)."""
    n = 0
    for at, k in arrival.clients:
        if t >= at:
            n = k
        else:
            break
    return n


def client_steps(arrival: ClosedArrival, horizon_s: float) -> list[tuple[float, int]]:
    """The (at_s, n_clients) changes that happen before the horizon."""
    return [(at, n) for at, n in arrival.clients if at < horizon_s]


# ---------------------------------------------------------------------------------------------
# retries
# ---------------------------------------------------------------------------------------------
def backoff_s(retry: Retry, failed_attempt: int, u: float) -> float:
    """Wait before attempt ``failed_attempt + 1``. ``u`` in (0, 1] is the jitter draw.

    fixed: ``backoff_s``; exponential: ``min(cap_s, backoff_s * 2**(failed_attempt-1))``;
    jitter j scales the wait by ``1 - j * (1 - u)`` (j = 1: full jitter, U(0, 1] of the wait).
    """
    if retry.policy == "none":
        return 0.0
    if retry.policy == "fixed":
        base = retry.backoff_s
    else:
        base = min(retry.cap_s, retry.backoff_s * (2.0 ** (failed_attempt - 1)))
    return base * (1.0 - retry.jitter * (1.0 - u))


def may_retry(retry: Retry, failed_attempt: int) -> bool:
    return retry.policy != "none" and failed_attempt < retry.max_attempts


def phase_of(t: float, warmup_s: float, duration_s: float) -> str:
    if t < warmup_s:
        return "warmup"
    if t < warmup_s + duration_s:
        return "measure"
    return "drain"
