"""``make ceiling``: each serving variant's saturated throughput against the model's own ceiling.

For each variant (REST one review per POST, REST N reviews per POST, the stream's default engine
one model call per event and micro-batched, and the same two stream shapes on the lean engine, so
that the default engine's own cost shows against streaming's) this

1. deploys it once (``services.launcher.deploy``: service pinned to the service cores, embedded
   broker on the driver's cores, exactly as ``bench run`` does),
2. drives it **saturated**: a closed loop with enough clients that the service never waits for
   work (warm-up, then a measured window), with the real driver subprocess
   (``python -m loadgen drive ...``) and the CPU sampler of ``bench run``,
3. drives it again, **open loop at half** the saturated rate (Poisson), for the latency,

and writes ``results/<UTC stamp>-ceiling/``: ``meta.json``, ``summary.json``, ``table.txt``,
``charts/ceiling.png`` and, per variant and phase, the scenario YAML, ``requests.parquet``,
``driver.json``, ``cpu.csv`` and logs. The yardstick is the in-process batched ceiling of the
model measured in the same run on the service's cores (``bench.run.measure_ceiling``):

* efficiency = reviews/s ÷ batched ceiling,
* overhead (µs/review) = 1e6 / reviews/s − 1e6 / batched ceiling: what each review costs on top of
  the model's batched cost (transport, parsing, framework),
* service CPU = mean CPU % of the service's processes in the saturated window (100 = one core);
  below 95 % the service was not the bottleneck: the driver or broker (or another process on the
  service core) was, and the run says so.

The targets (docs/ceiling.md) are printed next to the measured figures, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from bench import meta as metamod
from bench.cpu import CoreSampler, CpuSampler
from bench.progress import Progress
from bench.run import (RESULTS, PhaseFailed, Placement, driver_argv, measure_ceiling, t0_of,
                       new_run_dir)
from services import procs, registry
from services.procs import LaunchError, Supervisor
from services.stream.settings import StreamSettings

#: Below this mean service CPU % in the saturated window, the service was not what limited it.
SERVICE_BOUND_CPU = 95.0

VARIANT_NAMES = ("rest/batch1", "rest/batchN", "stream/event", "stream/batchN", "stream/batchN-eos",
                 "stream-lean/event", "stream-lean/batchN")
#: What serves a variant (summary.json ``engine``) is its deployment kind's to say
#: (services/registry.py ``Kind.engine``).


@dataclass(frozen=True)
class Phase:
    warmup_s: float
    duration_s: float
    drain_s: float

    @property
    def total_s(self) -> float:
        return self.warmup_s + self.duration_s + self.drain_s


@dataclass(frozen=True)
class Variant:
    """One way of serving: a mode, its service settings, and how to load it."""

    name: str                       # key in summary.json (one of VARIANT_NAMES)
    mode: str                       # rest | stream
    service: Mapping[str, Any]      # overrides for RestSettings / StreamSettings
    sat_batch: int                  # reviews per operation in the saturated (closed-loop) phase
    sat_clients: int                # closed-loop clients (think 0) in the saturated phase
    half_batch: int                 # reviews per operation in the half-load (open-loop) phase
    label: str = ""                 # what N is, for people (e.g. "rest/batch100")
    note: str = ""

    @property
    def engine(self) -> str:
        return registry.impl(self.mode).engine(registry.settings_for(self.mode, self.service))

    @property
    def in_flight(self) -> int:
        """Reviews outstanding at saturation (clients × batch)."""
        return self.sat_batch * self.sat_clients


def default_variants(rest_batch: int = 100, take_max: int = 256,
                     stream_batch: dict | None = None,
                     lean_batch: dict | None = None) -> list[Variant]:
    """The four variants of issue 9, with loads that keep a 1-core service busy on this machine.

    Stream loads are closed-loop clients that each produce ``sat_batch`` single-review events and
    wait for all their answers (the driver's closed loop is O(clients) per turn, so few clients
    with many events each keep its core free for the broker); the service still sees one event
    per review. At half load every stream variant gets single events, Poisson.
    """
    return [
        Variant("rest/batch1", "rest", {}, sat_batch=1, sat_clients=8, half_batch=1,
                label="rest/batch1", note="one review per POST, 1 worker process"),
        Variant("rest/batchN", "rest", {}, sat_batch=rest_batch, sat_clients=4,
                half_batch=rest_batch, label=f"rest/batch{rest_batch}",
                note=f"{rest_batch} reviews per POST, 1 worker process"),
        Variant("stream/event", "stream", {"shape": "event"}, sat_batch=16, sat_clients=8,
                half_batch=1, label="stream/event", note="one model call per event"),
        Variant("stream/batchN", "stream",
                {"shape": "batch", "take_max": take_max, **(stream_batch or {})},
                sat_batch=64, sat_clients=16, half_batch=1, label=f"stream/take{take_max}",
                note=f"up to {take_max} events per model call (take_mode "
                     f"{(stream_batch or {}).get('take_mode', StreamSettings.take_mode)})"),
        # the same micro-batched worker under exactly-once (transactional producer,
        # offsets committed inside the transaction): its cost against the variant above
        Variant("stream/batchN-eos", "stream",
                {"shape": "batch", "take_max": take_max, **(stream_batch or {}),
                 "processing_guarantee": "exactly_once"},
                sat_batch=64, sat_clients=16, half_batch=1, label=f"stream/take{take_max}-eos",
                note=f"stream/take{take_max} with processing_guarantee exactly_once"),
        # the same shapes and loads on the lean engine (a plain consumer loop, same wire format):
        # the gap to the two variants of the default engine above is that engine's own cost
        Variant("stream-lean/event", "stream", {"engine": "lean", "shape": "event"},
                sat_batch=16, sat_clients=8, half_batch=1, label="stream-lean/event",
                note="lean engine, one model call per event, one commit per fetch"),
        Variant("stream-lean/batchN", "stream",
                {"engine": "lean", "shape": "batch", "take_max": take_max, **(lean_batch or {})},
                sat_batch=64, sat_clients=16, half_batch=1, label=f"stream-lean/batch{take_max}",
                note=f"lean engine ({(lean_batch or {}).get('lean_client', StreamSettings.lean_client)}"
                     f"), up to {take_max} records per fetch and model call"),
    ]


@dataclass
class Options:
    results: Path = RESULTS
    placement: Placement = field(default_factory=Placement.default)
    variants: list[Variant] = field(default_factory=default_variants)
    saturated: Phase = Phase(warmup_s=3.0, duration_s=7.0, drain_s=3.0)
    half: Phase = Phase(warmup_s=2.0, duration_s=6.0, drain_s=3.0)
    half_fraction: float = 0.5
    chart: bool = True
    quiet: bool = False
    seed: int = 1


# ---------------------------------------------------------------------------------------------
# Pure parts: figures, summary, targets (unit-tested without a stack)
# ---------------------------------------------------------------------------------------------
def efficiency(reviews_per_s: float | None, batched_ceiling: float | None) -> float | None:
    """reviews/s ÷ the batched in-process ceiling of the same run."""
    if reviews_per_s is None or not batched_ceiling or batched_ceiling <= 0:
        return None
    return reviews_per_s / batched_ceiling


def overhead_us(reviews_per_s: float | None, batched_ceiling: float | None) -> float | None:
    """µs per review beyond the model's batched cost: 1e6/reviews_per_s − 1e6/ceiling."""
    if not reviews_per_s or reviews_per_s <= 0 or not batched_ceiling or batched_ceiling <= 0:
        return None
    return 1e6 / reviews_per_s - 1e6 / batched_ceiling


def per_cpu_second(reviews_per_s: float | None, service_cpu: float | None,
                   ceiling_per_cpu_s: float | None) -> dict[str, float | None]:
    """The same figures per second of CPU the service actually got (a shared core gives less
    than a whole one): reviews per service-CPU-second against the ceiling's reviews per
    CPU-second of its measuring thread. Robust to other work on the machine; an extra."""
    rate = (reviews_per_s / (service_cpu / 100.0)
            if reviews_per_s and service_cpu and service_cpu > 0 else None)
    return {"reviews_per_cpu_s": _round(rate, 1),
            "ceiling_reviews_per_cpu_s": _round(ceiling_per_cpu_s, 1),
            "efficiency": _round(efficiency(rate, ceiling_per_cpu_s), 4),
            "overhead_us_per_review": _round(overhead_us(rate, ceiling_per_cpu_s), 1)}


def variant_summary(name: str, *, reviews_per_s: float | None, p50_ms: float | None,
                    p99_ms: float | None, service_cpu: float | None,
                    batched_ceiling: float | None, extra: Mapping[str, Any] | None = None,
                    engine: str | None = None) -> dict:
    """One entry of summary.json ``variants`` (the contract's keys first, then extras).
    ``engine``: what served it; by default the one the name implies."""
    service_bound = None if service_cpu is None else service_cpu >= SERVICE_BOUND_CPU
    out = {
        "reviews_per_s": _round(reviews_per_s, 1),
        "efficiency": _round(efficiency(reviews_per_s, batched_ceiling), 4),
        "overhead_us_per_review": _round(overhead_us(reviews_per_s, batched_ceiling), 1),
        "latency_ms": {"p50": _round(p50_ms, 3), "p99": _round(p99_ms, 3)},
        "service_cpu": _round(service_cpu, 1),
        # False = the service core was not saturated: the driver or broker limited the run
        "service_bound": service_bound,
        "bottleneck": (None if service_bound is None
                       else "service" if service_bound else "driver_or_broker"),
        "engine": engine or engine_of(name),
    }
    out.update(extra or {})
    return out


def engine_of(name: str) -> str:
    """The engine a variant's name implies: the registered deployment its prefix names
    (``stream-lean/batchN`` -> the ``stream-lean`` deployment's engine)."""
    dep = name.split("/")[0]
    return registry.impl(dep).engine(registry.settings_for(dep, {}))


def _round(x: float | None, nd: int) -> float | None:
    if x is None:
        return None
    x = float(x)
    return round(x, nd) if math.isfinite(x) else None


#: (variant, dotted metric, "<=" | ">=", target). Printed next to the measure; never asserted.
TARGETS: tuple[tuple[str, str, str, float], ...] = (
    ("rest/batchN", "efficiency", ">=", 0.95),
    ("stream/batchN", "efficiency", ">=", 0.85),
    ("stream-lean/batchN", "efficiency", ">=", 0.85),
    ("stream-lean/batchN", "overhead_us_per_review", "<=", 100.0),
    ("rest/batch1", "overhead_us_per_review", "<=", 400.0),
    ("stream/event", "overhead_us_per_review", "<=", 400.0),
    ("stream/event", "latency_ms.p50", "<=", 15.0),
    ("stream/event", "latency_ms.p99", "<=", 40.0),
    ("rest/batch1", "latency_ms.p50", "<=", 3.0),
)


def _get(d: Mapping[str, Any], dotted: str) -> Any:
    for k in dotted.split("."):
        if not isinstance(d, Mapping) or k not in d:
            return None
        d = d[k]
    return d


def evaluate_targets(variants: Mapping[str, Mapping[str, Any]],
                     targets: Sequence[tuple[str, str, str, float]] = TARGETS) -> list[dict]:
    """Each target with its measured value and met True/False (None = not measured)."""
    out = []
    for name, metric, op, target in targets:
        v = _get(variants.get(name, {}), metric)
        met = None if v is None else (v >= target if op == ">=" else v <= target)
        out.append({"variant": name, "metric": metric, "op": op, "target": target,
                    "value": v, "met": met})
    return out


def build_summary(ceiling: Mapping[str, Any], variants: Mapping[str, dict], *,
                  run_id: str | None = None, complete: bool = True) -> dict:
    """summary.json: ``{"ceiling": {...}, "variants": {...}}`` plus targets and flags."""
    ceil = {"batched_reviews_per_s": ceiling.get("batched_reviews_per_s"),
            "batch1_reviews_per_s": ceiling.get("batch1_reviews_per_s"),
            "best_batch": ceiling.get("best_batch")}
    for k in ("cpus", "reviews_per_s_by_batch", "reviews_per_cpu_s_by_batch"):
        if k in ceiling:
            ceil[k] = ceiling[k]
    not_bound = sorted(n for n, v in variants.items() if v.get("service_bound") is False)
    return {
        "run_id": run_id,
        "complete": bool(complete),
        "ceiling": ceil,
        "variants": {n: dict(v) for n, v in variants.items()},
        "targets": evaluate_targets(variants),
        # variants whose service core was not saturated (driver or broker was the bottleneck)
        "not_service_bound": not_bound,
    }


def validate_summary(s: Mapping[str, Any]) -> None:
    """Raise ValueError naming the first thing of summary.json that breaks the schema."""
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ValueError(f"summary.json: {msg}")

    def num(x: Any, *, allow_none: bool) -> bool:
        if x is None:
            return allow_none
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    need(isinstance(s, Mapping), "must be a mapping")
    need(isinstance(s.get("ceiling"), Mapping), "lacks 'ceiling'")
    c = s["ceiling"]
    for k in ("batched_reviews_per_s", "batch1_reviews_per_s"):
        need(num(c.get(k), allow_none=False) and c[k] > 0, f"ceiling.{k} must be a number > 0")
    need(isinstance(c.get("best_batch"), int) and c["best_batch"] >= 1,
         "ceiling.best_batch must be an int >= 1")
    need(isinstance(s.get("variants"), Mapping) and s["variants"], "lacks 'variants'")
    for name, v in s["variants"].items():
        need(name in VARIANT_NAMES, f"unknown variant {name!r} (valid: {VARIANT_NAMES})")
        need(v.get("engine") == engine_of(name),
             f"variants.{name}.engine must name what served it ({engine_of(name)!r})")
        failed = bool(v.get("error"))
        for k in ("reviews_per_s", "efficiency", "overhead_us_per_review", "service_cpu"):
            need(k in v and num(v[k], allow_none=failed or k == "overhead_us_per_review"),
                 f"variants.{name}.{k} must be a number")
        lat = v.get("latency_ms")
        need(isinstance(lat, Mapping), f"variants.{name}.latency_ms must be a mapping")
        for k in ("p50", "p99"):
            need(k in lat and num(lat[k], allow_none=True), f"variants.{name}.latency_ms.{k}")
        if not failed and v["reviews_per_s"]:
            eff = v["reviews_per_s"] / c["batched_reviews_per_s"]
            need(v["efficiency"] is not None and abs(v["efficiency"] - eff) <= 1e-3 * max(1, eff),
                 f"variants.{name}.efficiency is not reviews_per_s / ceiling.batched_reviews_per_s")


# ---------------------------------------------------------------------------------------------
# Scenarios of a variant's phases (YAML files in the run folder, read by the real driver)
# ---------------------------------------------------------------------------------------------
def _phase_scenario(v: Variant, phase: Phase, *, suffix: str, description: str, batch: int,
                    arrival: dict, timeout_s: float, seed: int) -> dict:
    """What both phases of a variant share: its mode, payload, timing and service settings."""
    return {
        "name": f"ceiling-{v.name.replace('/', '-')}-{suffix}",
        "description": f"{v.label}: {description}",
        "modes": [v.mode],
        "payload": {"source": "imdb", "split": "test", "sample": 2000, "seed": seed},
        "workload": {"batch_size": batch},
        "arrival": arrival,
        "timing": {"warmup_s": phase.warmup_s, "duration_s": phase.duration_s,
                   "drain_s": phase.drain_s},
        "client": {"timeout_s": timeout_s, "retry": {"policy": "none"}},
        "service": {v.mode: dict(v.service)},
    }


def saturated_scenario(v: Variant, phase: Phase, seed: int = 1) -> dict:
    return _phase_scenario(
        v, phase, suffix="saturated", batch=v.sat_batch, timeout_s=10, seed=seed,
        description=f"closed loop, {v.sat_clients} clients x {v.sat_batch} reviews, no think "
                    "time (saturation)",
        arrival={"closed": {"clients": v.sat_clients, "think_s": 0}})


def half_scenario(v: Variant, phase: Phase, reviews_per_s: float, seed: int = 1) -> dict:
    """Open loop (Poisson) at ``reviews_per_s`` (half the saturated rate)."""
    ops = max(0.5, reviews_per_s / v.half_batch)
    return _phase_scenario(
        v, phase, suffix="half", batch=v.half_batch, timeout_s=5, seed=seed,
        description=f"open loop, Poisson, {ops:.1f} ops/s of {v.half_batch} review(s) = half "
                    "the saturated rate",
        arrival={"open": {"process": "poisson", "seed": seed,
                          "rate": {"shape": "constant", "ops_per_s": round(ops, 3)},
                          "max_in_flight": 512, "max_lateness_s": 1.0}})


def write_scenario(doc: dict, path: Path):
    """Write the YAML and load it back through the validator (so a typo fails here)."""
    from loadgen.scenario import load_scenario

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_scenario(path)


# ---------------------------------------------------------------------------------------------
# The service cores' total busy time (to tell "the driver starved it" from "someone else took
# it"): bench.cpu.CoreSampler, the one bench run records in each mode's cores.csv too
# ---------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------
# Driving one phase (as bench.run.run_mode drives a mode, on a deployment already up)
# ---------------------------------------------------------------------------------------------
def drive_phase(dep, sup: Supervisor, scenario, out: Path, run_id: str, placement: Placement,
                progress: Progress, label: str) -> dict:
    """Run the real driver subprocess for ``scenario`` against ``dep``; sample CPU meanwhile.

    Returns the phase's record: driver.json, t0, CPU means per role in the measured window,
    the service cores' busy % there, and the request table's metrics (analysis.metrics).
    """
    mode = dep.mode
    out.mkdir(parents=True, exist_ok=True)
    drv = sup.start(f"driver-{out.name}", driver_argv(dep, scenario.source, out, run_id),
                    cpus=placement.driver)
    groups = {"service": dep.service_pids, "driver": [drv.pid]}
    if dep.broker.get("pid"):
        groups["broker"] = [dep.broker["pid"]]
    sampler = CpuSampler(groups, out / "cpu.csv").start()
    cores = CoreSampler(placement.service or ()).start()
    total = scenario.timing.end_s
    final = None
    try:
        final = progress.follow_driver(label, drv, total_s=total, limit_s=total + 60)
    finally:
        t0 = t0_of(out)
        sampler.stop(t0)
        cores.stop()
    driver_json = out / "driver.json"
    if final is None or not driver_json.exists():
        raise PhaseFailed(f"{label}: drive", "the driver ended without its final line and "
                          "driver.json", drv.log_path)
    driver = json.loads(driver_json.read_text())
    t0 = driver.get("t0_epoch") or t0
    rec = analyse_phase(out, mode, scenario.timing.warmup_s, scenario.timing.duration_s)
    rec["t0_epoch"] = t0
    rec["driver"] = driver
    rec["complete"] = bool(driver.get("complete", False))
    rec["valid"] = driver.get("valid")
    w0, w1 = t0 + scenario.timing.warmup_s, t0 + scenario.timing.warmup_s + scenario.timing.duration_s
    busy = cores.busy_percent(w0, w1) if t0 else None
    rec["service_core_busy"] = _round(busy, 1)
    svc = rec["cpu"].get("service")
    parts = cores.parts_percent(w0, w1) if t0 else None
    # what else kept the service cores busy meanwhile: other processes (a shared machine), the
    # kernel's interrupt work (loopback networking of this very test), the hypervisor (steal)
    rec["service_core_parts"] = {k: _round(x, 1) for k, x in (parts or {}).items()} or None
    rec["other_cpu_on_service_cores"] = (
        _round(max(0.0, parts["processes"] - svc), 1) if parts and svc is not None
        else _round(max(0.0, busy - svc), 1) if busy is not None and svc is not None else None)
    return rec


def analyse_phase(out: Path, mode: str, warmup_s: float, duration_s: float) -> dict:
    """reviews/s, latency and CPU of one phase from its request table and cpu.csv."""
    import pandas as pd

    from analysis import metrics as mx
    from loadgen import record

    table = record.read(out / "requests.parquet")
    window = mx.Window(warmup_s, duration_s)
    m = mx.mode_metrics(table, window, mode=mode)
    cpu_means: dict[str, float | None] = {}
    cpu_path = out / "cpu.csv"
    if cpu_path.exists():
        cpu = pd.read_csv(cpu_path)
        cpu_means = mx.cpu_means(mx.cpu_by_role(cpu), window)
    from analysis import repeats as rp

    # the window's spread: reviews/s of each of its equal slices, and the median's interval
    slices = mx.slice_headlines(table, window, rp.window_count(duration_s))
    lo, hi = rp.bootstrap_ci([s["reviews_per_s"] for s in slices])
    return {
        "sent": m.counts.sent, "ok": m.counts.ok, "failed": m.counts.failed,
        "error_rate": m.error_rate, "error_kinds": m.error_kinds,
        "ok_per_s": m.successful_throughput, "reviews_per_s": m.reviews_per_s,
        "reviews_per_s_ci95": [lo, hi],
        "latency_ms": {k: getattr(m.latency_ms, k) for k in ("p50", "p90", "p99", "max")},
        "service_latency_ms": {k: getattr(m.service_latency_ms, k) for k in ("p50", "p99")},
        "throughput_cv": m.throughput_cv,
        "cpu": {k: _round(v, 1) for k, v in cpu_means.items()},
    }


# ---------------------------------------------------------------------------------------------
# One variant: deploy once, saturate, then half load
# ---------------------------------------------------------------------------------------------
def run_variant(v: Variant, run_dir: Path, opts: Options, progress: Progress,
                ceiling: Mapping[str, Any]) -> tuple[dict, dict]:
    """(summary entry, meta entry) of one variant; raises PhaseFailed/LaunchError on failure."""
    from services.launcher import deploy

    vdir = run_dir / v.name.replace("/", "-")
    meta: dict[str, Any] = {"label": v.label, "mode": v.mode, "note": v.note,
                            "service_overrides": dict(v.service), "complete": False,
                            "service_cpus": list(opts.placement.service or []),
                            "driver_cpus": list(opts.placement.driver or []),
                            "broker_cpus": list(opts.placement.broker or []), "phases": {}}
    sat_sc = write_scenario(saturated_scenario(v, opts.saturated, opts.seed),
                            vdir / "saturated.yaml")
    with Supervisor(vdir / "logs") as sup, contextlib.ExitStack() as stack:
        progress.say(f"[bold]{v.label}[/]: starting the deployment ...")
        t = time.monotonic()
        try:
            dep = stack.enter_context(deploy(
                v.mode, vdir / "service", overrides=sat_sc.service.get(v.mode, {}), sup=sup,
                service_cpus=opts.placement.service, broker_cpus=opts.placement.broker))
        except LaunchError as e:
            raise PhaseFailed(f"{v.name}: deploy", str(e).splitlines()[0], vdir / "logs") from e
        meta.update(settings=dep.settings, versions=dep.versions, broker=dep.broker,
                    processes=dep.processes, ready_s=round(time.monotonic() - t, 2))
        progress.say(f"{v.label}: ready in {meta['ready_s']:.1f}s; saturating with "
                     f"{v.sat_clients} closed-loop clients x {v.sat_batch} reviews ...")
        sat = drive_phase(dep, sup, sat_sc, vdir / "saturated", f"{run_dir.name}-{_slug(v)}-sat",
                          opts.placement, progress, f"{v.label} saturated")
        meta["phases"]["saturated"] = {"scenario": sat_sc.to_dict(), **_phase_meta(sat)}
        rps = sat["reviews_per_s"]
        half = None
        if rps and rps > 0:
            target = opts.half_fraction * rps
            half_sc = write_scenario(half_scenario(v, opts.half, target, opts.seed),
                                     vdir / "half.yaml")
            progress.say(f"{v.label}: {rps:,.0f} reviews/s saturated; open loop at "
                         f"{target:,.0f} reviews/s for the latency ...")
            half = drive_phase(dep, sup, half_sc, vdir / "half", f"{run_dir.name}-{_slug(v)}-half",
                               opts.placement, progress, f"{v.label} half load")
            half["target_reviews_per_s"] = target
            meta["phases"]["half"] = {"scenario": half_sc.to_dict(), **_phase_meta(half)}
    meta["complete"] = bool(sat["complete"] and (half is None or half["complete"]))
    extra = {
        "label": v.label, "mode": v.mode, "note": v.note,
        "service_overrides": dict(v.service),
        "saturated": {"clients": v.sat_clients, "batch_size": v.sat_batch,
                      "ok": sat["ok"], "failed": sat["failed"], "error_rate": sat["error_rate"],
                      "throughput_cv": _round(sat["throughput_cv"], 3),
                      "cpu": sat["cpu"], "service_core_busy": sat["service_core_busy"],
                      "other_cpu_on_service_cores": sat["other_cpu_on_service_cores"],
                      "service_core_parts": sat["service_core_parts"],
                      "valid": sat["valid"]},
        "half_load": None if half is None else {
            "batch_size": v.half_batch,
            "target_reviews_per_s": _round(half["target_reviews_per_s"], 1),
            "reviews_per_s": _round(half["reviews_per_s"], 1),
            "ok": half["ok"], "failed": half["failed"], "error_rate": half["error_rate"],
            "latency_ms": {k: _round(x, 3) for k, x in half["latency_ms"].items()},
            "service_latency_ms": {k: _round(x, 3) for k, x in half["service_latency_ms"].items()},
            "valid": half["valid"]},
        "complete": meta["complete"],
    }
    lat = half["latency_ms"] if half else {}
    batched = float(ceiling["batched_reviews_per_s"])
    extra["efficiency_ci95"] = [_round(efficiency(x, batched), 4)
                                for x in sat.get("reviews_per_s_ci95") or (None, None)]
    per_cpu = (ceiling.get("reviews_per_cpu_s_by_batch") or {}).get(str(ceiling["best_batch"]))
    extra["per_cpu_second"] = per_cpu_second(rps, sat["cpu"].get("service"), per_cpu)
    entry = variant_summary(v.name, reviews_per_s=rps, p50_ms=lat.get("p50"),
                            p99_ms=lat.get("p99"), service_cpu=sat["cpu"].get("service"),
                            batched_ceiling=float(ceiling["batched_reviews_per_s"]), extra=extra,
                            engine=v.engine)
    return entry, meta


def _slug(v: Variant) -> str:
    return v.name.replace("/", "-")


def _phase_meta(rec: dict) -> dict:
    return {k: rec[k] for k in ("t0_epoch", "complete", "valid", "driver")}


def failed_entry(v: Variant, error: str) -> dict:
    e = variant_summary(v.name, reviews_per_s=None, p50_ms=None, p99_ms=None, service_cpu=None,
                        batched_ceiling=None, engine=v.engine)
    e.update(label=v.label, mode=v.mode, error=error, complete=False)
    return e


# ---------------------------------------------------------------------------------------------
# Console
# ---------------------------------------------------------------------------------------------
def _f(x: Any, fmt: str, dash: str = "-") -> str:
    return dash if x is None else format(x, fmt)


def render_tables(summary: Mapping[str, Any]):
    """The console tables (rich renderables): variants, then targets."""
    from rich.table import Table

    c = summary["ceiling"]
    title = (f"Ceiling: model in-process on cores {c.get('cpus', '?')}: "
             f"{_f(c['batched_reviews_per_s'], ',.0f')} reviews/s batched (batch {c['best_batch']}), "
             f"{_f(c['batch1_reviews_per_s'], ',.0f')} at batch 1")
    t = Table(title=title, title_justify="left")
    for col, j in (("variant", "left"), ("reviews/s", "right"),
                   ("efficiency (95 % interval)", "right"),
                   ("overhead µs/review", "right"), ("p50 ms at ½", "right"),
                   ("p99 ms at ½", "right"), ("service CPU %", "right"),
                   ("eff. per CPU-s", "right"), ("bottleneck", "left")):
        t.add_column(col, justify=j, no_wrap=col in ("variant", "bottleneck"))
    for name, v in summary["variants"].items():
        lat = v.get("latency_ms") or {}
        if v.get("error"):
            bott = "FAILED"
        else:
            bott = {"service": "service", "driver_or_broker": "driver/broker"}.get(
                v.get("bottleneck"), "-")
        ci = v.get("efficiency_ci95") or [None, None]
        eff = _f(v["efficiency"], ".2f") + (f" ({ci[0]:.2f}–{ci[1]:.2f})"
                                           if None not in ci else "")
        t.add_row(v.get("label", name), _f(v["reviews_per_s"], ",.0f"),
                  eff, _f(v["overhead_us_per_review"], ",.0f"),
                  _f(lat.get("p50"), ".2f"), _f(lat.get("p99"), ".2f"),
                  _f(v["service_cpu"], ".0f"),
                  _f((v.get("per_cpu_second") or {}).get("efficiency"), ".2f"), bott)
    tt = Table(title="Targets (printed, not asserted)", title_justify="left")
    for col in ("variant", "metric", "target", "measured", "verdict"):
        tt.add_column(col)
    for tg in summary["targets"]:
        val = tg["value"]
        verdict = "n/a" if tg["met"] is None else ("met" if tg["met"] else "MISSED")
        fmt = ".2f" if "efficiency" in tg["metric"] else ".1f"
        tt.add_row(tg["variant"], tg["metric"], f"{tg['op']} {tg['target']:g}", _f(val, fmt),
                   verdict)
    return t, tt


def bottleneck_lines(summary: Mapping[str, Any]) -> list[str]:
    lines = []
    for name, v in summary["variants"].items():
        if v.get("error"):
            lines.append(f"{name}: FAILED: {v['error']}")
            continue
        if v.get("service_bound") is False:
            sat = v.get("saturated") or {}
            cpu = sat.get("cpu") or {}
            other = sat.get("other_cpu_on_service_cores")
            busy = sat.get("service_core_busy")
            parts = sat.get("service_core_parts") or {}
            line = (f"{name}: service CPU {v['service_cpu']:.0f}% < {SERVICE_BOUND_CPU:.0f}%: "
                    f"flagged: the driver or broker was the bottleneck, not the service (driver "
                    f"{_f(cpu.get('driver'), '.0f')}%"
                    + (f", broker {cpu['broker']:.0f}%" if cpu.get("broker") is not None else "")
                    + " of their core)")
            if busy is not None and busy >= SERVICE_BOUND_CPU:
                line += (f"; yet the service core was {busy:.0f}% busy: other processes "
                         f"{_f(other, '.0f')}%, kernel irq {_f(parts.get('irq'), '.0f')}%, "
                         f"steal {_f(parts.get('steal'), '.0f')}%: the core was shared, the "
                         "service got less than all of it")
            lines.append(line)
    return lines


def table_text(summary: Mapping[str, Any], width: int = 140) -> str:
    from rich.console import Console

    buf = io.StringIO()
    con = Console(file=buf, width=width, force_terminal=False, color_system=None,
                  highlight=False)
    for t in render_tables(summary):
        con.print(t)
    for line in bottleneck_lines(summary):
        con.print(line)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
def run(opts: Options) -> tuple[Path, dict]:
    from services.model import load_model

    opts.results.mkdir(parents=True, exist_ok=True)
    run_dir = new_run_dir(opts.results, "ceiling")
    progress = Progress(quiet=opts.quiet)
    t_begin = time.monotonic()
    meta: dict[str, Any] = {
        "run_id": run_dir.name, "kind": "ceiling",
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": metamod.git_commit(), "machine": metamod.machine(),
        "versions": {"packages": metamod.packages()}, "placement": opts.placement.to_dict(),
        "phases": {"saturated": vars(opts.saturated), "half": vars(opts.half),
                   "half_fraction": opts.half_fraction},
        "command": " ".join(sys.argv), "complete": False, "variants": {},
    }
    meta["git_commit"] = meta["git"]["commit"]
    meta_path = run_dir / "meta.json"
    metamod.write_json(meta_path, meta)
    progress.say(f"ceiling run -> {run_dir}")
    # the ceiling, measured here on the service cores (same code as bench run's)
    model = load_model()
    meta["model"] = model.info
    # bench.run.measure_ceiling reads only the payload from its scenario: the variants' own
    # (a user's payload file, when one is named, like theirs)
    from loadgen.scenario import parse_scenario
    payload = parse_scenario({"name": "ceiling", "arrival": {"closed": {"clients": [[0, 1]]}},
                              "payload": {"source": "imdb", "split": "test", "sample": 2000,
                                          "seed": opts.seed}})
    ceiling = measure_ceiling(model, payload, opts.placement, progress)
    del model
    meta["ceiling"] = ceiling
    # This process stays unpinned, as in bench run (deploy checks the service cores against our
    # own affinity); it only tails logs and samples CPU, a few % at most of "other processes".
    metamod.write_json(meta_path, meta)

    entries: dict[str, dict] = {}
    for v in opts.variants:
        try:
            entries[v.name], meta["variants"][v.name] = run_variant(v, run_dir, opts, progress,
                                                                    ceiling)
        except KeyboardInterrupt:
            meta["error"] = f"interrupted during {v.name}"
            metamod.write_json(meta_path, meta)
            raise
        except Exception as e:  # noqa: BLE001 — one failing variant must not hide the others
            progress.say(f"[red]{v.label}: {e}[/]")
            entries[v.name] = failed_entry(v, str(e).splitlines()[0])
            meta["variants"][v.name] = {"complete": False, "error": str(e)}
        metamod.write_json(meta_path, meta)

    complete = all(e.get("complete") for e in entries.values())
    summary = build_summary(ceiling, entries, run_id=run_dir.name, complete=complete)
    validate_summary(summary)
    metamod.write_json(run_dir / "summary.json", summary)
    text = table_text(summary)
    (run_dir / "table.txt").write_text(text)
    if opts.chart:
        try:
            from analysis.ceiling_chart import plot_ceiling
            plot_ceiling(summary, run_dir / "charts" / "ceiling.png")
        except Exception as e:  # noqa: BLE001 — a chart failure must not lose the figures
            progress.say(f"[yellow]chart failed: {e}[/]")
    meta["complete"] = complete
    meta["ended_utc"] = datetime.now(UTC).isoformat(timespec="seconds")
    meta["elapsed_s"] = round(time.monotonic() - t_begin, 1)
    metamod.write_json(meta_path, meta)

    if not opts.quiet:  # rendered at a fixed width: a pipe's 80 columns would truncate headers
        sys.stdout.write(text)
        sys.stdout.flush()
    progress.say(f"{run_dir} ({meta['elapsed_s']:.0f} s): summary.json, table.txt, "
                 "charts/ceiling.png, meta.json")
    return run_dir, summary


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.ceiling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default=",".join(VARIANT_NAMES),
                   help="comma list drawn from " + ", ".join(VARIANT_NAMES))
    p.add_argument("--rest-batch", type=int, default=100, help="N of rest/batchN (default 100)")
    p.add_argument("--take-max", type=int, default=256, help="N of stream/batchN (default 256)")
    p.add_argument("--stream-set", action="append", default=[], metavar="KEY=JSON",
                   help="a StreamSettings override for stream/batchN, e.g. take_mode='\"within\"'")
    p.add_argument("--lean-set", action="append", default=[], metavar="KEY=JSON",
                   help="a StreamSettings override for stream-lean/batchN, e.g. "
                        "lean_client='\"confluent\"'")
    p.add_argument("--saturated", default="3,7,3", help="warmup,duration,drain seconds")
    p.add_argument("--half", default="2,6,3", help="warmup,duration,drain seconds")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--service-cpus")
    p.add_argument("--driver-cpus")
    p.add_argument("--broker-cpus")
    p.add_argument("--no-chart", action="store_true")
    p.add_argument("--quiet", action="store_true")
    return p


def _phase(spec: str) -> Phase:
    w, d, r = (float(x) for x in spec.split(","))
    return Phase(w, d, r)


def _overrides(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=JSON`` items as a dict (a value that is not JSON stays a string)."""
    extra: dict[str, Any] = {}
    for item in items:
        key, _, raw = item.partition("=")
        try:
            extra[key] = json.loads(raw)
        except json.JSONDecodeError:
            extra[key] = raw
    return extra


def options_from_args(argv: Sequence[str]) -> Options:
    a = _parser().parse_args(list(argv))
    names = [n.strip() for n in a.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANT_NAMES]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANT_NAMES)}")
    by_name = {v.name: v for v in default_variants(a.rest_batch, a.take_max,
                                                   _overrides(a.stream_set),
                                                   _overrides(a.lean_set))}
    return Options(results=a.results,
                   placement=Placement.default(a.service_cpus, a.driver_cpus, a.broker_cpus),
                   variants=[by_name[n] for n in names], saturated=_phase(a.saturated),
                   half=_phase(a.half), chart=not a.no_chart,
                   quiet=a.quiet)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench ceiling`` (defaults) or ``python -m bench.ceiling [options]``."""
    opts = options_from_args(argv or [])
    procs.sigterm_unwinds()
    try:
        _, summary = run(opts)
    except KeyboardInterrupt:
        return 130
    return 0 if summary["complete"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
