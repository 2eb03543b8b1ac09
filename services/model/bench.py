"""In-process cost of the model: what a deployment is measured against.

* ``measure_cost``: µs per prediction, one thread pinned to ONE core (recorded in the artifact).
* ``measure_ceiling``: reviews/s at batch 1 and at the best of a few batch sizes, pinned to the
  given cores (the bench runs it before every run; meta.json ``ceiling``). With more than one
  core it runs one forked process per core at the same time and adds their rates, because one
  Python process computes on one core at a time; a deployment on N cores is measured against N.
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_BATCH_SIZES = (16, 64, 256, 1000)


@contextmanager
def pinned(cpus: Sequence[int]) -> Iterator[None]:
    """Pin the calling thread to ``cpus`` for the block; the previous affinity is restored after."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def measure_cost(
    model: Any,
    texts: Sequence[str],
    *,
    core: int,
    n_single: int = 2000,
    batch_size: int = 256,
    n_batches: int = 40,
) -> dict[str, Any]:
    """µs per prediction on one core: median of single-review calls and of batched calls (per review).

    Single: ``n_single`` distinct reviews (cycled if fewer), one per ``predict_batch`` call. Batched:
    ``n_batches`` calls of ``batch_size`` reviews, each call's time divided by its size. 50 single
    and 2 batched calls run first as warm-up. The headline figures are the CPU time of this thread
    (``time.thread_time_ns``), so another process sharing the core does not inflate them (a batched
    call is longer than a scheduler slice, so wall time would be hit far more than single calls);
    the wall-clock medians are recorded alongside, with their ratio (~1 on an idle core).
    """
    if not texts:
        raise ValueError("measure_cost needs at least one text")
    n = len(texts)
    predict = model.predict_batch
    cpu, wall = time.thread_time_ns, time.perf_counter_ns
    with pinned([core]):
        gc.collect()
        for i in range(50):
            predict([texts[i % n]])
        single_cpu, single_wall = [], []
        for i in range(n_single):
            one = [texts[i % n]]
            c0, w0 = cpu(), wall()
            predict(one)
            single_wall.append((wall() - w0) / 1e3)
            single_cpu.append((cpu() - c0) / 1e3)
        batches = [[texts[(b * batch_size + j) % n] for j in range(batch_size)] for b in range(n_batches)]
        for b in batches[:2]:
            predict(b)
        batch_cpu, batch_wall = [], []
        for b in batches:
            c0, w0 = cpu(), wall()
            predict(b)
            batch_wall.append((wall() - w0) / 1e3 / batch_size)
            batch_cpu.append((cpu() - c0) / 1e3 / batch_size)
    med = statistics.median
    return {
        "batch1_median": round(med(single_cpu), 2),
        "batch1_p90": round(statistics.quantiles(single_cpu, n=10)[-1], 2),
        "batched_median": round(med(batch_cpu), 2),
        "batched_batch_size": batch_size,
        "wall_batch1_median": round(med(single_wall), 2),
        "wall_batched_median": round(med(batch_wall), 2),
        "wall_over_cpu": round(sum(single_wall + batch_wall) / sum(single_cpu + batch_cpu), 3),
        "n_single_calls": n_single,
        "n_batched_calls": n_batches,
        "core": core,
        "method": "thread CPU time (wall alongside) around predict_batch, one thread pinned to `core`",
    }


def _rate(predict, texts: Sequence[str], batch: int, seconds: float) -> tuple[float, float]:
    """(reviews per wall second, reviews per CPU second of this thread) over ``seconds``."""
    n = len(texts)
    batches = [[texts[(b * batch + j) % n] for j in range(batch)] for b in range(max(1, min(64, 4096 // batch)))]
    predict(batches[0])  # warm-up
    done = 0
    i = 0
    clock, cpu = time.perf_counter, time.thread_time
    t0, c0 = clock(), cpu()
    deadline = t0 + seconds
    while True:
        predict(batches[i % len(batches)])
        done += batch
        i += 1
        now = clock()
        if now >= deadline:
            return done / (now - t0), done / max(cpu() - c0, 1e-9)


def _rates(model: Any, texts: Sequence[str], sizes: Sequence[int], seconds: float) -> dict[int, tuple[float, float]]:
    gc.collect()
    return {b: _rate(model.predict_batch, texts, b, seconds) for b in sizes}


def measure_ceiling(
    model: Any,
    texts: Sequence[str],
    cpus: Sequence[int],
    seconds: float = 2.0,
    *,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
) -> dict[str, Any]:
    """In-process throughput of ``model`` on ``cpus``: batch 1 and the best of ``batch_sizes``.

    Each setting runs for ``seconds`` (so the call takes about ``seconds * (1 + len(batch_sizes))``).
    One core: measured in this thread, pinned, affinity restored afterwards. Several cores: one
    forked process per core, pinned to it, all at once; their rates are added.
    """
    cpus = sorted(set(int(c) for c in cpus))
    if not cpus:
        raise ValueError("measure_ceiling needs at least one cpu")
    if not texts:
        raise ValueError("measure_ceiling needs at least one text")
    sizes = [1] + [int(b) for b in batch_sizes if int(b) > 1]
    if len(cpus) == 1:
        with pinned(cpus):
            rates = _rates(model, texts, sizes, seconds)
    else:
        rates = _forked_rates(model, texts, cpus, sizes, seconds)
    batched = {b: r for b, r in rates.items() if b > 1} or {1: rates[1]}
    best = max(batched, key=lambda b: batched[b][0])
    return {
        "batch1_reviews_per_s": round(rates[1][0], 1),
        "batched_reviews_per_s": round(batched[best][0], 1),
        "best_batch": best,
        "cpus": cpus,
        "processes": len(cpus),
        "seconds_per_setting": seconds,
        "reviews_per_s_by_batch": {str(b): round(r[0], 1) for b, r in rates.items()},
        # Reviews per second of CPU actually given to the measuring thread(s): well above the wall
        # figures means the cores were shared with something else during the measurement.
        "reviews_per_cpu_s_by_batch": {str(b): round(r[1], 1) for b, r in rates.items()},
    }


def _forked_rates(
    model: Any, texts: Sequence[str], cpus: list[int], sizes: list[int], seconds: float
) -> dict[int, tuple[float, float]]:
    results = on_each_cpu(lambda: _rates(model, texts, sizes, seconds), cpus,
                          timeout=120 + seconds * len(sizes) * 2, what="measure_ceiling")
    return {b: (sum(r[b][0] for r in results), sum(r[b][1] for r in results)) for b in sizes}


def on_each_cpu(fn: Callable[[], T], cpus: Sequence[int], *, timeout: float,
                what: str = "measurement") -> list[T]:
    """``fn()`` in one forked child per core, each pinned to its core and started together (a
    barrier), so a multi-core service's ceiling is measured on all its cores at once. Children
    inherit the loaded model (fork: nothing is pickled in); results come back in no set order.
    A child that fails is reported, never left hanging."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(len(cpus)), ctx.Queue()

    def child(cpu: int) -> None:
        try:
            os.sched_setaffinity(0, {cpu})
            barrier.wait(timeout=60)
            out.put((cpu, fn(), None))
        except BaseException as exc:  # report, never hang the parent
            out.put((cpu, None, f"{type(exc).__name__}: {exc}"))

    procs = [ctx.Process(target=child, args=(c,), daemon=True) for c in cpus]
    for p in procs:
        p.start()
    try:
        got = [out.get(timeout=timeout) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
    errors = [f"cpu {c}: {e}" for c, _, e in got if e]
    if errors:
        raise RuntimeError(f"{what} failed in a worker: " + "; ".join(errors))
    return [r for _, r, _ in got]
