"""One benchmark run: for each mode in turn, deploy, drive, record, stop; then analyse and report.

Modes never run at the same time (they would share the CPU). With ``repeat`` > 1 the whole
scenario runs that many times, the modes interleaved (rest, stream; stream, rest; ...), each
repeat in a run folder of its own inside the run's (``repeat-<k>/``). The service is pinned to its
cores and the load generator (and the embedded broker, which in the article was its own cluster)
to the others, so that the driver never steals the service's CPU. Every phase writes into the run
folder as it goes: an interrupted run keeps what it had, marked incomplete, and says which phase
failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from analysis.repeats import REPEAT_PREFIX, interleaved
from bench import meta as metamod
from bench.cpu import CoreSampler, CpuSampler
from bench.brokerwatch import BrokerWatch
from bench.calibrate import resolve_scenario
from bench.faults import FaultInjector
from bench.model_ceiling import ModeCeiling
from bench.progress import Progress
from services import procs, registry
from services.procs import LaunchError, Supervisor, parse_cpus

REPO = metamod.REPO
RESULTS = REPO / "results"


class PhaseFailed(RuntimeError):
    """``info``: the mode's meta as far as it got (kept in meta.json of an incomplete run)."""

    def __init__(self, phase: str, detail: str, log: Path | None = None,
                 info: dict | None = None):
        self.phase, self.detail, self.log, self.info = phase, detail, log, info
        where = f" (log: {log})" if log else ""
        super().__init__(f"phase '{phase}' failed: {detail}{where}")


@dataclass
class Placement:
    """Which cores do what. On 2 cores: service on 0; driver and embedded broker on 1."""

    service: tuple[int, ...] | None
    driver: tuple[int, ...] | None
    broker: tuple[int, ...] | None

    @classmethod
    def default(cls, service: str | None = None, driver: str | None = None,
                broker: str | None = None) -> Placement:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2:
            s_default, d_default = str(cpus[0]), ",".join(map(str, cpus[1:]))
        else:  # one core: nothing to separate; say so in meta rather than pretend
            s_default = d_default = str(cpus[0])
        svc = parse_cpus(service or os.environ.get("RVS_SERVICE_CPUS") or s_default)
        drv = parse_cpus(driver or os.environ.get("RVS_DRIVER_CPUS") or d_default)
        brk = parse_cpus(broker or os.environ.get("RVS_BROKER_CPUS") or ",".join(map(str, drv)))
        return cls(svc, drv, brk)

    def to_dict(self) -> dict:
        return {"service_cpus": list(self.service or []), "driver_cpus": list(self.driver or []),
                "broker_cpus": list(self.broker or []),
                "separated": not set(self.service or ()) & set(self.driver or ())}


@dataclass
class RunOptions:
    target: str = "local"                  # local (embedded stack) | compose (given addresses)
    bootstrap: str | None = None           # compose/real Kafka
    url: str | None = None                 # compose/real REST endpoint
    placement: Placement = field(default_factory=Placement.default)
    results: Path = RESULTS
    measure_ceiling: bool = True
    report: bool = True
    quiet: bool = False
    repeat: int = 1                        # runs of the scenario, modes interleaved


def new_run_dir(root: Path, scenario_name: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = root / f"{stamp}-{scenario_name}"
    n = 1
    while path.exists():
        n += 1
        path = root / f"{stamp}-{scenario_name}-{n}"
    path.mkdir(parents=True)
    return path


def _link_latest(root: Path, run_dir: Path) -> None:
    link = root / "latest"
    tmp = root / ".latest.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(run_dir.name)
    tmp.replace(link)


def run_scenario(scenario, opts: RunOptions) -> Path:
    """Run every mode of ``scenario``; return the run folder (complete or not)."""
    from loadgen.scenario import load_scenario  # noqa: F401  (import check: fail early)
    from services.model import load_model

    run_dir = new_run_dir(opts.results, scenario.name)
    _link_latest(opts.results, run_dir)
    progress = Progress(quiet=opts.quiet)
    meta = {
        "run_id": run_dir.name, "scenario": scenario.to_dict(),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": metamod.git_commit(), "machine": metamod.machine(),
        "versions": {"packages": metamod.packages()}, "placement": opts.placement.to_dict(),
        "target": opts.target, "complete": False, "modes": {},
    }
    meta["git_commit"] = meta["git"]["commit"]
    meta_path = run_dir / "meta.json"
    metamod.write_json(meta_path, meta)
    phase, where = "set-up", ""   # where: which repeat, when repeating
    try:
        phase = "model"
        model = load_model()
        meta["model"] = model.info
        if scenario.is_relative:   # loads relative to a capacity: measure it, then resolve
            phase = "calibration"
            scenario, meta["calibration"] = resolve_scenario(scenario, run_dir, opts, progress,
                                                             run_dir.name)
            meta["scenario"] = scenario.to_dict()
            metamod.write_json(meta_path, meta)
        ceilings = None   # the model's own ceiling, measured around each mode on its cores
        if opts.measure_ceiling:
            phase = "ceiling"
            ceilings = ModeCeiling(model, scenario, opts.placement.service or (), progress.say)
        metamod.write_json(meta_path, meta)
        del model
        if opts.repeat == 1:
            for mode in scenario.modes:
                phase = f"{mode}"
                _run_into(mode, scenario, run_dir, meta, opts, progress, ceilings)
            meta["complete"] = all(m.get("complete") for m in meta["modes"].values())
        else:
            meta.pop("modes")
            runs: list[dict] = []
            meta["repeats"] = {"n": opts.repeat, "runs": runs}
            for k, order in enumerate(interleaved(scenario.modes, opts.repeat), 1):
                sub = run_dir / f"{REPEAT_PREFIX}{k}"
                sub.mkdir()
                rmeta = {**meta, "run_id": f"{run_dir.name}/{sub.name}", "modes": {},
                         "repeat": {"k": k, "of": opts.repeat, "order": list(order)}}
                rmeta.pop("repeats")
                runs.append({"dir": sub.name, "order": list(order), "complete": False})
                metamod.write_json(meta_path, meta)
                progress.say(f"[bold]repeat {k} of {opts.repeat}[/]: {', '.join(order)}")
                where = f"repeat {k}: "
                for mode in order:
                    phase = f"{where}{mode}"
                    _run_into(mode, scenario, sub, rmeta, opts, progress, ceilings)
                rmeta["complete"] = all(m.get("complete") for m in rmeta["modes"].values())
                rmeta["ended_utc"] = datetime.now(UTC).isoformat(timespec="seconds")
                metamod.write_json(sub / "meta.json", rmeta)
                runs[-1]["complete"] = rmeta["complete"]
            meta["complete"] = all(r["complete"] for r in runs)
        meta["ended_utc"] = datetime.now(UTC).isoformat(timespec="seconds")
        metamod.write_json(meta_path, meta)
    except KeyboardInterrupt:
        meta["failed_phase"] = phase
        meta["error"] = "interrupted (Ctrl-C or SIGTERM)"
        metamod.write_json(meta_path, meta)
        progress.say(f"[red]interrupted in phase '{phase}'[/]; partial run kept in {run_dir}")
        raise
    except (PhaseFailed, LaunchError, Exception) as e:  # noqa: BLE001 (report, then re-raise)
        own = getattr(e, "phase", None)
        meta["failed_phase"] = where + own if isinstance(own, str) else phase
        meta["error"] = str(e)
        metamod.write_json(meta_path, meta)
        progress.say(f"[red]{phase}: {e}[/]\npartial run kept (incomplete) in {run_dir}")
        raise
    finally:
        if opts.report:
            _report(run_dir, progress)
    return run_dir


def _run_into(mode: str, scenario, folder: Path, meta: dict, opts: RunOptions,
              progress: Progress, ceilings: ModeCeiling | None = None) -> None:
    """Run one mode into ``folder`` (a run, or one repeat of it), keeping its meta.json current;
    with ``ceilings``, the model's ceiling is measured right before and right after it."""
    meta_path = folder / "meta.json"
    meta["modes"][mode] = {"complete": False}
    metamod.write_json(meta_path, meta)
    before = ceilings.before(mode) if ceilings else None
    if before:
        meta["modes"][mode]["ceiling"] = before
        metamod.write_json(meta_path, meta)
    try:
        meta["modes"][mode] = run_mode(mode, scenario, folder, opts, progress,
                                       run_id=str(meta["run_id"]).replace("/", "-"))
    except PhaseFailed as e:
        if e.info is not None:         # what the mode recorded before it failed
            meta["modes"][mode] = {**meta["modes"][mode], **e.info}
            metamod.write_json(meta_path, meta)
        raise
    if ceilings and before:
        meta["modes"][mode]["ceiling"] = ceilings.after(mode, before)
    metamod.write_json(meta_path, meta)


def measure_ceiling(model, scenario, placement: Placement, progress: Progress) -> dict:
    """The model's in-process throughput on the service's cores at batch 1 and its best batch
    size, each the best of short tries (``make ceiling``'s yardstick; bench/model_ceiling.py)."""
    from bench.model_ceiling import ceiling_inputs, measure_batched
    from services.model.bench import DEFAULT_BATCH_SIZES

    texts = ceiling_inputs(scenario.payload, 2000)
    progress.say("measuring the model ceiling on the service cores (best of 4 tries per batch "
                 "size) ...")
    out = dict(measure_batched(model, texts, placement.service or (), DEFAULT_BATCH_SIZES))
    out["cpus"] = list(placement.service or [])
    progress.say(f"ceiling: {out['batched_reviews_per_s']:.0f} reviews/s batched "
                 f"(batch {out['best_batch']}), {out['batch1_reviews_per_s']:.0f} at batch 1")
    return out


def run_mode(mode: str, scenario, run_dir: Path, opts: RunOptions, progress: Progress,
             run_id: str | None = None) -> dict:
    """Deploy ``mode``, drive it with the scenario, stop it. Returns the mode's meta."""
    from services.launcher import attach, deploy

    mode_dir = run_dir / mode
    log_dir = mode_dir / "logs"
    overrides = scenario.service.get(mode, {}) if isinstance(scenario.service, dict) \
        else getattr(scenario.service, mode, {}) or {}
    info: dict = {"complete": False, "service_cpus": list(opts.placement.service or []),
                  "driver_cpus": list(opts.placement.driver or []),
                  "warmup_s": scenario.timing.warmup_s, "duration_s": scenario.timing.duration_s,
                  "drain_s": scenario.timing.drain_s, "faults": []}
    with Supervisor(log_dir) as sup, contextlib.ExitStack() as stack:
        progress.say(f"[bold]{mode}[/]: starting the deployment ...")
        t_start = time.monotonic()
        try:
            if opts.target == "compose":  # someone else runs it: drive it, start nothing
                if scenario.faults:
                    raise LaunchError("fault scenarios need the local stack (the bench kills "
                                      "and pauses processes it started); use TARGET=local")
                dep = stack.enter_context(attach(mode, url=opts.url, bootstrap=opts.bootstrap))
            else:
                dep = stack.enter_context(deploy(
                    mode, mode_dir / "service", overrides=overrides, sup=sup,
                    service_cpus=opts.placement.service, broker_cpus=opts.placement.broker,
                    bootstrap=opts.bootstrap))
        except LaunchError as e:
            raise PhaseFailed(f"{mode}: deploy", str(e).splitlines()[0], log_dir) from e
        kind = registry.impl(mode)
        info.update(kind=dep.kind or registry.resolve(mode).kind, driver_name=dep.driver or kind.driver,
                    engine=dep.engine or kind.engine(dep.settings), settings=dep.settings,
                    versions=dep.versions, broker=dep.broker, processes=dep.processes,
                    topics=dep.topics, workers=kind.workers(dep),
                    ready_s=round(time.monotonic() - t_start, 2))
        progress.say(f"{mode}: ready in {info['ready_s']:.1f}s "
                     f"({dep.address}); driving '{scenario.name}' ...")
        drive_sc = mode_scenario(scenario, mode, mode_dir)
        if drive_sc is not scenario:
            info["client"] = drive_sc.to_dict()["client"]
        argv = driver_argv(dep, drive_sc.source, mode_dir, run_id or run_dir.name)
        drv = sup.start(f"driver-{mode}", argv, cpus=opts.placement.driver)
        groups = {"service": dep.service_pids, "driver": [drv.pid]}
        if dep.broker.get("pid"):
            groups["broker"] = [dep.broker["pid"]]
        injector = FaultInjector.for_mode(mode, scenario, sup=sup, dep=dep, say=progress.say,
                                          driver_log=drv.log_path)
        injector.cpu_groups = groups          # a restarted broker is sampled under its new PID
        injector.start()
        watch = BrokerWatch(sup, dep, planned=injector.broker_planned,
                            on_death=lambda _: _stop_driver(drv)).start()
        sampler = CpuSampler(groups, mode_dir / "cpu.csv").start()
        cores = CoreSampler(opts.placement.service or ()).start()  # others' load on its cores
        total = scenario.timing.warmup_s + scenario.timing.duration_s + scenario.timing.drain_s
        final = None
        try:
            final = progress.follow_driver(mode, drv, total_s=total, limit_s=total + 90)
        finally:
            death = watch.stop()
            info["faults"] = injector.stop()
            sampler.stop(t0_of(mode_dir))
            cores.stop()
            cores.write_csv(mode_dir / "cores.csv", t0_of(mode_dir))
        driver_json = mode_dir / "driver.json"
        if death is not None:
            with contextlib.suppress(OSError, ValueError):
                info["driver"] = json.loads(driver_json.read_text())
                info["t0_epoch"] = info["driver"].get("t0_epoch")
            info["error"] = death.line()
            raise PhaseFailed(f"{mode}: broker", death.line(), death.log, info=info)
        if final is None or not driver_json.exists():
            raise PhaseFailed(f"{mode}: drive", "the driver ended without its final line "
                              "and driver.json", drv.log_path)
        # driver.json is the driver's own record (t0, settings, checks); the final line is
        # only what the console showed.
        driver = json.loads(driver_json.read_text())
        info["t0_epoch"] = driver.get("t0_epoch")
        info["driver"] = driver
        info["end_epoch"] = driver.get("end_epoch", time.time())
        info["complete"] = bool(driver.get("complete", False))
    return info


def mode_scenario(scenario, mode: str, mode_dir: Path):
    """The scenario this mode's driver runs: the scenario itself, or, when the deployment brings
    clients of its own (``client:`` in its settings), a copy with that block laid over the
    scenario's, key by key, written beside the mode's tables."""
    from bench.ceiling import write_scenario

    svc = scenario.service.get(mode, {}) if isinstance(scenario.service, dict) else {}
    _, client = registry.split_client(registry.settings_for(mode, svc))
    if not client:
        return scenario
    doc = scenario.to_dict()
    doc["client"] = {**doc["client"], **client}
    return write_scenario(doc, mode_dir / "scenario.yaml")


def _stop_driver(drv) -> None:
    """SIGTERM: the driver stops sending and still writes what it measured."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(drv.pid, signal.SIGTERM)


def driver_argv(dep, scenario_file: str | Path, out: Path, run_id: str) -> list[str]:
    """The load generator's command line for a deployment: the one way every bench drives. The
    deployment's kind names the driver that speaks its protocol and where it sends."""
    kind = registry.impl(dep.mode)
    argv = [sys.executable, "-m", "loadgen", "drive", dep.driver or kind.driver,
            "--scenario", str(scenario_file), "--out", str(out), "--run-id", run_id,
            *kind.driver_args(dep)]
    if (dep.settings or {}).get("external"):
        argv.append("--allow-remote")  # compose service names are not loopback addresses
    return argv


def t0_of(mode_dir: Path) -> float | None:
    """The driver's t0 (epoch s), so CPU samples share the request table's time axis."""
    try:
        return json.loads((mode_dir / "driver.json").read_text()).get("t0_epoch")
    except (OSError, ValueError):
        return None


def _report(run_dir: Path, progress: Progress) -> None:
    try:
        from analysis.report import build_report
        out = build_report(run_dir)
        progress.show_summary(run_dir, out)
    except Exception as e:  # noqa: BLE001 — a report failure must not hide the run's own error
        progress.say(f"[yellow]report failed: {e}[/] — re-run: make report RUN={run_dir}")


def main_run(names: list[str], opts: RunOptions) -> int:
    from loadgen.scenario import load_scenario

    scenarios = [load_scenario(n) for n in names]  # validate all before running any
    procs.sigterm_unwinds()
    failed = 0
    for sc in scenarios:
        try:
            run_scenario(sc, opts)
        except KeyboardInterrupt:
            return 130
        except Exception:  # noqa: BLE001 — already reported with its phase and log
            failed += 1
    return 1 if failed else 0


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())
