"""Which deployment to use, in words and figures: pure functions, no I/O.

Two readers. ``make verdict`` measures every deployment of a scenario on its own scale (its
capacity, its latency at ¼, ½ and ¾ of it, its behaviour at 1.5× and 3× it under the article's
batch-and-retry load) and :func:`regimes` names a winner per load regime with its margin and a
bootstrap interval; :func:`capacity_plan` turns the per-core capacity into cores and workers for a
target rate; :func:`rules` says what the figures make of the article's two rules. Every other run
(``make bench``) opens with :func:`run_verdict`: who served more reviews/s at the scenario's load,
by what ratio and interval, and with what errors.

Throughput is always compared in successful reviews/s: a REST request may carry 100 reviews and a
stream event one, so a ratio of requests/s compares different units.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .repeats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED

#: Statistics a Sample may be summarised by.
STATISTICS = ("mean", "median", "p99")
#: Open-loop steps (fractions of capacity) whose latency the verdict compares, and their names.
LATENCY_LOADS = ((0.25, "¼"), (0.5, "½"), (0.75, "¾"))
#: A bootstrap over more values than this resamples a seeded subsample of this size (a p99 of
#: 20,000 events resampled 4,000 times would hold 80 M floats).
BOOTSTRAP_MAX_VALUES = 5000
#: The spare core of the N−1 rule: every N cores run N−1 workers.
SPARE_CORES = 1
#: A worker that keeps its core this busy at saturation is compute-bound (its core is the limit).
COMPUTE_BOUND_CPU = 90.0
#: Scaling with cores at or above this share of linear counts as linear.
LINEAR = 0.9
#: Overload is "kept" when the deployment still serves this share of its capacity.
KEPT_FRACTION = 0.9
#: Two reviews/s within this fraction of each other are a tie whatever their interval (an open
#: loop below both capacities serves exactly what it offers, in every window).
TIE = 0.01


def label(mode: str) -> str:
    """How people name a deployment (the article's pair keep their names)."""
    return {"rest": "REST"}.get(mode, mode)


# --------------------------------------------------------------------------------------------
# Samples and intervals


@dataclass(frozen=True)
class Sample:
    """A figure's raw material: its values (per-window throughputs, or request latencies) and the
    statistic that makes the figure of them."""

    values: tuple[float, ...]
    statistic: str = "mean"

    def __post_init__(self) -> None:
        if self.statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}, not {self.statistic!r}")

    @property
    def value(self) -> float | None:
        return statistic(self.values, self.statistic)

    def to_dict(self) -> dict[str, Any]:
        return {"statistic": self.statistic, "n": len(self.values), "value": self.value}


def sample(values: Sequence[float] | np.ndarray, stat: str = "mean") -> Sample:
    v = np.asarray(values, dtype=float)
    return Sample(tuple(float(x) for x in v[np.isfinite(v)]), stat)


def statistic(values: Sequence[float] | np.ndarray, stat: str) -> float | None:
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return None
    if stat == "mean":
        return float(v.mean())
    if stat == "median":
        return float(np.median(v))
    return float(np.percentile(v, 99, method="inverted_cdf"))   # as analysis.metrics does


def _resampled_stats(v: np.ndarray, stat: str, rng: np.random.Generator, resamples: int,
                     chunk: int = 250) -> np.ndarray:
    """The statistic of ``resamples`` bootstrap resamples of ``v`` (in chunks: bounded memory)."""
    out = np.empty(resamples)
    for lo in range(0, resamples, chunk):
        hi = min(resamples, lo + chunk)
        draw = v[rng.integers(0, v.size, size=(hi - lo, v.size))]
        out[lo:hi] = (draw.mean(axis=1) if stat == "mean" else np.median(draw, axis=1)
                      if stat == "median" else
                      np.percentile(draw, 99, axis=1, method="inverted_cdf"))
    return out


def ratio_ci(num: Sample, den: Sample, *, seed: int = BOOTSTRAP_SEED,
             resamples: int = BOOTSTRAP_RESAMPLES, level: float = 0.95
             ) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of ``num ÷ den``, each side resampled on its own (two
    independent measurements). Seeded: the same samples give the same interval. A side with one
    value contributes that value (no spread of its own); (None, None) when either side is empty,
    an open upper bound (None) when the denominator is 0 in more than the upper tail."""
    a, b = np.asarray(num.values, float), np.asarray(den.values, float)
    if a.size == 0 or b.size == 0:
        return None, None
    rng = np.random.default_rng(seed)
    a = a if a.size <= BOOTSTRAP_MAX_VALUES else rng.choice(a, BOOTSTRAP_MAX_VALUES, replace=False)
    b = b if b.size <= BOOTSTRAP_MAX_VALUES else rng.choice(b, BOOTSTRAP_MAX_VALUES, replace=False)
    sa = _resampled_stats(a, num.statistic, rng, resamples)
    sb = _resampled_stats(b, den.statistic, rng, resamples)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(sb > 0, sa / np.where(sb > 0, sb, 1.0), np.inf)
    tail = (1.0 - level) / 2 * 100
    # an order statistic, not an interpolation: an infinite ratio must not turn into NaN
    lo, hi = np.percentile(r, [tail, 100 - tail], method="inverted_cdf")
    # a denominator that is 0 in enough resamples leaves the interval open above (None)
    return (float(lo) if math.isfinite(lo) else None), (float(hi) if math.isfinite(hi) else None)


def mean_ci(s: Sample, *, seed: int = BOOTSTRAP_SEED, resamples: int = BOOTSTRAP_RESAMPLES,
            level: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of one Sample's statistic (the chart's band)."""
    v = np.asarray(s.values, float)
    if v.size == 0:
        return None, None
    if v.size == 1:
        return float(v[0]), float(v[0])
    rng = np.random.default_rng(seed)
    st = _resampled_stats(v, s.statistic, rng, resamples)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(st, [tail, 100 - tail])
    return float(lo), float(hi)


# --------------------------------------------------------------------------------------------
# What was measured of one deployment


@dataclass(frozen=True)
class Point:
    """One load level of one deployment.

    ``load``: offered load ÷ the deployment's own capacity. Open loop: the step's rate ÷ the
    saturated rate. Closed loop (batch-and-retry): the clients ÷ the clients whose queueing fills
    the client's deadline (timeout × capacity): at 1.5 every client would need 1.5× the
    capacity to be answered in time. The saturated phase is load 1 by definition.
    """

    phase: str                              # "open" | "saturated" | "overload"
    load: float
    offered_reviews_per_s: float | None     # open loop only
    reviews_per_s: Sample                   # successful reviews/s, one value per window
    latency_ms: Sample                      # open-loop latency of each ok request (p99)
    p50_ms: float | None
    p99_ms: float | None
    error_rate: float | None
    retry_amplification: float | None = None
    failed_by_kind: Mapping[str, int] = field(default_factory=dict)
    clients: int | None = None              # closed loop

    @property
    def served(self) -> float | None:
        return self.reviews_per_s.value

    def within(self, slo_p99_ms: float | None, max_error_rate: float | None) -> bool:
        """Met the SLO: ok requests, errors below ``max_error_rate`` (default 1 %), p99 within
        ``slo_p99_ms`` (no bound when None)."""
        max_err = 0.01 if max_error_rate is None else max_error_rate
        if self.error_rate is None or self.error_rate >= max_err or not self.latency_ms.values:
            return False
        return slo_p99_ms is None or (self.p99_ms is not None and self.p99_ms <= slo_p99_ms)


@dataclass(frozen=True)
class ModeFigures:
    """Everything ``make verdict`` measured of one deployment (service pinned to
    ``service_cpus`` cores, running ``workers`` workers)."""

    mode: str
    kind: str                               # registry kind: rest | stream | ...
    engine: str
    batch_size: int                         # reviews per client operation
    capacity_reviews_per_s: float           # saturated, closed loop
    saturated: Point
    steps: tuple[Point, ...]                # open loop, ascending load
    overload: tuple[Point, ...]             # batch-and-retry, ascending load
    service_cpus: int = 1
    workers: int | None = 1
    partitions: int | None = None           # stream: partitions of its request topic
    service_cpu: float | None = None        # % of one core at saturation
    broker_cpu: float | None = None         # % of one core at saturation (None: no broker)
    broker: str | None = None
    #: the most CPU that processes other than the service took on its cores in any phase (% of
    #: one core): a shared machine makes every figure of this deployment pessimistic
    others_cpu: float | None = None
    #: the service cores' busy % at saturation, whoever used them (the service, other
    #: processes, interrupts): a full core means the core, not the worker, was the limit
    core_busy: float | None = None

    def step_at(self, load: float, tol: float = 1e-6) -> Point | None:
        return next((p for p in self.steps if abs(p.load - load) <= tol), None)

    def overload_at(self, load: float, tol: float = 1e-6) -> Point | None:
        return next((p for p in self.overload if abs(p.load - load) <= tol), None)


@dataclass(frozen=True)
class SloCapacity:
    """The highest open-loop step within the SLO: what it served, and the step above it (the
    true figure lies between the two: the step grid's resolution)."""

    reviews_per_s: float | None             # served at the highest step within the SLO
    load: float | None                      # that step's load (÷ capacity)
    next_offered_reviews_per_s: float | None  # the offered rate of the step above (None: none)

    @property
    def bracket(self) -> tuple[float | None, float | None]:
        return self.reviews_per_s, self.next_offered_reviews_per_s


@dataclass(frozen=True)
class Scaling:
    """The model alone at the scenario's batch: one process on one core, then one process per
    core on all of them at once (the best of a few short tries each). Whether the computation
    scales with cores on this machine is what the plan's linear extrapolation rests on."""

    batch: int
    cores: int
    one_core_reviews_per_s: float
    all_cores_reviews_per_s: float

    @property
    def ratio(self) -> float | None:
        return (self.all_cores_reviews_per_s / self.one_core_reviews_per_s
                if self.one_core_reviews_per_s > 0 else None)

    @property
    def per_core(self) -> float | None:
        """The ratio ÷ the cores: 1.0 is linear scaling."""
        return self.ratio / self.cores if self.ratio is not None and self.cores else None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Scaling | None:
        try:
            return cls(int(d["batch"]), int(d["cores"]), float(d["one_core_reviews_per_s"]),
                       float(d["all_cores_reviews_per_s"]))
        except (TypeError, KeyError, ValueError):
            return None

    def sentence(self) -> str:
        return (f"the model alone at batch {self.batch} ran {self.all_cores_reviews_per_s:,.0f} "
                f"reviews/s on {self.cores} cores (one process per core) against "
                f"{self.one_core_reviews_per_s:,.0f} on one: {self.ratio:.2f}× for "
                f"{self.cores}× the cores ({self.per_core:.0%} of linear"
                + ("" if (self.per_core or 0) >= LINEAR else
                   ": below linear, so core counts extrapolated linearly are a floor") + ")")


def slo_capacity(m: ModeFigures, slo_p99_ms: float | None,
                 max_error_rate: float | None) -> SloCapacity:
    """The highest step that met the SLO (as analysis.metrics.max_sustainable picks it)."""
    good = [p for p in m.steps if p.within(slo_p99_ms, max_error_rate)]
    if not good:
        first = m.steps[0].offered_reviews_per_s if m.steps else None
        return SloCapacity(None, None, first)
    best = max(good, key=lambda p: p.load)
    above = [p for p in m.steps if p.load > best.load]
    nxt = min(above, key=lambda p: p.load).offered_reviews_per_s if above else None
    return SloCapacity(best.served, best.load, nxt)


# --------------------------------------------------------------------------------------------
# Regimes: the winner per load regime


@dataclass(frozen=True)
class Regime:
    """One load regime's verdict. ``ratio`` is the winner's margin over the runner-up (≥ 1: the
    winner is ``ratio`` times better, whichever way better points); ``ci95`` its interval;
    ``clear`` when the interval excludes 1. ``vs_first``: each mode's figure ÷ the first mode's."""

    key: str
    load: str
    metric: str
    unit: str
    better: str                              # "higher" | "lower"
    values: dict[str, float | None]
    winner: str | None
    ratio: float | None
    ci95: tuple[float | None, float | None]
    clear: bool
    interval: str                            # where the interval comes from
    vs_first: dict[str, float | None]
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci95"] = list(self.ci95)
        return {"load": d.pop("load"), "winner": d.pop("winner"), "ratio": d.pop("ratio"),
                "ci95": d.pop("ci95"), **d}


def _fmt(x: float | None, spec: str = "{:,.0f}") -> str:
    return "–" if x is None else spec.format(x)


def _pct(x: float | None) -> str:
    return _fmt(None if x is None else 100 * x, "{:.1f}")


def _margin(better: str, vals: dict[str, float | None], samples: dict[str, Sample | None],
            brackets: dict[str, tuple[float | None, float | None]] | None = None
            ) -> tuple[str | None, float | None, tuple[float | None, float | None], str | None]:
    """(winner, its margin over the runner-up, the margin's interval, the runner-up). Where more
    is better, a 0 loses outright (margin None); where less is, a 0 or None was not measured."""
    have = {m: v for m, v in vals.items()
            if v is not None and (v > 0 or (better == "higher" and v == 0))}
    order = sorted(have, key=lambda m: have[m], reverse=(better == "higher"))
    if not order or have[order[0]] <= 0:
        return None, None, (None, None), None
    win = order[0]
    if len(order) == 1:
        return win, None, (None, None), None
    run = order[1]
    if have[run] <= 0:
        return win, None, (None, None), run
    top, bottom = (win, run) if better == "higher" else (run, win)   # margin = top ÷ bottom
    ratio = have[top] / have[bottom]
    if brackets is not None:   # a step grid: the margin's bounds from each side's bracket
        (tlo, thi), (blo, bhi) = brackets[top], brackets[bottom]
        lo = tlo / bhi if tlo and bhi else None
        hi = thi / blo if thi and blo else None
        return win, ratio, (lo, hi), run
    st, sb = samples.get(top), samples.get(bottom)
    ci = ratio_ci(st, sb) if st is not None and sb is not None else (None, None)
    return win, ratio, ci, run


def _clear(ci: tuple[float | None, float | None]) -> bool:
    return ci[0] is not None and ci[0] > 1.0


def _vs_first(vals: dict[str, float | None], first: str) -> dict[str, float | None]:
    base = vals.get(first)
    return {m: (v / base if v is not None and base else None)
            for m, v in vals.items() if m != first}


def ci_text(ci: tuple[float | None, float | None] | Sequence[float | None]) -> str:
    """'1.20–1.45×', '≥ 1.20×' (no upper bound), '–' (none)."""
    lo, hi = (list(ci) + [None, None])[:2]
    if lo is None and hi is None:
        return "–"
    if hi is None:
        return f"≥ {lo:.2f}×"
    if lo is None:
        return f"≤ {hi:.2f}×"
    return f"{lo:.2f}–{hi:.2f}×"


def _regime(key: str, load: str, metric: str, unit: str, better: str, first: str,
            vals: dict[str, float | None], samples: dict[str, Sample | None], interval: str,
            describe: str, brackets=None) -> Regime:
    win, ratio, ci, run = _margin(better, vals, samples, brackets)
    outright = win is not None and run is not None and ratio is None
    clear = outright or _clear(ci)
    figures = ", ".join(f"{label(m)} {_fmt(v)} {unit}" for m, v in vals.items())
    if win is None:
        sentence = f"{load}: no deployment served anything measurable ({figures})."
    elif run is None:
        sentence = f"{load}: only {label(win)} was measured ({figures})."
    elif outright:
        sentence = (f"{load}, {describe}: {figures}; {label(win)} wins outright "
                    f"({label(run)} had none).")
    else:
        ci_txt = f"95 % interval {ci_text(ci)}"
        verdict = (f"{label(win)} wins by {ratio:.2f}× ({ci_txt})" if clear else
                   f"no clear winner: {label(win)} is ahead by {ratio:.2f}× but the {ci_txt} "
                   "includes 1")
        sentence = f"{load}, {describe}: {figures}; {verdict}."
    return Regime(key, load, metric, unit, better, vals, win, ratio, ci, clear,
                  interval, _vs_first(vals, first), sentence)


def regimes(figs: Sequence[ModeFigures], *, slo_p99_ms: float | None,
            max_error_rate: float | None) -> list[Regime]:
    """The verdict per load regime: latency at ¼, ½ and ¾ of each one's capacity (lower p99
    wins), the highest rate within the SLO and the saturated rate (more reviews/s wins), and
    successful reviews/s at each batch-and-retry overload (more wins)."""
    if not figs:
        return []
    first = figs[0].mode
    out: list[Regime] = []
    for load, name in LATENCY_LOADS:
        pts = {m.mode: m.step_at(load) for m in figs}
        vals = {k: (p.p99_ms if p else None) for k, p in pts.items()}
        samples = {k: (p.latency_ms if p else None) for k, p in pts.items()}
        out.append(_regime(f"latency_{name}", f"{name} of capacity", "latency_ms.p99",
                           "ms", "lower", first, vals, samples,
                           "bootstrap of the p99 over the step's requests",
                           f"p99 latency with each deployment at {name} of its own capacity"))
    slo = {m.mode: slo_capacity(m, slo_p99_ms, max_error_rate) for m in figs}
    by_mode = {m.mode: m for m in figs}
    out.append(_regime(
        "slo", "at the SLO", "slo_reviews_per_s", "reviews/s", "higher", first,
        # no step within the SLO is a rate of 0 within it, once there were steps
        {k: (s.reviews_per_s if s.reviews_per_s is not None or not by_mode[k].steps else 0.0)
         for k, s in slo.items()}, {}, "the open-loop step grid: each "
        "figure lies between its highest step within the SLO and the step above",
        "the highest open-loop rate with p99 ≤ "
        + (f"{slo_p99_ms:,.0f} ms" if slo_p99_ms else "any latency") + " and errors < "
        + f"{(0.01 if max_error_rate is None else max_error_rate):.1%}",
        brackets={k: s.bracket for k, s in slo.items()}))
    out.append(_regime("saturated", "saturated", "reviews_per_s", "reviews/s",
                       "higher", first, {m.mode: m.saturated.served for m in figs},
                       {m.mode: m.saturated.reviews_per_s for m in figs},
                       "bootstrap of the mean over time windows of one run",
                       "successful reviews/s with the deployment saturated"))
    loads = sorted({p.load for m in figs for p in m.overload})
    for load in loads:
        pts = {m.mode: m.overload_at(load) for m in figs}
        vals = {k: (p.served if p else None) for k, p in pts.items()}
        errs = "; ".join(f"{label(k)} {_pct(p.error_rate if p else None)} % failed, "
                         f"{_fmt(p.retry_amplification if p else None, '{:.2f}')} attempts per "
                         "request" for k, p in pts.items())
        out.append(_regime(
            f"overload_{load:g}x", f"{load:g}× capacity", "reviews_per_s", "reviews/s",
            "higher", first, vals, {k: (p.reviews_per_s if p else None) for k, p in pts.items()},
            "bootstrap of the mean over time windows of one run",
            f"the article's batch-and-retry load at {load:g}× each one's capacity ({errs}), "
            "successful reviews/s"))
    return out


# --------------------------------------------------------------------------------------------
# A capacity plan


@dataclass(frozen=True)
class ModePlan:
    mode: str
    kind: str
    per_worker_reviews_per_s: float | None  # one worker on one pinned core, within the SLO
    basis: str                              # what that rate is
    workers: int | None                     # uWSGI processes / stream workers
    service_cores: int | None               # workers + the N−1 rule's spare core
    broker_cores: int | None                # stream: the broker's CPU at that rate
    total_cores: int | None
    partitions: int | None                  # stream: of the request topic (≥ workers)
    knobs: dict[str, int]
    sentence: str


@dataclass(frozen=True)
class Plan:
    target_reviews_per_s: float
    slo_p99_ms: float | None
    modes: tuple[ModePlan, ...]
    cheapest: str | None
    assumptions: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"target_reviews_per_s": self.target_reviews_per_s,
                "slo_p99_ms": self.slo_p99_ms, "cheapest": self.cheapest,
                "modes": {p.mode: {k: v for k, v in asdict(p).items() if k != "mode"}
                          for p in self.modes},
                "assumptions": list(self.assumptions)}


def _knobs(kind: str, engine: str, workers: int, partitions: int) -> dict[str, int]:
    if kind == "rest":
        return {"uwsgi_processes": workers}
    if kind == "stream":
        return {f"{'faust' if engine == 'faust' else engine}_workers": workers,
                "partitions": partitions}
    return {"workers": workers}


def plan_mode(m: ModeFigures, target: float, slo_p99_ms: float | None,
              max_error_rate: float | None) -> ModePlan:
    """Cores and workers for ``target`` reviews/s: workers = ⌈target ÷ one worker's rate within
    the SLO⌉ (one worker per core, scaling linearly), plus the N−1 rule's spare core; a stream
    deployment adds the broker's cores at the CPU per review it was measured at."""
    s = slo_capacity(m, slo_p99_ms, max_error_rate)
    per_core_workers = max(1, m.workers or 1) / max(1, m.service_cpus)
    if s.reviews_per_s:
        rate = s.reviews_per_s / max(1, m.workers or 1)
        basis = (f"its highest open-loop step within the SLO ({s.load:g}× its capacity), one "
                 "worker on one pinned core")
    else:
        rate, basis = None, "no open-loop step met the SLO: no plan can promise it"
    if not rate or target <= 0:
        return ModePlan(m.mode, m.kind, rate, basis, None, None, None, None, None, {},
                        f"{label(m.mode)}: {basis}.")
    workers = max(1, math.ceil(target / rate - 1e-9))
    service = math.ceil(workers / per_core_workers) + SPARE_CORES
    broker = None
    if m.broker_cpu is not None and m.capacity_reviews_per_s > 0:
        cpu_s_per_review = m.broker_cpu / 100.0 / m.capacity_reviews_per_s
        broker = max(1, math.ceil(target * cpu_s_per_review - 1e-9))
    total = service + (broker or 0)
    partitions = max(workers, m.partitions or 0) if m.kind == "stream" else None
    knobs = _knobs(m.kind, m.engine, workers, partitions or workers)
    knob_txt = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in knobs.items())
    sentence = (f"{label(m.mode)}: {target:,.0f} reviews/s ÷ {rate:,.0f} per worker = "
                f"{workers} worker(s) ({knob_txt}) on {service} cores (N−1: {service} cores run "
                f"{service - SPARE_CORES} workers)"
                + (f", plus {broker} core(s) for the {m.broker or 'broker'} "
                   f"({m.broker_cpu:.0f} % of a core at {m.capacity_reviews_per_s:,.0f} "
                   "reviews/s, scaled to the target)" if broker else "")
                + f": {total} cores in all.")
    return ModePlan(m.mode, m.kind, rate, basis, workers, service, broker, total, partitions,
                    knobs, sentence)


PLAN_ASSUMPTIONS = (
    "Each worker was measured alone on one pinned core; the plan assumes throughput grows "
    "linearly with workers, one per core. More than one worker was not measured here (2 cores: "
    "the load generator and the broker need the second), so every figure past one worker is an "
    "extrapolation.",
    "The N−1 rule (the article's): N cores run N−1 workers, the spare core left to nginx and the "
    "uWSGI master (REST) or the Kafka client threads (stream) and the OS.",
    "A worker's rate is its highest open-loop step within the SLO, not its saturated rate: a "
    "service run at saturation has no latency bound.",
    "The broker's cores scale with the review rate at the CPU per review measured at saturation, "
    "single node, no replication; the load generator is not counted.",
)


def capacity_plan(figs: Sequence[ModeFigures], target_reviews_per_s: float,
                  slo_p99_ms: float | None, max_error_rate: float | None,
                  scaling: Scaling | None = None) -> Plan:
    plans = tuple(plan_mode(m, target_reviews_per_s, slo_p99_ms, max_error_rate) for m in figs)
    costed = [p for p in plans if p.total_cores]
    cheapest = min(costed, key=lambda p: p.total_cores).mode if costed else None
    measured = () if scaling is None or scaling.ratio is None else (
        f"Measured here for the computation alone: {scaling.sentence()}; the services' own "
        "scaling (connections, the broker, the network) was not.",)
    return Plan(target_reviews_per_s, slo_p99_ms, plans, cheapest, PLAN_ASSUMPTIONS + measured)


# --------------------------------------------------------------------------------------------
# The article's two rules, against the figures


@dataclass(frozen=True)
class Rule:
    rule: str
    finding: str           # supported | partly supported | not supported | not tested
    text: str
    figures: dict[str, Any]


RULE_STREAM = ("When the computation is independent and discrete, async predictions can become a "
               "stream")
RULE_N_MINUS_1 = "N−1 worker threads on N CPUs"


def _by_kind(figs: Sequence[ModeFigures], kind: str) -> ModeFigures | None:
    return next((m for m in figs if m.kind == kind), None)


def _kept(m: ModeFigures, p: Point) -> float | None:
    return p.served / m.capacity_reviews_per_s if p.served is not None and \
        m.capacity_reviews_per_s else None


def rule_stream(figs: Sequence[ModeFigures]) -> Rule:
    """The stream keeps serving past capacity without errors (the article's behaviour claim)
    and serves more than REST there (its throughput claim)."""
    rest, stream = _by_kind(figs, "rest"), _by_kind(figs, "stream")
    if rest is None or stream is None or not rest.overload or not stream.overload:
        return Rule(RULE_STREAM, "not tested", "needs a REST and a stream deployment measured "
                    "under the batch-and-retry overload.", {})
    shared = [p.load for p in stream.overload if rest.overload_at(p.load)]
    if not shared:
        return Rule(RULE_STREAM, "not tested", "REST and the stream were not overloaded at the "
                    "same multiple of their capacity.", {})
    load = max(shared)
    r, s = rest.overload_at(load), stream.overload_at(load)
    fig = {"load": load, "rest_kept": _kept(rest, r), "stream_kept": _kept(stream, s),
           "rest_error_rate": r.error_rate, "stream_error_rate": s.error_rate,
           "rest_retry_amplification": r.retry_amplification,
           "stream_retry_amplification": s.retry_amplification,
           "stream_over_rest_at_load": (s.served / r.served) if s.served and r.served else None,
           "stream_over_rest_saturated": stream.capacity_reviews_per_s
           / rest.capacity_reviews_per_s if rest.capacity_reviews_per_s else None}
    graceful = ((fig["stream_kept"] or 0) >= KEPT_FRACTION and (s.error_rate or 0) <= 0.001
                and ((fig["rest_kept"] or 0) < (fig["stream_kept"] or 0)
                     or (r.error_rate or 0) > (s.error_rate or 0)))
    more = (s.served or 0) > (r.served or 0)
    finding = ("supported" if graceful and more else "partly supported" if graceful or more
               else "not supported")
    text = (f"At {load:g}× capacity under batch-and-retry load the stream kept "
            f"{_pct(fig['stream_kept'])} % of its capacity with {_pct(s.error_rate)} % failed "
            f"and {_fmt(s.retry_amplification, '{:.2f}')} attempts per request; REST kept "
            f"{_pct(fig['rest_kept'])} % with {_pct(r.error_rate)} % failed and "
            f"{_fmt(r.retry_amplification, '{:.2f}')} attempts. "
            + ("The stream degrades gracefully, as the article says. " if graceful else
               "The stream did not degrade more gracefully than REST here. ")
            + ("In reviews/s REST served nothing there, the stream "
               f"{_fmt(s.served)}; at saturation the stream served "
               if not r.served else "In reviews/s the stream served "
               f"{_fmt(fig['stream_over_rest_at_load'], '{:.2f}')}× REST there and ")
            + f"{_fmt(fig['stream_over_rest_saturated'], '{:.2f}')}× REST"
            + (": past capacity it also serves more, the article's headline"
               + ("; below it REST serves more per core (the plan)." if
                  (fig["stream_over_rest_saturated"] or 0) < 1 else ".") if more else
               ": graceful overload, but not more throughput, on this model (a stream costs "
               "more CPU per review, so it needs more cores for the same rate: the plan)."))
    return Rule(RULE_STREAM, finding, text, fig)


def rule_n_minus_1(figs: Sequence[ModeFigures], scaling: Scaling | None = None) -> Rule:
    """One worker per core is the most a compute-bound worker can use; the −1 is the room
    left for what is not a worker."""
    if not figs:
        return Rule(RULE_N_MINUS_1, "not tested", "no deployment measured.", {})
    fig: dict[str, Any] = {m.mode: {"service_cpu": m.service_cpu, "broker_cpu": m.broker_cpu,
                                    "workers": m.workers, "service_cpus": m.service_cpus}
                           for m in figs}
    if scaling is not None:
        fig["scaling"] = {**asdict(scaling), "ratio": scaling.ratio, "per_core": scaling.per_core}
    def full(m: ModeFigures) -> bool:
        return (m.service_cpu or 0) >= COMPUTE_BOUND_CPU or (
            m.core_busy is not None and m.core_busy >= COMPUTE_BOUND_CPU * m.service_cpus)

    bound = [m for m in figs if full(m)]
    parts = [f"{label(m.mode)}'s {m.workers or '?'} worker(s) kept {_fmt(m.service_cpu)} % of "
             f"{m.service_cpus} pinned core(s) busy at saturation"
             + (f" (the core {_fmt(m.core_busy)} % busy in all: other processes took the rest)"
                if m.core_busy is not None and (m.service_cpu or 0) < COMPUTE_BOUND_CPU
                and full(m) else "") for m in figs]
    brokers = [f"{label(m.mode)}'s {m.broker or 'broker'} used {m.broker_cpu:.0f} % of another "
               "core" for m in figs if m.broker_cpu is not None]
    text = ("; ".join(parts) + ". "
            + ("The core was the limit, so more workers than cores add nothing: at most one "
               "worker per core. " if bound else
               "No worker filled its core: something other than the worker's CPU limited it, "
               "so the rule's premise (a compute-bound worker) did not hold here. ")
            + ("What is not a worker needs CPU too: " + "; ".join(brokers) + ". " if brokers
               else "")
            + (f"Scaling with cores, measured for the computation alone: {scaling.sentence()}. "
               if scaling is not None and scaling.ratio is not None else "")
            + "N−1 against N workers on N cores was not measured (on 2 cores the load generator "
              "and the broker need the second): the plan applies the rule, it does not test it.")
    finding = "partly supported" if bound else "not supported"
    return Rule(RULE_N_MINUS_1, finding, text, fig)


def rules(figs: Sequence[ModeFigures], scaling: Scaling | None = None) -> list[Rule]:
    return [rule_stream(figs), rule_n_minus_1(figs, scaling)]


# --------------------------------------------------------------------------------------------
# summary.json's verdict block and its words


def capacity_block(figs: Sequence[ModeFigures], slo_p99_ms: float | None,
                   max_error_rate: float | None) -> dict[str, Any]:
    """Per deployment: saturated and within-SLO capacity, latency at ¼ ½ ¾, overload figures,
    and every point the chart draws (offered ÷ capacity, served reviews/s and its interval)."""
    out: dict[str, Any] = {}
    for m in figs:
        s = slo_capacity(m, slo_p99_ms, max_error_rate)
        points = []
        for p in (*m.steps, m.saturated, *m.overload):
            lo, hi = mean_ci(p.reviews_per_s)
            points.append({"phase": p.phase, "load": p.load, "clients": p.clients,
                           "offered_reviews_per_s": p.offered_reviews_per_s,
                           "reviews_per_s": p.served, "ci95": [lo, hi],
                           "p50_ms": p.p50_ms, "p99_ms": p.p99_ms, "error_rate": p.error_rate,
                           "retry_amplification": p.retry_amplification,
                           "failed_by_kind": dict(p.failed_by_kind),
                           "within_slo": p.within(slo_p99_ms, max_error_rate)
                           if p.phase == "open" else None})
        out[m.mode] = {
            "kind": m.kind, "engine": m.engine, "batch_size": m.batch_size,
            "saturated_reviews_per_s": m.capacity_reviews_per_s,
            "slo_reviews_per_s": s.reviews_per_s, "slo_load": s.load,
            "slo_next_offered_reviews_per_s": s.next_offered_reviews_per_s,
            "latency_ms": {name: _step_latency(m.step_at(load)) for load, name in LATENCY_LOADS},
            "service_cpus": m.service_cpus, "workers": m.workers, "service_cpu": m.service_cpu,
            "broker": m.broker, "broker_cpu": m.broker_cpu, "others_cpu": m.others_cpu,
            "points": points}
    return out


def _step_latency(p: Point | None) -> dict[str, float | None]:
    return {"p50": p.p50_ms if p else None, "p99": p.p99_ms if p else None}


def verdict_block(figs: Sequence[ModeFigures], *, slo_p99_ms: float | None,
                  max_error_rate: float | None, target_reviews_per_s: float,
                  scaling: Scaling | None = None) -> dict[str, Any]:
    """summary.json's ``verdict``: regimes, capacity, plan and rules."""
    regs = regimes(figs, slo_p99_ms=slo_p99_ms, max_error_rate=max_error_rate)
    return {
        "modes": [m.mode for m in figs],
        "slo": {"p99_ms": slo_p99_ms, "max_error_rate": max_error_rate},
        "regimes": [r.to_dict() for r in regs],
        "capacity": capacity_block(figs, slo_p99_ms, max_error_rate),
        "plan": capacity_plan(figs, target_reviews_per_s, slo_p99_ms, max_error_rate,
                              scaling).to_dict(),
        "scaling": None if scaling is None else {**asdict(scaling), "ratio": scaling.ratio,
                                                 "per_core": scaling.per_core},
        "rules": [asdict(r) for r in rules(figs, scaling)],
        "caveats": caveats(figs),
    }


def caveats(figs: Sequence[ModeFigures]) -> list[str]:
    """What a reader must know before trusting the verdict."""
    from .metrics import CORE_NOISE_WARN

    out = []
    for m in figs:
        if m.others_cpu is not None and m.others_cpu > CORE_NOISE_WARN * m.service_cpus:
            out.append(f"{label(m.mode)}: other processes took up to {m.others_cpu:.0f} % of its "
                       "service core(s) during a phase (a shared machine): its figures are "
                       "pessimistic; re-run on a quiet machine before trusting a margin.")
        if (m.service_cpu is not None and m.service_cpu < COMPUTE_BOUND_CPU
                and (m.core_busy is None or m.core_busy < COMPUTE_BOUND_CPU * m.service_cpus)):
            out.append(f"{label(m.mode)}: its service used {m.service_cpu:.0f} % of its core at "
                       "saturation and its core was not full: something else (the driver, the "
                       "broker, the network) limited it, so its capacity is a floor.")
    return out


def verdict_lines(block: Mapping[str, Any]) -> list[str]:
    """The verdict in words: one sentence per regime, then the plan and the rules."""
    out = [r["sentence"] for r in block.get("regimes") or []]
    plan = block.get("plan") or {}
    if plan:
        out.append(f"Capacity plan for {plan['target_reviews_per_s']:,.0f} reviews/s"
                   + (f" at p99 ≤ {plan['slo_p99_ms']:,.0f} ms" if plan.get("slo_p99_ms") else "")
                   + ": " + " ".join(p["sentence"] for p in plan["modes"].values())
                   + (f" Cheapest: {label(plan['cheapest'])}." if plan.get("cheapest") else ""))
    for r in block.get("rules") or []:
        out.append(f"Rule '{r['rule']}': {r['finding']}. {r['text']}")
    return out + [f"Caveat: {c}" for c in block.get("caveats") or []]


# --------------------------------------------------------------------------------------------
# Every run's opening paragraph


def _dominant_kind(m: Mapping[str, Any]) -> str | None:
    kinds = m.get("failed_by_kind") or {}
    return max(kinds, key=kinds.get) if kinds else None


def _errors(name: str, m: Mapping[str, Any]) -> str:
    rate = m.get("error_rate")
    if not rate:
        return f"{label(name)} none"
    kind = _dominant_kind(m)
    return f"{label(name)} {100 * rate:.2f} %" + (f" (mostly {kind})" if kind else "")


def run_verdict(summary: Mapping[str, Any]) -> str | None:
    """One paragraph for any run: who served more successful reviews/s at the scenario's load,
    by what ratio and interval (``repeats``: over repeats, or over windows of the one run), with
    what errors; when throughput ties, who answered faster. None when fewer than two modes ran."""
    modes = {k: v for k, v in (summary.get("modes") or {}).items() if v}
    if not modes:
        return None
    names = list(modes)
    first = summary.get("baseline") or names[0]
    if first not in modes:
        return (f"Verdict: {label(first)}, the baseline, did not run; nothing to compare "
                f"({', '.join(label(n) for n in names)} ran).")
    if len(modes) < 2:
        return None
    rep = summary.get("repeats") or {}
    metrics = rep.get("metrics") or {}
    where = (f"{rep.get('n')} repeats" if rep.get("source") == "repeats"
             else f"{rep.get('windows')} windows of one run" if rep.get("windows") else None)
    sentences = []
    base = modes[first]
    for name in names:
        if name == first:
            continue
        m = modes[name]
        a, b = m.get("reviews_per_s"), base.get("reviews_per_s")
        if not a or not b:
            sentences.append(f"{label(name)} vs {label(first)}: one of them served nothing "
                             f"({_fmt(a)} vs {_fmt(b)} reviews/s).")
            continue
        r = a / b
        st = metrics.get(f"{name}/{first}.reviews_per_s") or {}
        lo, hi = (st.get("ci95") or [None, None])[:2]
        ci = (f", 95 % interval {_fmt(lo, '{:.2f}')}–{_fmt(hi, '{:.2f}')}× over {where}"
              if lo is not None and where else "")
        clear = lo is not None and hi is not None and (lo > 1 or hi < 1)
        win, lose = (name, first) if r > 1 else (first, name)
        if max(r, 1 / r) >= 1 + TIE and (clear or lo is None):
            head = (f"{label(win)} served more reviews/s: {_fmt(max(a, b))} against "
                    f"{label(lose)}'s {_fmt(min(a, b))}, {max(r, 1 / r):.2f}× "
                    f"({label(name)} ÷ {label(first)} {r:.2f}×{ci})")
        else:
            pa, pb = (m.get("latency_ms") or {}).get("p99"), (base.get("latency_ms") or {}).get("p99")
            faster = ""
            if pa and pb:
                fw = name if pa < pb else first
                faster = (f"; {label(fw)} answered faster (p99 {_fmt(min(pa, pb), '{:,.1f}')} "
                          f"against {_fmt(max(pa, pb), '{:,.1f}')} ms)")
            head = (f"{label(first)} and {label(name)} served the same reviews/s within noise "
                    f"({_fmt(b)} and {_fmt(a)}: {label(name)} ÷ {label(first)} {r:.2f}×{ci})"
                    f"{faster}")
        sentences.append(f"{head}; requests failed: {_errors(first, base)}, {_errors(name, m)}.")
    return (f"Verdict at {summary.get('scenario')}'s load: " + " ".join(sentences)
            + " (Throughput in successful reviews/s, never requests/s: requests may carry "
              "different numbers of reviews.)")


# --------------------------------------------------------------------------------------------
# The model-cost axis: the same verdict at several synthetic costs per input

#: How a cost on the axis is named, everywhere it is shown.
SYNTHETIC = "synthetic"
#: An outcome of one regime at one cost: a mode's name (a clear winner), TIED (the interval
#: holds 1) or None (not measured).
TIED = "tie"


def cost_text(cost_us: float) -> str:
    """'0 µs', '250 µs', '4,000 µs'."""
    return f"{cost_us:,.0f} µs" if float(cost_us).is_integer() else f"{cost_us:,.1f} µs"


def advantage(regime: Mapping[str, Any], num: str, den: str
              ) -> tuple[float | None, float | None, float | None]:
    """How many times better ``num`` did than ``den`` in one regime (> 1: ``num`` better,
    whichever way better points: reviews/s ÷ reviews/s, or the p99 of ``den`` ÷ that of ``num``),
    and the 95 % interval when the regime's margin is between these two. (value, lo, hi); an
    outright win is ``inf`` (``0`` for a loss), not measured is (None, None, None)."""
    vals = regime.get("values") or {}
    a, b = vals.get(num), vals.get(den)
    if a is None or b is None:
        return None, None, None
    higher = regime.get("better", "higher") == "higher"
    top, bottom = (a, b) if higher else (b, a)
    if bottom <= 0 and top <= 0:
        return None, None, None
    if bottom <= 0 or (not higher and top <= 0):
        # higher: den served nothing; lower: a p99 of 0 is unmeasured, like None above
        return (math.inf, None, None) if higher else (None, None, None)
    value = top / bottom
    lo, hi = (list(regime.get("ci95") or []) + [None, None])[:2]
    winner = regime.get("winner")
    if winner == num:
        return value, lo, hi
    if winner == den:       # the interval is of den's margin over num: invert it
        return value, (1 / hi if hi else None), (1 / lo if lo else None)
    return value, None, None


def outcome(regime: Mapping[str, Any] | None) -> str | None:
    """A regime's outcome at one cost: the clear winner, TIED, or None (nothing measured)."""
    if not regime or not regime.get("winner"):
        return None
    vals = [v for v in (regime.get("values") or {}).values() if v is not None]
    if len(vals) < 2:
        return None
    return regime["winner"] if regime.get("clear") else TIED


@dataclass(frozen=True)
class AxisRegime:
    """One load regime along the cost axis: its outcome at each cost, runs of equal outcomes,
    and each place the outcome changes (between two neighbouring costs: the grid's resolution)."""

    key: str
    load: str
    outcomes: tuple[tuple[float, str | None], ...]          # (cost, outcome), ascending cost
    changes: tuple[tuple[float, float, str | None, str | None], ...]  # (below, above, from, to)
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "load": self.load,
                "outcomes": [{"cost_us": c, "outcome": o} for c, o in self.outcomes],
                "changes": [{"between_us": [a, b], "from": f, "to": t}
                            for a, b, f, t in self.changes],
                "sentence": self.sentence}


def _who(o: str | None) -> str:
    return "not measured" if o is None else "no clear winner" if o == TIED else f"{label(o)} wins"


def _runs(outcomes: Sequence[tuple[float, str | None]]
          ) -> list[tuple[str | None, float, float]]:
    runs: list[tuple[str | None, float, float]] = []
    for c, o in outcomes:
        if runs and runs[-1][0] == o:
            runs[-1] = (o, runs[-1][1], c)
        else:
            runs.append((o, c, c))
    return runs


def axis_sentence(load: str, outcomes: Sequence[tuple[float, str | None]]) -> str:
    """'¼ of capacity: REST wins up to 250 µs, the stream from 1,000 µs (the winner changes
    between 250 and 1,000 µs)', or '...: REST wins at every cost (0–4,000 µs)'."""
    if not outcomes:
        return f"{load}: nothing measured."
    runs = _runs(outcomes)
    lo, hi = cost_text(outcomes[0][0]), cost_text(outcomes[-1][0])
    if len(runs) == 1:
        o = runs[0][0]
        what = ("not measured" if o is None else "no clear winner" if o == TIED
                else f"{label(o)} wins")
        return f"{load}: {what} at every cost ({lo}–{hi}, {SYNTHETIC})."
    parts = []
    for i, (o, first, last) in enumerate(runs):
        if i == 0:
            where = f"up to {cost_text(last)}" if first != last else f"at {cost_text(first)}"
        elif i == len(runs) - 1:   # from the last change on: as far as the axis was measured
            where = f"from {cost_text(first)}"
        else:
            where = (f"from {cost_text(first)} to {cost_text(last)}" if first != last
                     else f"at {cost_text(first)}")
        parts.append(f"{_who(o)} {where}")
    flips = [(a, b) for (a, oa), (b, ob) in zip(outcomes, outcomes[1:])
             if oa not in (None, TIED) and ob not in (None, TIED) and oa != ob]
    tail = "; the winner changes between " + ", and between ".join(
        f"{cost_text(a)} and {cost_text(b)}" for a, b in flips) if flips else ""
    return f"{load}: " + ", ".join(parts) + f" ({SYNTHETIC} cost per input{tail})."


def axis_regimes(axis: Sequence[Mapping[str, Any]]) -> list[AxisRegime]:
    """Per load regime, where its winner changes along the axis. ``axis``: one entry per cost,
    ``{"cost_us", "regimes": [the verdict's regime dicts]}``, in any order; a regime is followed
    in the order it first appears."""
    pts = sorted(axis, key=lambda a: float(a["cost_us"]))
    keys: dict[str, str] = {}
    for a in pts:
        for r in a.get("regimes") or []:
            keys.setdefault(r["key"], r["load"])
    out = []
    for key, load in keys.items():
        outs = tuple((float(a["cost_us"]),
                      outcome(next((r for r in a.get("regimes") or [] if r["key"] == key), None)))
                     for a in pts)
        changes = tuple((a, b, oa, ob) for (a, oa), (b, ob) in zip(outs, outs[1:]) if oa != ob)
        out.append(AxisRegime(key, load, outs, changes, axis_sentence(load, outs)))
    return out


def axis_pair(modes: Sequence[str], kinds: Mapping[str, str] | None = None
              ) -> tuple[str, str] | None:
    """(the baseline, the challenger) the axis chart compares: REST and a stream when both ran
    (by kind), else the first two modes; None with fewer than two."""
    kinds = kinds or {}
    rest = next((m for m in modes if kinds.get(m, m) == "rest"), None)
    stream = next((m for m in modes if kinds.get(m, m) == "stream"), None)
    if rest and stream:
        return rest, stream
    return (modes[0], modes[1]) if len(modes) >= 2 else None
