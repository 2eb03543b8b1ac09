"""Metrics of one mode's request table: pure functions, no I/O, deterministic.

This module is the single owner of every number the project reports (the way Locust's
``stats.py`` owns its statistics): summaries, charts, the report, the notebook and ``compare``
all call these functions and never recompute a metric themselves.

Definitions (docs/CONTRACTS.md is the contract; this is how it is computed):

* **Window.** A request belongs to the measured window iff its ``request_intended_s`` lies in
  ``[warmup_s, warmup_s + duration_s)``. All attempts of a request share that time, so a request
  is never split across the boundary, and a request that is due in the window but answered during
  the drain still counts (its outcome is the schedule's, not the clock's).
* **Requests vs attempts.** A request is all rows with one ``request_id``; it is *ok* iff any
  attempt is ok. ``sent = ok + failed`` counts requests (asserted); ``attempts`` counts rows.
* **Headline throughput** = ok requests in the window ÷ ``duration_s`` (the article's definition);
  reviews/s = the sum of their ``batch_size`` ÷ ``duration_s``.
* **Time series** bin *completions*: an ok request is counted in the bin of its ``done_s`` (the
  moment a client had its answer), an error attempt in the bin of its ``done_s`` too. Binning by
  completion shows what the service actually delivered each second, including stalls that an
  intended-time view would smear into later latency. Bins are aligned on the window start, so the
  in-window bins are exactly ``[start + k·w, start + (k+1)·w)``; only whole bins inside the window
  feed the spread statistics. Empty bins are zeros, never gaps: an outage must show as 0.
* **Latency** of an ok request is ``done_s - request_intended_s`` of its first ok attempt (open
  loop, coordinated-omission-free, includes retries and back-off) and ``done_s - sent_s`` of that
  attempt (the service view). Percentiles use the nearest-rank rule (numpy ``inverted_cdf``): every
  reported value is one that was observed.
* **Spread** uses the population standard deviation (ddof=0): it describes the series we saw.
* Undefined numbers (no ok request, a mean of 0, ...) are ``None`` (NaN never leaves this module
  through :func:`jsonable`); counts and throughputs of an empty window are 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

import numpy as np
import pandas as pd

from . import figures

#: name -> percentile (0-100) reported for every latency distribution.
PERCENTILES: dict[str, float] = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}
#: Recovery rule: back to >= this fraction of the pre-fault median ...
RECOVERY_FRACTION = 0.9
#: ... for this many consecutive 1 s bins.
RECOVERY_RUN = 3
_EPS = 1e-9


# --------------------------------------------------------------------------------------------
# Boundary types


@dataclass(frozen=True, slots=True)
class Window:
    """The measured window of one mode, in seconds relative to the mode's ``t0``."""

    warmup_s: float
    duration_s: float

    def __post_init__(self) -> None:
        if not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise ValueError(f"duration_s must be a positive number, got {self.duration_s!r}")
        if not (self.warmup_s >= 0 and math.isfinite(self.warmup_s)):
            raise ValueError(f"warmup_s must be >= 0, got {self.warmup_s!r}")

    @property
    def start(self) -> float:
        return float(self.warmup_s)

    @property
    def end(self) -> float:
        return float(self.warmup_s + self.duration_s)


@dataclass(frozen=True, slots=True)
class Counts:
    """Request-level accounting of a window (``sent == ok + failed`` always holds)."""

    sent: int             # requests due in the window, each counted once whatever its retries
    ok: int
    failed: int
    attempts: int         # rows (attempts) of those requests
    failed_attempts: int
    duplicates: int       # extra answers received (stream at-least-once)
    reviews_ok: int       # sum of batch_size over ok requests


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Latency percentiles in milliseconds (None when there is no sample)."""

    n: int
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    p999: float | None
    max: float | None


@dataclass(frozen=True, slots=True)
class Spread:
    """How much a per-bin series moves over time (the article's "0.5k vs 5k")."""

    bin_s: float
    n_bins: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    range: float | None
    cv: float | None      # std / mean; None when the mean is 0


@dataclass(frozen=True, slots=True)
class Ceiling:
    """What the model alone could do on the service's cores, and where that figure came from."""

    reviews_per_s: float | None
    source: str           # "measured" | "model_cost_fallback" | "unknown"
    noise: float | None = None   # (max - min) / best of the tries it is the best of
    batch: int | None = None     # reviews per model call it was measured at


@dataclass(frozen=True, slots=True)
class Fault:
    """An injected fault as meta.json records it (bench/faults.py)."""

    t_s: float                        # when the signal was sent
    kind: str                         # kill_worker | pause | restart
    target: str | None = None
    pid: int | None = None
    duration_s: float | None = None   # as the scenario asked
    ended_t_s: float | None = None    # when the fault was over (worker back, SIGCONT); None = never


@dataclass(frozen=True, slots=True)
class FaultImpact:
    """What happened to the requests around one fault.

    The span runs from the fault to the end of the recovery run (``recovered_at_s`` +
    ``RECOVERY_RUN`` s, and not before ``ended_t_s``), or to the end of the data if throughput
    never recovered, and stops at the next fault. A request is *around the fault* iff it was due
    before the span ends and its fate was settled at or after the fault (in flight when it struck,
    or sent during the disruption). Counted over the whole timeline (warm-up and drain too), so
    a fault outside the measured window is still accounted for.

    Duplicates are the exception: a consumer that crashes or is stopped re-delivers what it had
    answered but not yet committed, i.e. requests *answered before* the fault. So ``duplicated``
    counts the requests due after the previous fault (or from the start) and before the span ends
    that were answered more than once. (Without a fault nothing is re-delivered.)
    """

    t_s: float
    kind: str
    target: str | None
    span_start_s: float
    span_end_s: float | None          # None = to the end of the data
    requests: int                     # requests around the fault
    ok: int
    lost: int                         # failed for good (never an ok answer), retries included
    lost_by_kind: dict[str, int]      # lost requests by their last attempt's error_kind
    retried: int                      # requests that needed more than one attempt
    extra_attempts: int               # attempts beyond the first, summed
    duplicated: int                   # requests answered more than once (stream at-least-once)
    duplicates: int                   # extra answers, summed
    dup_from_s: float | None = None   # duplicates counted from here (previous fault; None = start)


@dataclass(frozen=True, slots=True)
class Recovery:
    """Time from a fault until per-second successful throughput is back (None = never)."""

    t_s: float
    kind: str
    target: str | None
    baseline_per_s: float | None   # median ok req/s over whole in-window bins before the fault
    recovered_at_s: float | None   # start of the first of RECOVERY_RUN good bins
    recovery_s: float | None       # recovered_at_s - t_s


@dataclass(frozen=True, slots=True)
class ModeMetrics:
    """Every scalar metric of one mode over its window."""

    mode: str
    window: Window
    counts: Counts
    successful_throughput: float          # ok requests / s
    reviews_per_s: float                  # ok reviews / s
    error_rate: float | None              # failed / sent (requests)
    attempt_error_rate: float | None      # failed attempts / attempts
    retry_amplification: float | None     # attempts / requests
    error_kinds: dict[str, int]           # failed attempts by error_kind
    failed_by_kind: dict[str, int]        # failed requests by their last attempt's error_kind
    latency_ms: Percentiles               # open loop: done - request_intended
    service_latency_ms: Percentiles       # service view: done - sent
    spread_1s: Spread
    spread_10s: Spread
    in_flight_max: int
    in_flight_mean: float | None
    ceiling: Ceiling
    efficiency: float | None              # reviews_per_s / ceiling
    recoveries: tuple[Recovery, ...] = field(default_factory=tuple)
    fault_impacts: tuple[FaultImpact, ...] = field(default_factory=tuple)
    # ok reviews *answered* inside the window / s. ``reviews_per_s`` counts the requests *due*
    # in the window, whenever they were answered: with a backlog drained after the window (a
    # stream client that waits for its answers) that credits the window with drain-time work.
    reviews_answered_per_s: float | None = None

    @property
    def throughput_cv(self) -> float | None:
        return self.spread_1s.cv


@dataclass(frozen=True, slots=True)
class ModeSeries:
    """Time series of one mode over its whole timeline (warm-up and drain included)."""

    throughput_1s: pd.DataFrame
    throughput_10s: pd.DataFrame
    latency_10s: pd.DataFrame
    service_latency_10s: pd.DataFrame
    errors_1s: pd.DataFrame
    in_flight_1s: pd.DataFrame


# --------------------------------------------------------------------------------------------
# Small helpers


def _none(x: Any) -> float | None:
    """NaN/inf -> None, numpy scalars -> float."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _div(a: float, b: float) -> float | None:
    return _none(a / b) if b else None


def jsonable(obj: Any) -> Any:
    """Dataclasses/numpy/pandas -> plain JSON types, NaN and inf -> None, recursively."""
    if is_dataclass(obj) and not isinstance(obj, type):
        obj = asdict(obj)
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _none(obj)
    if obj is pd.NA or obj is pd.NaT:
        return None
    return obj


def in_window(table: pd.DataFrame, window: Window) -> pd.DataFrame:
    """Rows (attempts) of the requests due in the window."""
    t = table["request_intended_s"].astype(float)
    return table[(t >= window.start) & (t < window.end)]


def _codes(table: pd.DataFrame) -> tuple[np.ndarray, pd.Index]:
    """request_id -> dense integer codes in sorted id order (strings are slow; ints are not)."""
    codes, uniques = pd.factorize(table["request_id"].astype(str), sort=True)
    return codes, pd.Index(uniques, name="request_id")


def requests_of(table: pd.DataFrame) -> pd.DataFrame:
    """Collapse attempts into one row per request, indexed by ``request_id`` (sorted).

    Columns: attempts, failed_attempts, ok, batch_size, request_intended_s, sent_s, done_s,
    error_kind, duplicates. For an ok request, sent_s/done_s are those of its first ok attempt;
    for a failed one, its last attempt's (when the client finally gave up) and error_kind is the
    last attempt's kind.
    """
    cols = ["attempts", "failed_attempts", "ok", "batch_size", "request_intended_s", "sent_s",
            "done_s", "error_kind", "duplicates"]
    if table.empty:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in cols}).rename_axis("request_id")
    codes, ids = _codes(table)
    attempt = table["attempt"].astype(float).to_numpy()
    order = np.lexsort((attempt, codes))                  # by request, then attempt number
    c = codes[order]
    start = np.r_[0, np.flatnonzero(np.diff(c)) + 1]
    end = np.r_[start[1:], len(c)]
    first, last = order[start], order[end - 1]
    is_ok = (table["outcome"] == "ok").to_numpy()[order]
    ok_pos = np.flatnonzero(is_ok)
    ok_groups, first_ok_at = np.unique(c[ok_pos], return_index=True)
    ok = np.zeros(len(ids), dtype=bool)
    ok[ok_groups] = True
    pick = last.copy()                                    # the attempt whose times describe the request
    pick[ok_groups] = order[ok_pos[first_ok_at]]
    col = lambda name: table[name].astype(float).to_numpy()  # noqa: E731
    kinds = table["error_kind"].astype(object).to_numpy()[last]
    dup = np.nan_to_num(col("duplicates"))
    return pd.DataFrame({
        "attempts": (end - start).astype(int),
        "failed_attempts": np.add.reduceat((~is_ok).astype(int), start),
        "ok": ok,
        "batch_size": np.nan_to_num(col("batch_size")[first]).astype(int),
        "request_intended_s": col("request_intended_s")[first],
        "sent_s": col("sent_s")[pick],
        "done_s": col("done_s")[pick],
        "error_kind": np.where(ok, None, kinds),
        "duplicates": np.add.reduceat(dup[order], start).astype(int),
    }, index=ids)


def counts(table: pd.DataFrame, window: Window, req: pd.DataFrame | None = None) -> Counts:
    """Request-level accounting of the window; asserts ``sent == ok + failed`` and that it agrees
    with ``requests_of`` (two independent tallies). ``req`` = ``requests_of(in_window(table,
    window))`` if the caller already has it."""
    rows = in_window(table, window)
    req = requests_of(rows) if req is None else req
    if rows.empty:
        return Counts(0, 0, 0, 0, 0, 0, 0)
    codes, ids = _codes(rows)
    ok_mask = (rows["outcome"] == "ok").to_numpy()
    ok_per_request = np.bincount(codes, weights=ok_mask, minlength=len(ids))
    sent, ok, failed = len(ids), int((ok_per_request > 0).sum()), int((ok_per_request == 0).sum())
    assert sent == ok + failed, f"accounting broken: sent {sent} != ok {ok} + failed {failed}"
    assert ok == int(req["ok"].sum()) and sent == len(req), "request tallies disagree"
    return Counts(
        sent=sent, ok=ok, failed=failed, attempts=len(rows),
        failed_attempts=int((~ok_mask).sum()),
        duplicates=int(rows["duplicates"].astype(float).fillna(0).sum()),
        reviews_ok=int(req.loc[req["ok"].astype(bool), "batch_size"].sum()),
    )


def percentiles(values_ms: Sequence[float] | np.ndarray) -> Percentiles:
    """Nearest-rank percentiles of a sample (NaNs dropped); all None for an empty sample."""
    v = np.asarray(values_ms, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Percentiles(0, *([None] * len(PERCENTILES)), None)
    qs = np.percentile(v, list(PERCENTILES.values()), method="inverted_cdf")
    # rounded to the nanosecond so that float noise (0.1 s - 0 s = 99.99999999999964 ms) never shows
    return Percentiles(int(v.size), *(round(float(q), 6) for q in qs), round(float(v.max()), 6))


def latencies_ms(req: pd.DataFrame, view: str = "open") -> np.ndarray:
    """Latency in ms of the ok requests of a ``requests_of`` frame.

    ``view="open"``: done - request_intended (what a user waited, retries included);
    ``view="service"``: done - sent of the ok attempt (what the service took once it had it).
    """
    if req.empty:
        return np.empty(0)
    ok = req[req["ok"].astype(bool)]
    start = ok["request_intended_s"] if view == "open" else ok["sent_s"]
    if view not in ("open", "service"):
        raise ValueError(f"view must be 'open' or 'service', not {view!r}")
    return ((ok["done_s"].astype(float) - start.astype(float)) * 1000.0).to_numpy()


def spread(values: Sequence[float] | np.ndarray, bin_s: float) -> Spread:
    """Mean, population std, min, max, range and CV of a per-bin series."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Spread(bin_s, 0, None, None, None, None, None, None)
    mean, std = float(v.mean()), float(v.std(ddof=0))
    return Spread(bin_s, int(v.size), mean, std, float(v.min()), float(v.max()),
                  float(v.max() - v.min()), _div(std, mean))


# --------------------------------------------------------------------------------------------
# Time series


def _bins(window: Window, width: float, t_max: float) -> np.ndarray:
    """Integer bin indices k from t=0 through the window end and the latest datum;
    bin k = [start + k·w, start + (k+1)·w)."""
    lo = math.floor((0.0 - window.start) / width + _EPS)
    hi = math.ceil((window.end - window.start) / width - _EPS)          # window end is exclusive
    if math.isfinite(t_max):
        hi = max(hi, math.floor((t_max - window.start) / width + _EPS) + 1)  # the datum's own bin
    return np.arange(lo, max(hi, lo + 1))


def _bin_of(t: pd.Series | np.ndarray, window: Window, width: float) -> np.ndarray:
    """Float bin index of each time (NaN stays NaN)."""
    return np.floor((np.asarray(t, dtype=float) - window.start) / width + _EPS)


def _sum_by_bin(t: pd.Series | np.ndarray, weights: np.ndarray | float, window: Window,
                width: float, k: np.ndarray) -> np.ndarray:
    """Sum of ``weights`` per bin ``k`` (times outside the bins or NaN are ignored)."""
    b = _bin_of(t, window, width)
    w = np.broadcast_to(np.asarray(weights, dtype=float), b.shape)
    m = np.isfinite(b)
    idx = b[m].astype(np.int64) - int(k[0])
    inside = (idx >= 0) & (idx < len(k))
    return np.bincount(idx[inside], weights=w[m][inside], minlength=len(k))[: len(k)]


def _frame(k: np.ndarray, window: Window, width: float) -> pd.DataFrame:
    t = window.start + k * width
    return pd.DataFrame({
        "t_s": t.astype(float),
        "in_window": (k >= 0) & (t + width <= window.end + _EPS),
    })


def _t_max(table: pd.DataFrame) -> float:
    """Latest time a row knows about (its fate or its due time); NaN for an empty table."""
    if table.empty:
        return float("nan")
    v = np.r_[table["done_s"].astype(float).to_numpy(), table["request_intended_s"].astype(float).to_numpy()]
    v = v[np.isfinite(v)]
    return float(v.max()) if v.size else float("nan")


def _ok_requests(table: pd.DataFrame, req: pd.DataFrame | None) -> pd.DataFrame:
    req = requests_of(table) if req is None else req
    return req[req["ok"].astype(bool)] if len(req) else req


def throughput_series(table: pd.DataFrame, window: Window, width: float = 1.0, *,
                      req: pd.DataFrame | None = None) -> pd.DataFrame:
    """Ok requests and reviews completed per bin (by ``done_s``): t_s, in_window, ok, ok_per_s,
    reviews_per_s. ``req`` = ``requests_of(table)`` if already computed (big tables)."""
    k = _bins(window, width, _t_max(table))
    out = _frame(k, window, width)
    ok = _ok_requests(table, req)
    out["ok"] = _sum_by_bin(ok["done_s"], 1.0, window, width, k).astype(int)
    out["ok_per_s"] = out["ok"] / width
    out["reviews_per_s"] = _sum_by_bin(ok["done_s"], ok["batch_size"].to_numpy(dtype=float),
                                       window, width, k) / width
    return out


def latency_series(table: pd.DataFrame, window: Window, width: float = 10.0,
                   view: str = "open", *, req: pd.DataFrame | None = None) -> pd.DataFrame:
    """Latency percentiles (ms) of ok requests per bin of ``done_s``: t_s, in_window, n, p50..p999, max."""
    k = _bins(window, width, _t_max(table))
    out = _frame(k, window, width)
    ok = _ok_requests(table, req)
    b = _bin_of(ok["done_s"], window, width)
    lat = latencies_ms(ok, view)
    m = np.isfinite(b) & np.isfinite(lat)
    groups = pd.Series(lat[m]).groupby(b[m].astype(np.int64)) if m.any() else []
    stats = {int(kk): percentiles(g.to_numpy()) for kk, g in groups}
    empty = percentiles([])
    for c in ["n", *PERCENTILES, "max"]:
        vals = [getattr(stats.get(int(kk), empty), c) for kk in k]
        out[c] = np.asarray([np.nan if v is None else v for v in vals], dtype=int if c == "n" else float)
    return out


def error_series(table: pd.DataFrame, window: Window, width: float = 1.0) -> pd.DataFrame:
    """Attempts and failed attempts per bin of ``done_s``.

    Columns: t_s, in_window, attempts, errors, error_fraction (errors ÷ attempts, NaN when a bin
    has no attempt), retries_per_s (attempts > 1 by when they were due), then one column per
    error kind present, in errors per second.
    """
    k = _bins(window, width, _t_max(table))
    out = _frame(k, window, width)
    done = table["done_s"].astype(float).fillna(table["intended_s"].astype(float)).to_numpy()
    err = (table["outcome"] != "ok").to_numpy()
    out["attempts"] = _sum_by_bin(done, 1.0, window, width, k).astype(int)
    out["errors"] = _sum_by_bin(done[err], 1.0, window, width, k).astype(int)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["error_fraction"] = np.where(out["attempts"] > 0, out["errors"] / out["attempts"], np.nan)
    # retries: attempts after the first, per second, by when they were due (the extra load the
    # clients put on a struggling service: the article's self-denial of service)
    retry = table["attempt"].to_numpy() > 1
    out["retries_per_s"] = _sum_by_bin(table["intended_s"].astype(float).to_numpy()[retry], 1.0,
                                       window, width, k) / width
    kinds = table["error_kind"].astype(object).to_numpy()
    for kind in sorted({str(x) for x in kinds[err]}):
        sel = err & (kinds == kind)
        out[kind] = _sum_by_bin(done[sel], 1.0, window, width, k) / width
    return out


def in_flight_series(table: pd.DataFrame, window: Window, step: float = 1.0) -> pd.DataFrame:
    """Attempts (and reviews) sent but not yet done, sampled at each bin start.

    For the stream this is the backlog: produced but not answered. A row never sent is never in
    flight; a row with no ``done_s`` stays in flight to the end.
    """
    k = _bins(window, step, _t_max(table))
    out = _frame(k, window, step)[["t_s", "in_window"]]
    if table.empty:
        out["in_flight"] = 0
        out["reviews_in_flight"] = 0
        return out
    sent = table["sent_s"].astype(float).to_numpy()
    done = table["done_s"].astype(float).to_numpy()
    bs = table["batch_size"].astype(float).fillna(0).to_numpy()
    m = np.isfinite(sent)
    sent, done, bs = sent[m], done[m], bs[m]
    done = np.where(np.isfinite(done), np.maximum(done, sent), np.inf)   # never answered: forever
    t = out["t_s"].to_numpy()
    o_s, o_d = np.argsort(sent, kind="stable"), np.argsort(done, kind="stable")
    cs = np.r_[0.0, np.cumsum(bs[o_s])]
    cd = np.r_[0.0, np.cumsum(bs[o_d])]
    ns = np.searchsorted(sent[o_s], t, side="right")   # sent <= t
    nd = np.searchsorted(done[o_d], t, side="right")   # done <= t  (then no longer in flight)
    out["in_flight"] = (ns - nd).astype(int)
    out["reviews_in_flight"] = (cs[ns] - cd[nd]).astype(int)
    return out


def mode_series(table: pd.DataFrame, window: Window) -> ModeSeries:
    req = requests_of(table)          # collapse once: tables can hold millions of attempts
    return ModeSeries(
        throughput_1s=throughput_series(table, window, 1.0, req=req),
        throughput_10s=throughput_series(table, window, 10.0, req=req),
        latency_10s=latency_series(table, window, 10.0, "open", req=req),
        service_latency_10s=latency_series(table, window, 10.0, "service", req=req),
        errors_1s=error_series(table, window, 1.0),
        in_flight_1s=in_flight_series(table, window, 1.0),
    )


# --------------------------------------------------------------------------------------------
# Efficiency, faults


def ceiling_from_meta(meta: Mapping[str, Any], mode: str | None = None) -> Ceiling:
    """The ceiling measured around the mode (meta.modes.<mode>.ceiling: best of its tries, with
    their noise), else the run's one measurement before all modes (older runs), else 1e6 / model
    batched cost × service cores (flagged)."""
    mode_meta = ((meta.get("modes") or {}).get(mode) or {}) if mode else {}
    own = mode_meta.get("ceiling") or {}
    best = _none(own.get("best"))
    if best and best > 0:
        batch = own.get("batch")
        return Ceiling(best, "measured", _none(own.get("noise")),
                       int(batch) if isinstance(batch, (int, float)) else None)
    measured = _none((meta.get("ceiling") or {}).get("batched_reviews_per_s"))
    if measured and measured > 0:
        return Ceiling(measured, "measured")
    cost = _none((((meta.get("model") or {}).get("cost_us_per_prediction")) or {}).get("batched_median"))
    cores = len(mode_meta.get("service_cpus") or []) or len((meta.get("ceiling") or {}).get("cpus") or []) or 1
    if cost and cost > 0:
        return Ceiling(1e6 / cost * cores, "model_cost_fallback")
    return Ceiling(None, "unknown")


def efficiency(reviews_per_s: float, ceiling: Ceiling) -> float | None:
    return _div(reviews_per_s, ceiling.reviews_per_s) if ceiling.reviews_per_s else None


def ceiling_check(reviews_per_s: float | None, ceiling: Ceiling) -> str | None:
    """Is the ceiling one? "below" it; "within_noise": above the best try by no more than the
    tries' own spread (efficiency ≈ 1: the model's speed); "above": by more than that, so the
    ceiling was not what this deployment had (a busier core when it was measured, or more cores
    than measured). None without a measured ceiling."""
    c = ceiling.reviews_per_s
    if ceiling.source != "measured" or not c or reviews_per_s is None:
        return None
    if reviews_per_s <= c:
        return "below"
    return "within_noise" if reviews_per_s <= c * (1.0 + (ceiling.noise or 0.0)) else "above"


#: Steal, or CPU of processes other than the service's, above this % of each service core flags
#: a run: the service then lost about a tenth of its CPU, as much as `make compare`'s efficiency
#: threshold, so the machine's noise alone could make or hide a regression.
CORE_NOISE_WARN = 10.0


@dataclass(frozen=True, slots=True)
class CoreNoise:
    """What else used the service cores over the window (% of one core, summed over them)."""

    cores: int
    busy: float                # processes + irq + steal
    processes: float           # user + nice + system: the service's and everyone else's
    irq: float                 # irq + softirq: the kernel (loopback networking of this run too)
    steal: float               # the hypervisor gave the core to another VM
    service: float | None      # the service's own processes (cpu.csv)
    other: float | None        # processes - service: someone else's CPU on the service cores
    noisy: bool


def is_noisy(steal: float | None, other: float | None, cores: int,
             threshold: float = CORE_NOISE_WARN) -> bool:
    """Steal or others' CPU above ``threshold`` % per service core."""
    per = max(1, cores)
    return any(x is not None and x / per > threshold for x in (steal, other))


def core_noise(cores: pd.DataFrame | None, window: Window,
               service_cpu: float | None) -> CoreNoise | None:
    """The window's mean of each part of cores.csv (cumulative seconds: bench.cpu.CoreSampler)
    between its first and last sample inside the window; None with fewer than two."""
    if cores is None or cores.empty or not {"t_s", "cores", "processes_s", "irq_s",
                                            "steal_s"} <= set(cores.columns):
        return None
    w = cores[(cores["t_s"] >= window.start) & (cores["t_s"] <= window.end)].sort_values("t_s")
    if len(w) < 2 or float(w["t_s"].iloc[-1]) <= float(w["t_s"].iloc[0]):
        return None
    dt = float(w["t_s"].iloc[-1] - w["t_s"].iloc[0])
    pct = {k: max(0.0, 100.0 * float(w[f"{k}_s"].iloc[-1] - w[f"{k}_s"].iloc[0]) / dt)
           for k in ("processes", "irq", "steal")}
    n = int(w["cores"].iloc[0])
    other = None if service_cpu is None else max(0.0, pct["processes"] - service_cpu)
    return CoreNoise(n, sum(pct.values()), pct["processes"], pct["irq"], pct["steal"],
                     service_cpu, other, is_noisy(pct["steal"], other, n))


def faults_from_meta(items: Iterable[Mapping[str, Any]] | None) -> tuple[Fault, ...]:
    """meta.modes.<mode>.faults -> Faults sorted by time; entries without a time are skipped."""
    out = []
    for f in items or ():
        t = _none(f.get("t_s"))
        if t is not None:
            pid = f.get("pid")
            out.append(Fault(t, str(f.get("kind", "fault")), f.get("target"),
                             int(pid) if isinstance(pid, (int, float)) else None,
                             _none(f.get("duration_s")), _none(f.get("ended_t_s"))))
    return tuple(sorted(out, key=lambda f: f.t_s))


def fault_span(fault: Fault, rec: Recovery | None, next_t_s: float | None = None
               ) -> tuple[float, float | None]:
    """[start, end) of the requests attributed to ``fault`` (see :class:`FaultImpact`)."""
    end: float | None = None
    if rec is not None and rec.recovered_at_s is not None:
        end = rec.recovered_at_s + RECOVERY_RUN
        if fault.ended_t_s is not None:
            end = max(end, fault.ended_t_s)
    if next_t_s is not None:
        end = next_t_s if end is None else min(end, next_t_s)
    return fault.t_s, end


def fault_impact(req: pd.DataFrame, fault: Fault, rec: Recovery | None = None,
                 next_t_s: float | None = None, prev_t_s: float | None = None) -> FaultImpact:
    """Requests lost, retried and duplicated around ``fault``; ``req`` = ``requests_of`` the
    mode's whole table (every attempt, not only the window's); ``prev_t_s``/``next_t_s`` = the
    times of the faults before and after it, if any."""
    start, end = fault_span(fault, rec, next_t_s)
    if len(req):
        due = req["request_intended_s"].astype(float).to_numpy()
        done = req["done_s"].astype(float).to_numpy()
        before_end = due < end if end is not None else np.ones(len(req), dtype=bool)
        r = req[(~np.isfinite(done) | (done >= start - _EPS)) & before_end]
        d = req[before_end & (due >= prev_t_s if prev_t_s is not None else True)]
    else:
        r = d = req
    ok = r["ok"].astype(bool).to_numpy() if len(r) else np.zeros(0, dtype=bool)
    attempts = r["attempts"].astype(int).to_numpy() if len(r) else np.zeros(0, dtype=int)
    dups = d["duplicates"].astype(int).to_numpy() if len(d) else np.zeros(0, dtype=int)
    lost_kinds = r.loc[~ok, "error_kind"].astype(object).fillna("unknown").value_counts() \
        if len(r) else pd.Series(dtype=int)
    return FaultImpact(
        t_s=fault.t_s, kind=fault.kind, target=fault.target, span_start_s=start, span_end_s=end,
        requests=int(len(r)), ok=int(ok.sum()), lost=int((~ok).sum()),
        lost_by_kind={str(k): int(v) for k, v in sorted(lost_kinds.items())},
        retried=int((attempts > 1).sum()), extra_attempts=int(np.maximum(attempts - 1, 0).sum()),
        duplicated=int((dups > 0).sum()), duplicates=int(dups.sum()), dup_from_s=prev_t_s,
    )


def fault_impacts(table: pd.DataFrame, faults: Sequence[Fault], recoveries: Sequence[Recovery],
                  *, req: pd.DataFrame | None = None) -> tuple[FaultImpact, ...]:
    """:func:`fault_impact` of every fault (sorted by time), each span stopping at the next."""
    if not faults:
        return ()
    req = requests_of(table) if req is None else req
    fs = sorted(faults, key=lambda f: f.t_s)
    recs = list(recoveries) + [None] * (len(fs) - len(recoveries))
    return tuple(fault_impact(req, f, r, fs[i + 1].t_s if i + 1 < len(fs) else None,
                              fs[i - 1].t_s if i > 0 else None)
                 for i, (f, r) in enumerate(zip(fs, recs)))


def recovery(tp_1s: pd.DataFrame, fault: Fault, window: Window) -> Recovery:
    """First time after ``fault`` from which per-second ok throughput stays ≥ 90 % of its
    pre-fault median for 3 consecutive whole seconds (bins starting at or after the fault, within
    the window). Pre-fault median uses the in-window bins before the fault (the warm-up bins if
    the fault falls there). None when there is no baseline, or when it never recovers."""
    s = tp_1s
    before = s[(s["t_s"] + 1.0 <= fault.t_s + _EPS) & s["in_window"]]
    if before.empty:
        before = s[(s["t_s"] + 1.0 <= fault.t_s + _EPS) & (s["t_s"] >= 0)]
    base = _none(before["ok_per_s"].median()) if len(before) else None
    if not base:
        return Recovery(fault.t_s, fault.kind, fault.target, base, None, None)
    after = s[(s["t_s"] >= fault.t_s - _EPS) & (s["t_s"] + 1.0 <= window.end + _EPS)]
    good = (after["ok_per_s"].to_numpy() >= RECOVERY_FRACTION * base - _EPS)
    run = 0
    for i, g in enumerate(good):
        run = run + 1 if g else 0
        if run == RECOVERY_RUN:
            at = float(after["t_s"].iloc[i - RECOVERY_RUN + 1])
            return Recovery(fault.t_s, fault.kind, fault.target, base, at, at - fault.t_s)
    return Recovery(fault.t_s, fault.kind, fault.target, base, None, None)


# --------------------------------------------------------------------------------------------
# One mode, two modes


def mode_metrics(table: pd.DataFrame, window: Window, *, mode: str | None = None,
                 ceiling: Ceiling | None = None, faults: Sequence[Fault] = (),
                 series: ModeSeries | None = None) -> ModeMetrics:
    """All scalar metrics of one mode. Pass ``series`` if already computed (saves time)."""
    mode = mode or (str(table["mode"].iloc[0]) if len(table) else "?")
    ceiling = ceiling or Ceiling(None, "unknown")
    rows = in_window(table, window)
    req = requests_of(rows)
    c = counts(table, window, req=req)
    tput = c.ok / window.duration_s
    rps = c.reviews_ok / window.duration_s
    failed_rows = rows[rows["outcome"] != "ok"]
    kinds = failed_rows["error_kind"].astype(object).value_counts().sort_index()
    failed_req = req[~req["ok"].astype(bool)] if len(req) else req
    fkinds = failed_req["error_kind"].astype(object).value_counts().sort_index() if len(req) else {}
    tp1 = series.throughput_1s if series else throughput_series(table, window, 1.0)
    tp10 = series.throughput_10s if series else throughput_series(table, window, 10.0)
    infl = series.in_flight_1s if series else in_flight_series(table, window, 1.0)
    infl_w = infl[infl["in_window"]]["in_flight"]
    faults = tuple(sorted(faults, key=lambda f: f.t_s))
    recs = tuple(recovery(tp1, f, window) for f in faults)
    return ModeMetrics(
        mode=mode, window=window, counts=c,
        successful_throughput=tput, reviews_per_s=rps,
        error_rate=_div(c.failed, c.sent),
        attempt_error_rate=_div(c.failed_attempts, c.attempts),
        retry_amplification=_div(c.attempts, c.sent),
        error_kinds={str(k): int(v) for k, v in kinds.items()},
        failed_by_kind={str(k): int(v) for k, v in dict(fkinds).items()},
        latency_ms=percentiles(latencies_ms(req, "open")),
        service_latency_ms=percentiles(latencies_ms(req, "service")),
        spread_1s=spread(tp1.loc[tp1["in_window"], "ok_per_s"].to_numpy(), 1.0),
        spread_10s=spread(tp10.loc[tp10["in_window"], "ok_per_s"].to_numpy(), 10.0),
        in_flight_max=int(infl_w.max()) if len(infl_w) else 0,
        in_flight_mean=_none(infl_w.mean()) if len(infl_w) else None,
        ceiling=ceiling, efficiency=efficiency(rps, ceiling),
        recoveries=recs, fault_impacts=fault_impacts(table, faults, recs),
        reviews_answered_per_s=answered_in_window(table, window),
    )


def answered_in_window(table: pd.DataFrame, window: Window) -> float:
    """ok reviews whose answer came inside the window, per second of it (a throughput meter's
    view: completions per second, whatever their due time)."""
    if table.empty:
        return 0.0
    ok = table[(table["outcome"] == "ok") & (table["done_s"] >= window.start)
               & (table["done_s"] < window.end)]
    return float(ok["batch_size"].astype(float).sum()) / window.duration_s


def slice_headlines(table: pd.DataFrame, window: Window, n: int) -> list[dict[str, float | None]]:
    """The headline figures of each of ``n`` equal slices of the window, by the same rules as the
    whole window's (a request belongs to the slice it was due in): reviews/s, latency p50/p99 and
    error rate. A single run's spread over time, when there are no repeats to spread over."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    req = requests_of(in_window(table, window))
    width = window.duration_s / n
    due = req["request_intended_s"].astype(float).to_numpy() if len(req) else np.empty(0)
    out = []
    for i in range(n):
        lo = window.start + i * width
        hi = window.end if i == n - 1 else lo + width
        sel = req[(due >= lo) & (due < hi)] if len(req) else req
        ok = sel["ok"].astype(bool) if len(sel) else pd.Series(dtype=bool)
        p = percentiles(latencies_ms(sel, "open"))
        out.append({
            "reviews_per_s": float(sel.loc[ok, "batch_size"].sum()) / width if len(sel) else 0.0,
            "latency_ms.p50": p.p50,
            "latency_ms.p99": p.p99,
            "error_rate": _div(float((~ok).sum()), float(len(sel))),
        })
    return out


def headline(m: ModeMetrics) -> dict[str, float | None]:
    """The flat, dotted-name view of a mode's figures that have a ratio (analysis.figures), read
    off ModeMetrics by the same dotted path: what ratios, repeats and the summary chart use."""
    out: dict[str, float | None] = {}
    for key in figures.ratio_keys():
        v: Any = m
        for part in key.split("."):
            v = getattr(v, part)
        out[key] = v
    return out


def ratios(rest: ModeMetrics | None, stream: ModeMetrics | None) -> dict[str, float | None]:
    """``stream`` ÷ ``rest`` (any mode ÷ the baseline) for every headline metric: None when
    either side is missing, the baseline is 0, or (requests/s) the units differ."""
    keys = figures.ratio_keys()
    if rest is None or stream is None:
        return {k: None for k in keys}
    r, s = headline(rest), headline(stream)
    out = {k: (_div(s[k], r[k]) if s[k] is not None and r[k] is not None else None) for k in keys}
    if not same_request_size(rest, stream):
        # a 1,000-review POST and a one-review event are not the same unit: compare reviews/s
        out["successful_throughput"] = None
    return out


def reviews_per_request(m: ModeMetrics) -> float | None:
    """Reviews a successful request carried, on average, in the window."""
    if not m.successful_throughput or m.reviews_per_s is None:
        return None
    return m.reviews_per_s / m.successful_throughput


def same_request_size(a: ModeMetrics, b: ModeMetrics, tolerance: float = 0.01) -> bool:
    """True when the two modes' requests carry the same number of reviews (within 1 %), so
    their requests per second compare; unknown (nothing answered) counts as the same."""
    ra, rb = reviews_per_request(a), reviews_per_request(b)
    if ra is None or rb is None:
        return True
    return abs(ra - rb) <= tolerance * max(ra, rb)


# --------------------------------------------------------------------------------------------
# Service CPU (cpu.csv: t_s, process, pid, cpu_percent; 100 = one core busy)

_DRIVER_HINTS = ("driver", "locust", "loadgen", "load-gen")
_BROKER_HINTS = ("broker", "kafka", "redpanda")


def cpu_role(process: str, role_by_pid: Mapping[int, str] | None = None, pid: int | None = None) -> str:
    """'service' | 'broker' | 'driver' for a cpu.csv process: the run's own role if meta gives one
    for that pid, else a guess from the name (anything not a driver or broker serves)."""
    if role_by_pid and pid is not None and int(pid) in role_by_pid:
        return str(role_by_pid[int(pid)])
    name = str(process).lower()
    if any(h in name for h in _DRIVER_HINTS):
        return "driver"
    if any(h in name for h in _BROKER_HINTS):
        return "broker"
    return "service"


def cpu_by_role(cpu: pd.DataFrame, role_by_pid: Mapping[int, str] | None = None) -> pd.DataFrame:
    """Sum cpu_percent per sample time and role: columns t_s, then one column per role."""
    if cpu is None or cpu.empty:
        return pd.DataFrame({"t_s": pd.Series(dtype=float)})
    c = cpu.copy()
    if "role" in c.columns:
        c["role"] = c["role"].astype(str)
    else:
        c["role"] = [cpu_role(p, role_by_pid, pid) for p, pid in zip(c["process"], c["pid"])]
    wide = c.pivot_table(index="t_s", columns="role", values="cpu_percent", aggfunc="sum",
                         fill_value=0.0).sort_index()
    wide.columns = [str(x) for x in wide.columns]
    return wide.reset_index()


def cpu_means(cpu_roles: pd.DataFrame, window: Window) -> dict[str, float | None]:
    """Mean CPU % per role over the samples taken inside the window."""
    if cpu_roles is None or cpu_roles.empty:
        return {}
    w = cpu_roles[(cpu_roles["t_s"] >= window.start) & (cpu_roles["t_s"] < window.end)]
    return {c: (_none(w[c].mean()) if len(w) else None) for c in cpu_roles.columns if c != "t_s"}


# --------------------------------------------------------------------------------------------
# Rate steps (the sweep): a throughput-latency curve and the maximum sustainable throughput


@dataclass(frozen=True, slots=True)
class Step:
    start_s: float
    end_s: float
    offered_per_s: float          # the scenario's rate for this step (operations / s)
    requests: int                 # requests due in the step
    ok: int
    ok_per_s: float
    reviews_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    error_rate: float | None
    sustainable: bool             # p99 within the SLO and error rate below its bound


def rate_steps(scenario: Mapping[str, Any] | None) -> list[tuple[float, float]]:
    """``[(at_s, ops_per_s), ...]`` of an open-loop ``steps`` scenario (as in meta.json), else []."""
    rate = (((scenario or {}).get("arrival") or {}).get("open") or {}).get("rate") or {}
    if rate.get("shape") != "steps":
        return []
    return [(float(at), float(r)) for at, r in rate.get("steps") or []]


def step_metrics(table: pd.DataFrame, steps: Sequence[tuple[float, float]], end_s: float, *,
                 slo_p99_ms: float | None, max_error_rate: float | None) -> list[Step]:
    """Per rate step: what was offered, served and how fast, judged against the SLO.

    A request belongs to the step in which it was *due* (its first attempt's intended time), so a
    step that falls behind is charged with the latency of the queue it built. A step is
    sustainable when it had requests, its error rate is below ``max_error_rate`` (default 1 %)
    and its p99 (open loop) is within ``slo_p99_ms`` (no bound when None).
    """
    req = requests_of(table)
    max_err = 0.01 if max_error_rate is None else float(max_error_rate)
    out: list[Step] = []
    for i, (at, rate) in enumerate(steps):
        hi = steps[i + 1][0] if i + 1 < len(steps) else end_s
        if hi <= at:
            continue
        sel = req[(req["request_intended_s"] >= at) & (req["request_intended_s"] < hi)] \
            if len(req) else req
        n, ok = int(len(sel)), int(sel["ok"].astype(bool).sum()) if len(sel) else 0
        dur = hi - at
        reviews = float(sel.loc[sel["ok"].astype(bool), "batch_size"].sum()) if n else 0.0
        p = percentiles(latencies_ms(sel, "open"))
        err = (n - ok) / n if n else None
        good = (n > 0 and err is not None and err < max_err
                and (slo_p99_ms is None or (p.p99 is not None and p.p99 <= slo_p99_ms)))
        out.append(Step(at, hi, rate, n, ok, ok / dur, reviews / dur, p.p50, p.p99, err, good))
    return out


def max_sustainable(steps: Sequence[Step]) -> Step | None:
    """The highest-rate step that met the SLO (None when none did)."""
    good = [s for s in steps if s.sustainable]
    return max(good, key=lambda s: s.offered_per_s) if good else None


# --------------------------------------------------------------------------------------------
# Broker drift: a broker whose cost per request grows at a steady load


def broker_drift(cpu_roles: pd.DataFrame, table: pd.DataFrame, window: Window,
                 role: str = "broker") -> dict[str, float] | None:
    """The broker's CPU per answered request in the first and the last third of the window.

    Why: a broker whose fetch lists every stored batch of a partition (an in-memory store, the
    README's broker-drift caveat) costs more per request as its log grows, and the stream's
    latency late in a run carries that cost. A ratio near 1 says the broker kept its
    cost; well above 1 says the run measured the broker's log as well as the deployment.
    None without broker samples or answers in either third.
    """
    if cpu_roles is None or cpu_roles.empty or role not in cpu_roles.columns or table.empty:
        return None
    third = window.duration_s / 3
    ok = table[table["outcome"] == "ok"]
    out: dict[str, float] = {}
    for name, start in (("first", window.start), ("last", window.end - third)):
        got = _cpu_and_answers(cpu_roles, ok, start, start + third, role)
        if got is None:
            return None
        mean, answered = got
        out[f"{name}_cpu_ms_per_request"] = mean / 100 * third / answered * 1e3
        out[f"{name}_cpu_percent"] = mean
    first = out["first_cpu_ms_per_request"]
    out["ratio"] = out["last_cpu_ms_per_request"] / first if first > 0 else float("nan")
    return out


def broker_cost(cpu_roles: pd.DataFrame, table: pd.DataFrame, window: Window,
                role: str = "broker") -> dict[str, float] | None:
    """The broker's own CPU over the measured window, per 1,000 requests answered in it.

    Why: two brokers (or two runs) carry different loads, so their CPU % alone doesn't compare;
    CPU-milliseconds per 1,000 answered requests does. None without broker samples or answers.
    """
    if cpu_roles is None or cpu_roles.empty or role not in cpu_roles.columns or table.empty:
        return None
    got = _cpu_and_answers(cpu_roles, table[table["outcome"] == "ok"], window.start, window.end,
                           role)
    if got is None:
        return None
    mean, answered = got
    return {"cpu_percent": mean, "answered": answered,
            "cpu_ms_per_1k_answered": mean / 100 * window.duration_s / answered * 1e6}


def _cpu_and_answers(cpu_roles: pd.DataFrame, ok: pd.DataFrame, start: float, end: float,
                     role: str) -> tuple[float, int] | None:
    """(mean CPU % of ``role``, ok answers done) in [start, end); None if either is missing."""
    cpu = cpu_roles[(cpu_roles["t_s"] >= start) & (cpu_roles["t_s"] < end)][role]
    answered = int(((ok["done_s"] >= start) & (ok["done_s"] < end)).sum())
    if cpu.empty or answered == 0:
        return None
    return float(cpu.mean()), answered
