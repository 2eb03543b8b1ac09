"""The calibration phase: measure the reference deployment's capacity, then resolve a scenario
whose load is relative to it (loadgen/relative.py) into the absolute one both modes run.

Why a phase of the run and not a number in the file: how far a fixed client count pushes a
service past its capacity depends on the machine, so the article's self-denial of service showed
on one VM (5.7 % of REST requests failed) and barely on a faster one (0.3 %). Calibrating in the
same run, on the same cores and with the same payload and batch size, pushes every machine
equally far.

The phase deploys the reference mode as ``bench run`` does, drives it closed loop with
``calibration.clients`` clients and no think time (saturated, but queueing far below the client
deadline), and takes its ok operations/s in the measured window.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from loadgen import relative as rel

#: The calibration phase's own client deadline: long, so that no request of a saturated but
#: shallow queue times out and the capacity counts every answer.
CALIBRATION_TIMEOUT_S = 60.0


def calibration_doc(sc) -> dict:
    """The calibration phase's scenario: the reference mode, the scenario's own payload, batch
    size and service settings, a closed loop of ``calibration.clients`` clients."""
    c = sc.calibration
    d = sc.to_dict()
    return {
        "name": f"{sc.name}-calibration",
        "description": f"capacity of {c.mode}: closed loop, {c.clients} clients x "
                       f"{sc.workload.batch_size} reviews, no think time",
        "modes": [c.mode],
        "payload": d["payload"],
        "workload": d["workload"],
        "arrival": {"closed": {"clients": c.clients, "think_s": 0}},
        # a shallow queue (few clients) empties well within the drain
        "timing": {"warmup_s": c.warmup_s, "duration_s": c.duration_s, "drain_s": 10.0},
        "client": {"timeout_s": CALIBRATION_TIMEOUT_S, "retry": {"policy": "none"}},
        "service": {c.mode: d["service"].get(c.mode, {})},
    }


def reference_timeout_s(sc) -> float:
    """The deadline of the reference mode's clients: what the queueing must fill."""
    from services import registry

    driver = registry.impl(sc.calibration.mode).driver
    return sc.client.stream_deadline_s if driver == "stream" else sc.client.timeout_s


def ops_per_s(rec: dict, batch_size: int) -> float:
    """Operations/s of a phase's record: its ok reviews/s over the reviews an operation carries.
    Not the table's ok rows/s: a stream row is one event, so a stream reference with 100-review
    operations would count 100 times too many operations (and get 100 times the clients)."""
    reviews = rec.get("reviews_per_s")
    if reviews is None:
        return float(rec.get("ok_per_s") or 0.0)
    return float(reviews) / max(1, int(batch_size))


def saturate(dep, sup, sc, out: Path, run_id: str, placement, progress,
             timeout_s: float | None = None) -> tuple[rel.Capacity, dict]:
    """Drive a deployment that is up (``dep``) with the calibration phase of ``sc``: its capacity
    and the phase's record (with the CPU of every role: the capacity plan reads the broker's).
    ``timeout_s``: the deadline the Capacity carries (default: the reference mode's)."""
    from bench.ceiling import drive_phase, write_scenario

    c = sc.calibration
    phase_sc = write_scenario(calibration_doc(sc), out / "scenario.yaml")
    rec = drive_phase(dep, sup, phase_sc, out, f"{run_id}-calibration", placement, progress,
                      f"calibration ({c.mode})")
    cap = rel.Capacity(mode=c.mode, ops_per_s=ops_per_s(rec, sc.workload.batch_size),
                       batch_size=sc.workload.batch_size,
                       timeout_s=reference_timeout_s(sc) if timeout_s is None else timeout_s)
    record = {"ok": rec.get("ok"), "failed": rec.get("failed"),
              "service_cpu": (rec.get("cpu") or {}).get("service"), "cpu": rec.get("cpu"),
              "valid": rec.get("valid"), "reviews_per_s": rec.get("reviews_per_s"),
              "service_core_busy": rec.get("service_core_busy"),
              "other_cpu_on_service_cores": rec.get("other_cpu_on_service_cores")}
    return cap, record


def calibrate(sc, run_dir: Path, opts, progress, run_id: str) -> tuple[rel.Capacity, dict]:
    """Deploy (or, with ``--target compose``, attach to) and saturate the reference mode; its
    capacity and the phase's record. ``opts``: bench.run.RunOptions."""
    from bench.ceiling import write_scenario
    from bench.run import PhaseFailed
    from services.launcher import attach, deploy
    from services.procs import LaunchError, Supervisor

    c = sc.calibration
    placement = opts.placement
    out = run_dir / "calibration"
    phase_sc = write_scenario(calibration_doc(sc), out / "scenario.yaml")
    with Supervisor(out / "logs") as sup, contextlib.ExitStack() as stack:
        progress.say(f"[bold]calibration[/]: starting {c.mode} to measure its capacity ...")
        t = time.monotonic()
        try:
            if opts.target == "compose":
                dep = stack.enter_context(attach(c.mode, url=opts.url, bootstrap=opts.bootstrap))
            else:
                dep = stack.enter_context(deploy(
                    c.mode, out / "service", overrides=phase_sc.service.get(c.mode, {}),
                    sup=sup, service_cpus=placement.service, broker_cpus=placement.broker,
                    bootstrap=opts.bootstrap))
        except LaunchError as e:
            raise PhaseFailed("calibration: deploy", str(e).splitlines()[0], out / "logs") from e
        ready_s = time.monotonic() - t
        cap, record = saturate(dep, sup, sc, out, run_id, placement, progress)
    return cap, {"ready_s": round(ready_s, 2), **record}


def resolve_scenario(sc, run_dir: Path, opts, progress, run_id: str):
    """(the absolute scenario, written to ``<run>/scenario.yaml``; meta.json's ``calibration``
    block). A scenario whose load is already absolute comes back unchanged, with None."""
    from bench.ceiling import write_scenario

    if not sc.is_relative:
        return sc, None
    cap, record = calibrate(sc, run_dir, opts, progress, run_id)
    resolved = rel.resolve(sc, cap)
    block = {**rel.describe(sc, resolved, cap), "phase": record,
             "relative_scenario": sc.to_dict()}
    shown = (", ".join(str(s["clients"]) for s in block["steps"]) + " clients"
             if "steps" in block else "rates x " + f"{cap.ops_per_s:,.1f} ops/s")
    progress.say(f"calibration: {cap.mode} serves {cap.ops_per_s:,.2f} ops/s "
                 f"({cap.ops_per_s * cap.batch_size:,.0f} reviews/s); the load becomes {shown}")
    return write_scenario(resolved.to_dict(), run_dir / "scenario.yaml"), block

