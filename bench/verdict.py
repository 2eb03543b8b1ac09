"""``make verdict``: which deployment to use, measured, in one command (≈ 7 minutes on 2 cores).

First the model alone on one core and on every core (does the computation scale with cores?).
Then for each deployment of the scenario, on its own scale (service pinned to one core, one
worker):

1. **saturated**: the calibration phase (bench/calibrate.py), a closed loop with no think time:
   its capacity;
2. **open loop**: Poisson rate steps at ¼, ½, ¾, 0.9, 1 and 1.1 of that capacity: its latency
   at ¼ ½ ¾ and the highest rate within the SLO;
3. **batch-and-retry** at 1.5× and 3× its capacity: the article's load (the scenario's client:
   timeout, exponential retries, batches), with clients = the multiple × the clients whose queueing
   fills the client's deadline (timeout × capacity, Little's law): what it keeps serving past it.

Each deployment is started once and every phase drives it with the real driver subprocess, CPU
sampler and core sampler (bench.ceiling.drive_phase, as the calibration of ``make bench`` does);
between phases the bench waits until the service is idle, so an abandoned backlog is not charged
to the next phase. The folder is then analysed and reported by analysis/verdict_run.py.

``--cost-us 0,250,1000,4000`` (``make verdict COST_US=...``) runs all of that once per synthetic
model cost, each cost's folder ``cost-<µs>us/`` a verdict of its own with ``RVS_COST_US`` set in
every process it starts and in the bench's own model (services/model/cost.py), each phase
less than half as long (AXIS) so four costs fit in ≈ 20 minutes; analysis/verdict_axis.py then
says where each regime's winner changes as the model gets costlier.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench import meta as metamod
from bench.progress import Progress
from bench.run import RESULTS, PhaseFailed, Placement, _link_latest, new_run_dir
from loadgen import relative as rel
from loadgen.scenario import Calibration, Scenario, load_scenario
from services import procs, registry
from services.model.cost import CostError, cost_axis
from services.procs import LaunchError, Supervisor

#: The capacity plan's target when none is given (reviews/s).
DEFAULT_TARGET_REVIEWS_PER_S = 10_000.0
#: A stream deployment is saturated by at least this many events in flight; a REST one by the
#: scenario's calibration clients. 1,024 (make ceiling's 16 × 64) left a Faust worker at 40 % of
#: its core here: each client waits for all its events, so the round trip idles the worker, and
#: the 1.5x phase then served 1.55x that "capacity".
STREAM_SATURATING_EVENTS = 4096
#: The service counts as idle below this CPU (% of one core), for this long.
IDLE_CPU = 20.0
IDLE_FOR_S = 0.6


@dataclass(frozen=True)
class Phases:
    """How long each phase runs and at which loads (multiples of the deployment's capacity)."""

    saturate_warmup_s: float = 3.0
    saturate_s: float = 10.0
    open_loads: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9, 1.0, 1.1)
    open_warmup_s: float = 3.0
    open_step_s: float = 10.0
    open_drain_s: float = 15.0
    overload_loads: tuple[float, ...] = (1.5, 3.0)
    overload_warmup_s: float = 10.0
    overload_s: float = 20.0
    overload_drain_s: float = 35.0      # the scenario's retries run out within it
    settle_max_s: float = 30.0

    def estimate_s(self, deploy_s: float = 10.0, start_s: float = 3.0) -> float:
        """Rough seconds per deployment: ``start_s`` per phase for the driver to start, and the
        drains as they usually go (they end when everything is answered)."""
        phases = 2 + len(self.overload_loads)
        return (deploy_s + phases * start_s + self.saturate_warmup_s + self.saturate_s + 1
                + self.open_warmup_s + len(self.open_loads) * self.open_step_s
                + min(self.open_drain_s, 3)
                + len(self.overload_loads) * (self.overload_warmup_s + self.overload_s
                                              + min(self.overload_drain_s, 10))
                + (phases - 1) * min(self.settle_max_s, 3))


#: ``--quick``: every phase a few seconds (the stack test): it proves the pipeline, not a figure.
QUICK = Phases(saturate_warmup_s=1.0, saturate_s=2.0, open_loads=(0.25, 0.5, 0.75),
               open_warmup_s=0.5, open_step_s=1.5, open_drain_s=2.0, overload_loads=(1.5, 3.0),
               overload_warmup_s=1.0, overload_s=2.0, overload_drain_s=4.0, settle_max_s=3.0)
#: The cost axis (``--cost-us``): every load of the default, each phase about 40 % as long, so
#: four costs × two deployments fit in ≈ 20 minutes on 2 cores. The overload drain stays the
#: default's: a stream's backlog at 3× is ≈ 3 × the 5 s timeout of work (clients × batch events),
#: and 16 s left 39 % of its 3× requests in flight (p50 17 s), counted as failed.
AXIS = Phases(saturate_warmup_s=2.0, saturate_s=5.0, open_warmup_s=2.0, open_step_s=4.0,
              open_drain_s=8.0, overload_warmup_s=4.0, overload_s=7.0, overload_drain_s=35.0,
              settle_max_s=15.0)


@dataclass
class VerdictOptions:
    scenario: str = "verdict"
    modes: tuple[str, ...] | None = None           # default: the scenario's
    target_reviews_per_s: float = DEFAULT_TARGET_REVIEWS_PER_S
    slo_p99_ms: float | None = None                # default: the scenario's slo.p99_ms
    phases: Phases = field(default_factory=Phases)
    placement: Placement = field(default_factory=Placement.default)
    results: Path = RESULTS
    target: str = "local"
    url: str | None = None
    bootstrap: str | None = None
    quiet: bool = False
    command: str = ""
    #: the synthetic cost axis, µs of CPU per input (None: one verdict, $RVS_COST_US as set)
    costs: tuple[float, ...] | None = None


# --------------------------------------------------------------------------------------------
# Each phase's scenario (pure: what the driver is asked to do)


#: ... but no more than the model computes in this long on one core: at +4,000 µs per input,
#: 4,096 events took 16 s a round trip, and a 5 s saturated window counted almost none of them.
STREAM_ROUND_TRIP_S = 1.0


def saturating_clients(driver: str, batch_size: int, base: int,
                       model_reviews_per_s: float | None = None) -> int:
    """Closed-loop clients that keep one worker busy: ``base`` (the scenario's calibration
    clients) for REST; for a stream enough for STREAM_SATURATING_EVENTS events in flight, fewer
    when the model alone computes less than that in STREAM_ROUND_TRIP_S (never below ``base``)."""
    if driver == "stream":
        events = STREAM_SATURATING_EVENTS
        if model_reviews_per_s:
            events = min(events, math.ceil(model_reviews_per_s * STREAM_ROUND_TRIP_S))
        return max(base, math.ceil(events / max(1, batch_size)))
    return base


def saturate_scenario(sc: Scenario, mode: str, ph: Phases, clients: int) -> Scenario:
    """The scenario whose calibration phase saturates ``mode`` (bench.calibrate.saturate)."""
    cal = Calibration(mode=mode, warmup_s=ph.saturate_warmup_s, duration_s=ph.saturate_s,
                      clients=clients)
    return dataclasses.replace(sc, name=f"{sc.name}-{mode}", modes=(mode,), calibration=cal)


def _base(sc: Scenario, mode: str, suffix: str) -> dict:
    d = sc.to_dict()
    d.pop("calibration", None)
    return {**d, "name": f"{sc.name}-{mode}-{suffix}", "modes": [mode], "faults": [],
            "service": {mode: d["service"].get(mode, {})}}


def open_scenario(sc: Scenario, mode: str, cap: rel.Capacity, ph: Phases
                  ) -> tuple[dict, list[dict]]:
    """Poisson rate steps at each of ``ph.open_loads`` × the capacity, the first with a warm-up;
    (the scenario, each step's measured span and offered rate)."""
    doc = _base(sc, mode, "open")
    steps, spans = [], []
    for i, load in enumerate(ph.open_loads):
        start = ph.open_warmup_s + i * ph.open_step_s
        ops = load * cap.ops_per_s
        steps.append([0.0 if i == 0 else start, round(ops, 4)])
        spans.append({"load": load, "start_s": start, "end_s": start + ph.open_step_s,
                      "ops_per_s": ops, "offered_reviews_per_s": ops * cap.batch_size})
    doc["arrival"] = {"open": {"process": "poisson", "seed": sc.payload.seed + 17,
                               "rate": {"shape": "steps", "steps": steps},
                               "max_in_flight": 2000, "max_lateness_s": 1.0}}
    doc["timing"] = {"warmup_s": ph.open_warmup_s, "duration_s": len(steps) * ph.open_step_s,
                     "drain_s": ph.open_drain_s, "max_requests": sc.timing.max_requests}
    return doc, spans


def overload_clients(cap: rel.Capacity, load: float, limit: int | None = None) -> int:
    """Clients whose queueing would need ``load`` × the capacity to be answered within the
    deadline: load × timeout × capacity (Little's law), at least one; at most ``limit`` (a
    per-address connection limit would shed the bench's own clients above it)."""
    n = max(1, round(load * cap.timeout_fill_clients))
    return min(n, limit) if limit else n


def overload_scenario(sc: Scenario, mode: str, cap: rel.Capacity, load: float, ph: Phases,
                      limit: int | None = None) -> dict:
    """The article's batch-and-retry load at ``load`` × the capacity: the scenario's client
    (timeout, retries, batch), closed loop, no think time."""
    doc = _base(sc, mode, f"overload-{load:g}x")
    doc["arrival"] = {"closed": {"clients": overload_clients(cap, load, limit), "think_s": 0}}
    doc["timing"] = {"warmup_s": ph.overload_warmup_s, "duration_s": ph.overload_s,
                     "drain_s": ph.overload_drain_s, "max_requests": sc.timing.max_requests}
    return doc


# --------------------------------------------------------------------------------------------
# Driving one deployment through every phase


def settle(dep, max_s: float, progress: Progress) -> float:
    """Wait (≤ ``max_s``) until the service's processes are idle: REST may still be computing
    the batches its clients abandoned, a stream worker answering a backlog. Seconds waited."""
    import psutil

    t0 = time.monotonic()
    quiet_since = None
    roots = []
    for pid in dep.service_pids:
        with contextlib.suppress(psutil.Error):
            roots.append(psutil.Process(pid))
    while time.monotonic() - t0 < max_s:
        ps = []
        for r in roots:
            with contextlib.suppress(psutil.Error):
                ps += [r, *r.children(recursive=True)]
        for p in ps:
            with contextlib.suppress(psutil.Error):
                p.cpu_percent(None)
        time.sleep(0.3)
        busy = 0.0
        for p in ps:
            with contextlib.suppress(psutil.Error):
                busy += p.cpu_percent(None)
        now = time.monotonic()
        if busy < IDLE_CPU:
            quiet_since = quiet_since or now
            if now - quiet_since >= IDLE_FOR_S:
                break
        else:
            quiet_since = None
    waited = time.monotonic() - t0
    if waited > 2:
        progress.say(f"  waited {waited:.0f} s for the service to go idle")
    return waited


def _phase_record(rec: dict, **extra) -> dict:
    keep = ("sent", "ok", "failed", "error_rate", "reviews_per_s", "latency_ms", "cpu",
            "complete", "valid", "service_core_busy", "other_cpu_on_service_cores")
    return {**{k: rec.get(k) for k in keep}, **extra}


def run_deployment(mode: str, sc: Scenario, mode_dir: Path, opts: VerdictOptions,
                   progress: Progress, run_id: str, info: dict, save,
                   model_reviews_per_s: float | None = None) -> None:
    """Deploy ``mode`` once and drive it through every phase, filling ``info`` (meta.json's
    ``modes.<mode>``) as it goes; ``save()`` writes meta.json. ``model_reviews_per_s``: the model
    alone on one core (bounds a stream's saturating events)."""
    from bench.calibrate import saturate
    from bench.ceiling import drive_phase, write_scenario
    from services.launcher import attach, deploy

    ph, pl = opts.phases, opts.placement
    kind = registry.impl(mode)
    phases: dict = info.setdefault("phases", {})
    with Supervisor(mode_dir / "logs") as sup, contextlib.ExitStack() as stack:
        progress.say(f"[bold]{mode}[/]: starting the deployment ...")
        t = time.monotonic()
        try:
            if opts.target == "compose":
                dep = stack.enter_context(attach(mode, url=opts.url, bootstrap=opts.bootstrap))
            else:
                dep = stack.enter_context(deploy(
                    mode, mode_dir / "service", overrides=sc.service.get(mode, {}), sup=sup,
                    service_cpus=pl.service, broker_cpus=pl.broker, bootstrap=opts.bootstrap))
        except LaunchError as e:
            raise PhaseFailed(f"{mode}: deploy", str(e).splitlines()[0], mode_dir / "logs") from e
        info.update(kind=dep.kind or registry.resolve(mode).kind,
                    engine=dep.engine or kind.engine(dep.settings), driver=dep.driver or kind.driver,
                    settings=dep.settings, versions=dep.versions,
                    broker={k: dep.broker.get(k) for k in ("name", "version")} if dep.broker
                    else None, workers=kind.workers(dep), service_cpus=list(pl.service or []),
                    driver_cpus=list(pl.driver or []), ready_s=round(time.monotonic() - t, 2))
        save()
        driver = info["driver"]
        n_phases = 2 + len(ph.overload_loads)

        # 1. saturated: the capacity
        clients = saturating_clients(driver, sc.workload.batch_size, sc.calibration.clients
                                     if sc.calibration else 4, model_reviews_per_s)
        progress.say(f"[bold]{mode} 1/{n_phases}[/]: saturated, closed loop, {clients} clients "
                     f"× {sc.workload.batch_size} reviews")
        cap, rec = saturate(dep, sup, saturate_scenario(sc, mode, ph, clients),
                            mode_dir / "calibration", f"{run_id}-{mode}", pl, progress,
                            timeout_s=sc.client.timeout_s)
        phases["calibration"] = {"dir": "calibration", "warmup_s": ph.saturate_warmup_s,
                                 "duration_s": ph.saturate_s, "clients": clients, **rec}
        info["capacity"] = {"ops_per_s": cap.ops_per_s,
                            "reviews_per_s": cap.ops_per_s * cap.batch_size,
                            "batch_size": cap.batch_size, "timeout_s": cap.timeout_s,
                            "timeout_fill_clients": cap.timeout_fill_clients}
        save()
        if cap.ops_per_s <= 0:
            raise PhaseFailed(f"{mode}: saturated", "it served nothing: no capacity to scale "
                              "the other phases by", mode_dir / "logs")
        progress.say(f"{mode}: capacity {cap.ops_per_s * cap.batch_size:,.0f} reviews/s "
                     f"({cap.ops_per_s:,.2f} operations/s)")
        settle(dep, ph.settle_max_s, progress)

        # 2. open loop: latency at ¼ ½ ¾, the highest rate within the SLO
        doc, spans = open_scenario(sc, mode, cap, ph)
        out = mode_dir / "open"
        progress.say(f"[bold]{mode} 2/{n_phases}[/]: open loop at "
                     + ", ".join(f"{s['load']:g}" for s in spans) + " × capacity ("
                     + ", ".join(f"{s['offered_reviews_per_s']:,.0f}" for s in spans)
                     + " reviews/s)")
        rec = drive_phase(dep, sup, write_scenario(doc, out / "scenario.yaml"), out,
                          f"{run_id}-{mode}-open", pl, progress, f"{mode} open loop")
        phases["open"] = _phase_record(rec, dir="open", steps=spans,
                                       warmup_s=doc["timing"]["warmup_s"],
                                       duration_s=doc["timing"]["duration_s"])
        save()
        settle(dep, ph.settle_max_s, progress)

        # 3. the article's batch-and-retry load past capacity
        for i, load in enumerate(ph.overload_loads):
            limit = (dep.settings or {}).get("limit_conn_per_ip") or None
            doc = overload_scenario(sc, mode, cap, load, ph, limit)
            name = f"overload-{load:g}x"
            out = mode_dir / name
            n = doc["arrival"]["closed"]["clients"]
            if n == limit:
                progress.say(f"[yellow]{mode}: {load:g}× capacity needs "
                             f"{overload_clients(cap, load)} clients; capped at the deployment's "
                             f"{limit} connections per address[/]")
            progress.say(f"[bold]{mode} {3 + i}/{n_phases}[/]: batch-and-retry at {load:g}× "
                         f"capacity: {n} clients × {sc.workload.batch_size} reviews, timeout "
                         f"{sc.client.timeout_s:g} s, retries {sc.client.retry.policy}")
            rec = drive_phase(dep, sup, write_scenario(doc, out / "scenario.yaml"), out,
                              f"{run_id}-{mode}-{name}".replace(".", "_"), pl, progress,
                              f"{mode} {load:g}×")
            phases[name] = _phase_record(rec, dir=name, load=load, clients=n,
                                         warmup_s=ph.overload_warmup_s, duration_s=ph.overload_s)
            save()
            if i + 1 < len(ph.overload_loads):
                settle(dep, ph.settle_max_s, progress)
    info["complete"] = True
    save()


def measure_scaling(model, sc: Scenario, placement: Placement, progress: Progress) -> dict | None:
    """The model alone at the scenario's batch on one service core, then one process per usable
    core at once (bench.model_ceiling's tries, best of 3 × 0.5 s each): does the computation
    scale with cores here? What the capacity plan's linear extrapolation rests on (≈ 4 s)."""
    import os

    from bench.model_ceiling import best, ceiling_inputs, measure_tries

    cores = sorted(os.sched_getaffinity(0))
    one = list(placement.service or cores[:1])[:1]
    if len(cores) < 2:
        return None
    texts = ceiling_inputs(sc.payload, 2000)
    batch = sc.workload.batch_size
    r1 = best([t.reviews_per_s for t in measure_tries(model, texts, one, batch)])
    rn = best([t.reviews_per_s for t in measure_tries(model, texts, cores, batch)])
    if not r1 or not rn:
        return None
    progress.say(f"model alone at batch {batch}: {r1:,.0f} reviews/s on core {one[0]}, "
                 f"{rn:,.0f} on cores {cores} ({rn / r1:.2f}×)")
    return {"batch": batch, "cores": len(cores), "one_core_reviews_per_s": r1,
            "all_cores_reviews_per_s": rn, "one_core": one, "all_cores": cores}


# --------------------------------------------------------------------------------------------
# The whole verdict


def _scenario(opts: VerdictOptions) -> tuple[Scenario, float | None]:
    sc = load_scenario(opts.scenario)
    if opts.modes:
        for m in opts.modes:
            registry.resolve(m)   # an unknown name fails here, before anything starts
        sc = dataclasses.replace(sc, modes=tuple(opts.modes))
    return sc, (opts.slo_p99_ms if opts.slo_p99_ms is not None else sc.slo.p99_ms)


def _meta(opts: VerdictOptions, sc: Scenario, slo: float | None, run_id: str,
          phases: Phases) -> dict:
    meta = {"kind": "verdict", "run_id": run_id, "scenario": sc.to_dict(),
            "order": list(sc.modes), "command": opts.command,
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "git": metamod.git_commit(), "machine": metamod.machine(),
            "versions": {"packages": metamod.packages()}, "placement": opts.placement.to_dict(),
            "target": opts.target, "phases": dataclasses.asdict(phases),
            "verdict": {"target_reviews_per_s": opts.target_reviews_per_s, "slo_p99_ms": slo,
                        "max_error_rate": sc.slo.max_error_rate},
            "complete": False, "modes": {}}
    meta["git_commit"] = meta["git"]["commit"]
    return meta


@contextlib.contextmanager
def cost_env(cost_us: float | None):
    """``RVS_COST_US`` set to ``cost_us`` while the block runs (every process started in it,
    and load_model here, add that synthetic cost); None leaves the environment as it is."""
    import os

    if cost_us is None:
        yield
        return
    old = os.environ.get("RVS_COST_US")
    os.environ["RVS_COST_US"] = f"{cost_us:g}"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("RVS_COST_US", None)
        else:
            os.environ["RVS_COST_US"] = old


def measure(opts: VerdictOptions, sc: Scenario, slo: float | None, run_dir: Path,
            progress: Progress, *, run_id: str, cost_us: float | None = None) -> dict:
    """Measure every deployment into ``run_dir`` (a verdict folder: meta.json and a sub-folder
    per deployment), with the synthetic ``cost_us`` per input in every process; its meta."""
    from services.model import load_model

    t_start = time.monotonic()
    meta = _meta(opts, sc, slo, run_id, opts.phases)
    if cost_us is not None:
        meta["synthetic_cost_us"] = cost_us
    meta_path = run_dir / "meta.json"

    def save() -> None:
        meta["wall_s"] = round(time.monotonic() - t_start, 1)
        metamod.write_json(meta_path, meta)

    save()
    with cost_env(cost_us):
        model = load_model()
        meta["model"] = model.info
        if opts.target == "local":   # the computation's own scaling with cores, before any load
            meta["scaling"] = measure_scaling(model, sc, opts.placement, progress)
        del model
        save()
        try:
            for k, mode in enumerate(sc.modes, 1):
                progress.say(f"[bold]deployment {k} of {len(sc.modes)}: {mode}[/] "
                             f"({time.monotonic() - t_start:.0f} s elapsed)")
                info = meta["modes"].setdefault(mode, {"complete": False})
                try:
                    run_deployment(mode, sc, run_dir / mode, opts, progress, run_id, info, save,
                                   (meta.get("scaling") or {}).get("one_core_reviews_per_s"))
                except Exception as e:  # noqa: BLE001 — kept in meta; the others still run
                    info["error"] = str(e)
                    save()
                    progress.say(f"[red]{mode}: {e}[/]; going on with the next deployment")
            meta["complete"] = all(m.get("complete") for m in meta["modes"].values())
        except KeyboardInterrupt:
            meta["error"] = "interrupted (Ctrl-C or SIGTERM)"
            save()
            progress.say(f"[red]interrupted[/]; partial verdict kept in {run_dir}")
            raise
        finally:
            meta["ended_utc"] = datetime.now(UTC).isoformat(timespec="seconds")
            save()
    return meta


def _estimate_s(sc: Scenario, phases: Phases) -> float:
    return sum(phases.estimate_s(20.0 if registry.uses_broker(m) else 5.0) for m in sc.modes) + 8


def run(opts: VerdictOptions) -> tuple[Path, dict | None]:
    """Measure every deployment, then write and print the verdict; (folder, summary)."""
    if opts.costs:
        return run_axis(opts)
    sc, slo, run_dir, progress, t_start = _start(opts)
    progress.say(f"[bold]verdict[/]: {', '.join(sc.modes)} on '{sc.name}' "
                 f"({sc.workload.batch_size} reviews per operation), about "
                 f"{_estimate_s(sc, opts.phases) / 60:.0f} min; "
                 f"plan for {opts.target_reviews_per_s:,.0f} reviews/s"
                 + (f" at p99 ≤ {slo:,.0f} ms" if slo else "") + f" -> {run_dir}")
    measure(opts, sc, slo, run_dir, progress, run_id=run_dir.name)
    summary = report(run_dir, progress)
    progress.say(f"verdict in {time.monotonic() - t_start:.0f} s: {run_dir / 'report.html'}")
    return run_dir, summary


def _start(opts: VerdictOptions):
    """What a verdict and a cost axis begin with: the scenario and SLO, a fresh run folder
    (``latest`` pointing at it), the progress lines and the clock."""
    sc, slo = _scenario(opts)
    opts.results.mkdir(parents=True, exist_ok=True)
    run_dir = new_run_dir(opts.results, "verdict")
    _link_latest(opts.results, run_dir)
    return sc, slo, run_dir, Progress(quiet=opts.quiet), time.monotonic()


def cost_dir(cost_us: float) -> str:
    """A cost's sub-folder of an axis folder: ``cost-1000us``, ``cost-62_5us``."""
    return f"cost-{cost_us:g}us".replace(".", "_")


def run_axis(opts: VerdictOptions) -> tuple[Path, dict | None]:
    """The verdict at each synthetic cost of ``opts.costs`` (each a verdict folder of its own,
    ``cost-<µs>us/``), then the axis: where each regime's winner changes as the model gets
    costlier (analysis/verdict_axis.py)."""
    costs = tuple(opts.costs or ())
    sc, slo, run_dir, progress, t_start = _start(opts)
    meta = _meta(opts, sc, slo, run_dir.name, opts.phases)
    meta.pop("modes")
    meta["axis"] = {"costs_us": list(costs), "dirs": [cost_dir(c) for c in costs],
                    "label": "synthetic: a calibrated busy loop of this many µs of CPU per input, "
                             "added to the model in every process (services/model/cost.py)"}

    def save() -> None:
        meta["wall_s"] = round(time.monotonic() - t_start, 1)
        metamod.write_json(run_dir / "meta.json", meta)

    save()
    per_cost = _estimate_s(sc, opts.phases)
    progress.say(f"[bold]verdict along a synthetic cost axis[/]: {', '.join(sc.modes)} on "
                 f"'{sc.name}' at +{', '.join(f'{c:g}' for c in costs)} µs of CPU per input, "
                 f"each phase shortened (bench.verdict.AXIS), about "
                 f"{len(costs) * per_cost / 60:.0f} min -> {run_dir}")
    done = []
    try:
        for i, cost in enumerate(costs):
            elapsed = time.monotonic() - t_start
            left = (elapsed / i * (len(costs) - i)) if i else per_cost * len(costs)
            progress.say(f"[bold]cost {i + 1} of {len(costs)}: +{cost:g} µs of CPU per input "
                         f"(synthetic)[/] — {elapsed / 60:.1f} min elapsed, about "
                         f"{left / 60:.0f} min left")
            sub = run_dir / cost_dir(cost)
            sub.mkdir()
            m = measure(opts, sc, slo, sub, progress, run_id=f"{run_dir.name}-{sub.name}",
                        cost_us=cost)
            done.append(bool(m.get("complete")))
            _report_cost(sub, cost, progress)
        meta["complete"] = len(done) == len(costs) and all(done)
    except KeyboardInterrupt:
        meta["error"] = "interrupted (Ctrl-C or SIGTERM)"
        progress.say(f"[red]interrupted[/]; the costs measured so far are kept in {run_dir}")
        raise
    finally:
        meta["ended_utc"] = datetime.now(UTC).isoformat(timespec="seconds")
        save()
    summary = report(run_dir, progress)
    progress.say(f"verdict along the cost axis in {(time.monotonic() - t_start) / 60:.1f} min: "
                 f"{run_dir / 'report.html'}")
    return run_dir, summary


def _report_cost(sub: Path, cost: float, progress: Progress) -> None:
    """One cost's verdict folder reported, and one line of it said."""
    from analysis.verdict_run import build_verdict_report

    try:
        s = build_verdict_report(sub).summary
    except Exception as e:  # noqa: BLE001 — the axis report says what is missing
        progress.say(f"[yellow]+{cost:g} µs: analysis failed: {e}[/]")
        return
    cap = (s.get("verdict") or {}).get("capacity") or {}
    regs = (s.get("verdict") or {}).get("regimes") or []
    progress.say(f"+{cost:g} µs: saturated " + ", ".join(
        f"{k} {v['saturated_reviews_per_s']:,.0f}" for k, v in cap.items()) + " reviews/s; "
        + "; ".join(f"{r['load']}: {r['winner'] if r.get('clear') else 'no clear winner'}"
                    for r in regs))


def report(run_dir: Path, progress: Progress) -> dict | None:
    """Analyse the folder and print the verdict (a failed analysis says how to re-run it)."""
    from analysis.verdict_axis import axis_rows, build_axis_report
    from analysis.verdict_run import build_verdict_report, capacity_rows, plan_rows, regime_rows

    try:   # an axis: each cost folder was reported as it ended
        files = (build_axis_report(run_dir, rebuild=False) if _is_axis(run_dir)
                 else build_verdict_report(run_dir))
    except Exception as e:  # noqa: BLE001 — the measurements are kept; say how to re-run
        progress.say(f"[yellow]verdict analysis failed: {e}[/] — re-run: "
                     f"python -m analysis report {run_dir}")
        return None
    s = files.summary
    if (s.get("verdict") or {}).get("cost_axis") is not None:
        show_verdict(progress, s, axis_rows)
    else:
        show_verdict(progress, s, capacity_rows, regime_rows, plan_rows)
    return s


def _is_axis(run_dir: Path) -> bool:
    import json

    from analysis.verdict_axis import is_axis

    return is_axis(json.loads((run_dir / "meta.json").read_text()))


def show_verdict(progress: Progress, s: dict, *tables) -> None:
    from rich.markup import escape
    from rich.table import Table

    c = progress.console
    c.print("[bold]Verdict[/]")
    if (s.get("synthetic") or {}).get("label"):
        c.print(f"[yellow]{escape(s['synthetic']['label'])}[/]", soft_wrap=True)
    for line in s.get("words") or []:
        c.print(f"- {escape(line)}", soft_wrap=True)
    for make in tables:
        head, rows = make(s)
        if not rows:
            continue
        t = Table()
        for i, h in enumerate(head):
            t.add_column(h, justify="left" if i == 0 else "right")
        for r in rows:
            t.add_row(*r)
        c.print(t)
    if s.get("missing_modes"):
        c.print(f"[yellow]missing[/]: {', '.join(s['missing_modes'])} (a phase failed; "
                "see meta.json)")


# --------------------------------------------------------------------------------------------
# Command line


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench verdict", description=__doc__.split("\n")[0])
    p.add_argument("--scenario", default="verdict", help="the workload (default: verdict)")
    p.add_argument("--modes", help="deployments, comma-separated (default: the scenario's)")
    p.add_argument("--target-rate", type=float, default=DEFAULT_TARGET_REVIEWS_PER_S,
                   help="the capacity plan's target, reviews/s (default %(default)g)")
    p.add_argument("--slo-p99-ms", type=float, default=None,
                   help="the SLO's p99 latency, ms (default: the scenario's slo.p99_ms)")
    p.add_argument("--quick", action="store_true", help="every phase short (a smoke test)")
    p.add_argument("--cost-us", metavar="LIST",
                   help="a synthetic model-cost axis, µs of CPU per input, e.g. 0,250,1000,4000: "
                        "the verdict at each cost (phases shortened), and where the winner "
                        "changes (default: $RVS_COST_US when it is a comma list)")
    p.add_argument("--results", default=None, help="results root (default: results/)")
    p.add_argument("--service-cpus")
    p.add_argument("--driver-cpus")
    p.add_argument("--broker-cpus")
    p.add_argument("--target", choices=["local", "compose"], default="local")
    p.add_argument("--url")
    p.add_argument("--bootstrap")
    return p


def axis_costs(flag: str | None, env: str | None) -> tuple[float, ...] | None:
    """The cost axis asked for: ``--cost-us``, else ``$RVS_COST_US`` when it lists several
    (one number there is one verdict at that cost, as for any run)."""
    if flag:
        return tuple(cost_axis(flag, "--cost-us"))
    if env and "," in env:
        return tuple(cost_axis(env, "RVS_COST_US"))
    return None


def options(argv: list[str], env: dict[str, str] | None = None) -> VerdictOptions:
    import os

    p = parser()
    a = p.parse_args(argv)
    modes = tuple(m.strip() for m in a.modes.split(",") if m.strip()) if a.modes else None
    try:
        costs = axis_costs(a.cost_us, (os.environ if env is None else env).get("RVS_COST_US"))
    except CostError as e:
        p.error(str(e))
    if costs and a.target != "local":
        p.error("--cost-us needs --target local: the bench sets each cost in the processes it "
                "starts, and a compose deployment's containers load their own model")
    return VerdictOptions(
        scenario=a.scenario, modes=modes or None, target_reviews_per_s=a.target_rate,
        slo_p99_ms=a.slo_p99_ms, costs=costs,
        phases=QUICK if a.quick else AXIS if costs else Phases(),
        placement=Placement.default(a.service_cpus, a.driver_cpus, a.broker_cpus),
        results=Path(a.results) if a.results else RESULTS, target=a.target, url=a.url,
        bootstrap=a.bootstrap,
        command=" ".join(["python -m bench verdict", *(shlex.quote(x) for x in argv)]))


def main(argv: list[str] | None = None) -> int:
    opts = options(list(sys.argv[1:] if argv is None else argv))
    procs.sigterm_unwinds()
    try:
        _, summary = run(opts)
    except KeyboardInterrupt:
        return 130
    return 0 if summary and summary.get("complete") else 1


if __name__ == "__main__":
    sys.exit(main())
