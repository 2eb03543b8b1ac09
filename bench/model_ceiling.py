"""The model's in-process ceiling for one mode, measured where and when that mode serves.

Efficiency is a deployment's reviews/s ÷ what the model alone does on the same cores. On a shared
2-core VM one 2 s measurement, taken minutes before a mode ran, moved 23 % between back-to-back
calls, and a REST run "beat" it (109 %). So the ceiling is taken right before and right after each
mode, on the service cores, at the batch size that mode calls the model with (REST: the reviews in
one POST; stream: ``take_max`` when micro-batched, else 1), as the best of several short tries.
The tries' spread, (max - min) / best, is the ceiling's own noise: analysis flags a deployment
that beats the best by more than it (analysis.metrics.ceiling_check).

The pure parts (``best``, ``noise``, ``ceiling_record``, ``mode_batch``) are unit-tested; the
measuring parts run the real model, pinned, as services.model.bench does.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from services.model.bench import on_each_cpu, pinned

#: Tries per side (before / after the mode) and seconds per try: ~2 × (3 × 0.5 s + a warm-up
#: call) per mode, so the yardstick costs a few seconds, not a phase of its own.
TRIES = 3
TRY_S = 0.5
#: Distinct reviews the tries cycle through (the scenario's own payload seed and split).
N_TEXTS = 2000


@dataclass(frozen=True)
class Try:
    """One short measurement: reviews per wall second (what a deployment could get) and per CPU
    second of the measuring thread(s) (well above the wall figure: the core was shared)."""

    when: str                      # "before" | "after" (the mode), or "" for make ceiling
    reviews_per_s: float
    reviews_per_cpu_s: float
    t_epoch: float


# --------------------------------------------------------------------------------------------
# Pure parts


def best(rates: Sequence[float]) -> float | None:
    """The ceiling: the fastest try. A slower try lost time to something else on the core; none
    can be faster than the model is."""
    return max(rates) if rates else None


def noise(rates: Sequence[float]) -> float | None:
    """(max - min) / max of the tries: how far the same measurement moved within minutes. None
    with fewer than two tries (no spread to speak of)."""
    if len(rates) < 2 or max(rates) <= 0:
        return None
    return (max(rates) - min(rates)) / max(rates)


def ceiling_record(tries: Sequence[Try], *, batch: int, cpus: Sequence[int],
                   try_s: float) -> dict[str, Any]:
    """meta.json ``modes.<mode>.ceiling``: every try, the best and the noise (docs/CONTRACTS.md)."""
    rates = [t.reviews_per_s for t in tries]
    b, n = best(rates), noise(rates)
    return {
        "batch": int(batch),
        "cpus": list(cpus),
        "try_s": try_s,
        "tries": [{**asdict(t), "reviews_per_s": round(t.reviews_per_s, 1),
                   "reviews_per_cpu_s": round(t.reviews_per_cpu_s, 1),
                   "t_epoch": round(t.t_epoch, 3)} for t in tries],
        "best": None if b is None else round(b, 1),
        "noise": None if n is None else round(n, 4),
        "method": "best of short tries of predict_batch at `batch` reviews per call, pinned to "
                  "`cpus` (one process per core), right before and right after the mode",
    }


def ceiling_inputs(payload: Any, n: int = N_TEXTS) -> list:
    """The inputs the ceiling is measured on: the scenario's own payload (IMDB reviews, synthetic
    texts or a user's file), repeated up to ``n``, so an efficiency compares like with like."""
    from loadgen.payloads import load_texts

    items = list(load_texts(payload))
    if not items:
        raise ValueError("the scenario's payload has no inputs to measure the model on")
    return [items[i % len(items)] for i in range(n)]


def mode_batch(mode: str, scenario: Any) -> int:
    """Reviews per model call as the deployment makes them (its kind says: one call per POST of
    ``workload.batch_size`` reviews, or ``take_max`` events when micro-batched, ...)."""
    from services import registry

    svc = scenario.service if isinstance(scenario.service, dict) else {}
    settings = registry.settings_for(mode, svc.get(mode))
    return registry.impl(mode).model_batch(settings, int(scenario.workload.batch_size))


# --------------------------------------------------------------------------------------------
# Measuring (the real model)


def _batches(texts: Sequence[str], batch: int) -> list[list[str]]:
    n = len(texts)
    return [[texts[(b * batch + j) % n] for j in range(batch)]
            for b in range(max(1, min(64, 4096 // batch)))]


def _tries(predict: Callable, batches: list[list[str]], n: int, seconds: float,
           when: str) -> list[Try]:
    """``n`` back-to-back tries of ``seconds`` each, after one warm-up call. A try ends with the
    first call that finishes past its deadline, and its rate counts whole calls only."""
    gc.collect()
    predict(batches[0])
    clock, cpu = time.perf_counter, time.thread_time
    out = []
    i = 0
    for _ in range(n):
        done = 0
        t0, c0 = clock(), cpu()
        while True:
            b = batches[i % len(batches)]
            predict(b)
            done += len(b)
            i += 1
            now = clock()
            if now - t0 >= seconds:
                break
        out.append(Try(when, done / (now - t0), done / max(cpu() - c0, 1e-9), time.time()))
    return out


def measure_tries(model: Any, texts: Sequence[str], cpus: Sequence[int], batch: int, *,
                  n: int = TRIES, seconds: float = TRY_S, when: str = "") -> list[Try]:
    """``n`` tries at ``batch`` on ``cpus``. Several cores: one forked process per core, all at
    once (one Python process computes on one core at a time), their k-th tries added."""
    cpus = sorted(set(int(c) for c in cpus))
    if not cpus or not texts:
        raise ValueError("measure_tries needs cpus and texts")
    batches = _batches(texts, batch)
    if len(cpus) == 1:
        with pinned(cpus):
            return _tries(model.predict_batch, batches, n, seconds, when)
    per_core = on_each_cpu(lambda: _tries(model.predict_batch, batches, n, seconds, when),
                           cpus, timeout=60 + 4 * n * seconds, what="ceiling measurement")
    return [Try(when, sum(c[k].reviews_per_s for c in per_core),
                sum(c[k].reviews_per_cpu_s for c in per_core),
                max(c[k].t_epoch for c in per_core)) for k in range(n)]


class ModeCeiling:
    """Measures one run's modes: ``before(mode)`` then ``after(mode, record)`` around each.

    Holds the loaded model and the texts, so the bench process measures between modes without
    loading the model again; ``say`` is the progress line.
    """

    def __init__(self, model: Any, scenario: Any, cpus: Sequence[int], say: Callable[[str], None],
                 *, tries: int = TRIES, try_s: float = TRY_S):
        self.model, self.scenario, self.say = model, scenario, say
        self.cpus = sorted(set(int(c) for c in cpus))
        self.tries, self.try_s = tries, try_s
        self.texts = ceiling_inputs(scenario.payload)

    def _measure(self, mode: str, batch: int, when: str) -> list[Try]:
        t = time.monotonic()
        out = measure_tries(self.model, self.texts, self.cpus, batch, n=self.tries,
                            seconds=self.try_s, when=when)
        rates = ", ".join(f"{x.reviews_per_s:,.0f}" for x in out)
        self.say(f"{mode}: model ceiling {when} the run, batch {batch} on cores {self.cpus}: "
                 f"{rates} reviews/s ({time.monotonic() - t:.1f} s)")
        return out

    def before(self, mode: str) -> dict[str, Any]:
        batch = mode_batch(mode, self.scenario)
        return ceiling_record(self._measure(mode, batch, "before"), batch=batch, cpus=self.cpus,
                              try_s=self.try_s)

    def after(self, mode: str, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` (from ``before``) with the after-tries added, best and noise over all."""
        batch = int(record["batch"])
        tries = [Try(**t) for t in record["tries"]] + self._measure(mode, batch, "after")
        out = ceiling_record(tries, batch=batch, cpus=self.cpus, try_s=self.try_s)
        self.say(f"{mode}: ceiling {out['best']:,.0f} reviews/s at batch {batch} "
                 f"(best of {len(tries)} tries, noise {100 * (out['noise'] or 0):.0f} %)")
        return out


def measure_batched(model: Any, texts: Sequence[str], cpus: Sequence[int],
                    batch_sizes: Sequence[int], *, tries: int = 4,
                    seconds: float = TRY_S) -> dict[str, Any]:
    """``make ceiling``'s yardstick: batch 1 and the best batch size, each the best of ``tries``
    short tries. Same keys as services.model.bench.measure_ceiling, plus every try and the
    noise of each batch size."""
    sizes = [1] + [int(b) for b in batch_sizes if int(b) > 1]
    by = {b: measure_tries(model, texts, cpus, b, n=tries, seconds=seconds) for b in sizes}
    wall = {b: best([t.reviews_per_s for t in ts]) or 0.0 for b, ts in by.items()}
    per_cpu = {b: best([t.reviews_per_cpu_s for t in ts]) or 0.0 for b, ts in by.items()}
    batched = {b: r for b, r in wall.items() if b > 1} or {1: wall[1]}
    top = max(batched, key=batched.__getitem__)
    return {
        "batch1_reviews_per_s": round(wall[1], 1),
        "batched_reviews_per_s": round(batched[top], 1),
        "best_batch": top,
        "cpus": sorted(set(int(c) for c in cpus)),
        "processes": len(set(cpus)),
        "seconds_per_try": seconds,
        "tries_per_batch": tries,
        "reviews_per_s_by_batch": {str(b): round(r, 1) for b, r in wall.items()},
        "reviews_per_cpu_s_by_batch": {str(b): round(r, 1) for b, r in per_cpu.items()},
        "noise_by_batch": {str(b): _r(noise([t.reviews_per_s for t in ts]), 4)
                           for b, ts in by.items()},
        "tries_by_batch": {str(b): [round(t.reviews_per_s, 1) for t in ts] for b, ts in by.items()},
    }


def _r(x: float | None, nd: int) -> float | None:
    return None if x is None else round(x, nd)
