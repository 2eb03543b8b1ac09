"""``python -m loadgen``: drive one mode, benchmark the drivers, or inspect a scenario.

    python -m loadgen drive rest   --scenario S --url URL --out DIR --run-id ID [--shards K]
    python -m loadgen drive stream --scenario S --bootstrap HOST:PORT --out DIR --run-id ID
                                   [--topics requests,predictions]
    python -m loadgen capacity [--modes rest,stream] [--seconds 3] [--driver-cpu 1]
    python -m loadgen check S      # validate, print the scenario as run and its plan

Drivers print one JSON line per second (``{"t","phase","sent","ok","failed","in_flight"}``), a
first ``{"event":"start","t0_epoch":...}`` and a last ``{"event":"final",...}`` line; they write
``DIR/requests.parquet`` and ``DIR/driver.json``. Exit code 0 = table written (even if the run is
flagged invalid), 2 = bad arguments/scenario, 1 = driver failure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m loadgen", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("drive", help="drive one mode of a scenario")
    d.add_argument("mode", choices=("rest", "stream"))
    d.add_argument("--scenario", required=True, help="name in scenarios/ or a YAML path")
    d.add_argument("--out", required=True, type=Path, help="folder for requests.parquet etc.")
    d.add_argument("--run-id", required=True)
    d.add_argument("--url", help="REST base URL, e.g. http://127.0.0.1:8080")
    d.add_argument("--path", default="/predict", help="REST path (default /predict)")
    d.add_argument("--bootstrap", help="stream: Kafka bootstrap HOST:PORT")
    d.add_argument("--topics", default="requests,predictions",
                   help="stream: REQUESTS,PREDICTIONS topic names")
    d.add_argument("--start-at", type=float, default=None,
                   help="epoch seconds at which t0 starts (default: now)")
    d.add_argument("--lateness-p99-bound-ms", type=float, default=None,
                   help="run is invalid above this send-lateness p99 (default rest 20, stream 20)")
    d.add_argument("--no-validate", action="store_true",
                   help="accept any 2xx / any answer (no-op targets)")
    d.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback target (default: 127.0.0.1 only)")
    d.add_argument("--quiet", action="store_true", help="no progress lines")
    d.add_argument("--shards", type=int, default=None,
                   help="rest, open loop: driver processes sharing the schedule, each pinned to "
                        "one core of this process's CPU affinity (default: one per core, at "
                        "most 8; 1 = one process). Closed loops run in one process")
    d.add_argument("--shard", default=None, help=argparse.SUPPRESS)   # "k/K": one shard
    c = sub.add_parser("capacity", help="each driver's sustained rate against its no-op target "
                       "and the service's own peak, measured in one run")
    c.add_argument("--modes", default="rest,stream")
    c.add_argument("--seconds", type=float, default=3.0, help="measured seconds per rate step")
    c.add_argument("--max-steps", type=int, default=5, help="rate steps per driver at most")
    c.add_argument("--driver-cpu", default=None,
                   help="the driver's cores, e.g. 1 or 1-3 (REST: one shard each; default: all "
                        "but the first, as the bench places it)")
    c.add_argument("--target-cpu", default=None,
                   help="the service's and the no-op targets' cores (default: the first)")
    c.add_argument("--target-ratio", type=float, default=3.0,
                   help="headroom the driver must have over the service's peak")
    c.add_argument("--rate-rest", type=float, default=None,
                   help="first REST step (default: target ratio x the REST peak)")
    c.add_argument("--rate-stream", type=float, default=None,
                   help="first stream step (default: target ratio x the stream peak)")
    c.add_argument("--no-service", action="store_true",
                   help="skip the services' peaks (drivers only)")
    c.add_argument("--no-profile", action="store_true",
                   help="no py-spy profile of a driver below the target")
    c.add_argument("--out", type=Path, default=None, help="keep the per-step tables here")
    k = sub.add_parser("check", help="validate a scenario; print it as run and its plan")
    k.add_argument("scenario")
    return ap


def _drivable(a):
    """The scenario of ``drive``, or the exit code that says why it cannot be driven."""
    from loadgen.scenario import ScenarioError, load_scenario  # noqa: PLC0415

    try:
        sc = load_scenario(a.scenario)
    except ScenarioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if sc.is_relative:
        print(f"error: {a.scenario}: its load is relative to a capacity measured first "
              f"(arrival unit {sc.arrival.unit!r}); run it with `python -m bench run`, which "
              "calibrates and hands the driver the resolved scenario", file=sys.stderr)
        return 2
    if a.mode == "rest" and not a.url:
        print("error: drive rest needs --url", file=sys.stderr)
        return 2
    if a.mode == "rest" and a.shards is not None and a.shards < 1:
        print("error: --shards must be >= 1", file=sys.stderr)
        return 2
    return sc


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = _parser().parse_args(argv)
    if a.cmd == "drive" and a.mode == "rest":
        if a.shard is None and a.shards != 1:
            # maybe several driver cores: shard processes, or this one again with --shards 1
            # (no Locust imported here: the shards and the single process import it first)
            sc = _drivable(a)
            if isinstance(sc, int):
                return sc
            from loadgen import shards  # noqa: PLC0415
            return shards.main(a, argv, sc)
        # Import Locust (gevent monkey-patching) before anything else gets imported.
        from loadgen import rest_driver  # noqa: PLC0415

    if a.cmd == "check":
        import json

        from loadgen.scenario import ScenarioError, load_scenario
        from loadgen.schedule import plan_open
        try:
            sc = load_scenario(a.scenario)
        except ScenarioError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        out = {"scenario": sc.to_dict()}
        if sc.is_open:
            out["plan"] = plan_open(sc.arrival, sc.timing.horizon_s,
                                    sc.timing.max_requests).describe()
        print(json.dumps(out, indent=2))
        return 0
    if a.cmd == "capacity":
        from loadgen import capacity  # noqa: PLC0415
        return capacity.main(a)
    sc = _drivable(a)
    if isinstance(sc, int):
        return sc
    bound = (a.lateness_p99_bound_ms if a.lateness_p99_bound_ms is not None else 20.0) / 1e3
    if a.mode == "rest":
        rest_driver.check_loopback(a.url, a.allow_remote)
        shard = {}
        if a.shard is not None:   # one part of a schedule spread over processes (loadgen.shards)
            from loadgen.parts import cap_per_shard, parse_part  # noqa: PLC0415
            part = parse_part(a.shard)
            shard = {"part": part, "start_gate": rest_driver.start_from_stdin,
                     "max_in_flight": cap_per_shard(sc.arrival.max_in_flight, part)
                     if sc.is_open else None}
        rest_driver.drive(sc, a.url, a.out, a.run_id, path=a.path, start_at=a.start_at,
                          lateness_p99_bound_s=bound, validate_answers=not a.no_validate,
                          quiet=a.quiet, **shard)
        return 0
    if not a.bootstrap:
        print("error: drive stream needs --bootstrap HOST:PORT", file=sys.stderr)
        return 2
    topics = [t.strip() for t in a.topics.split(",")]
    if len(topics) != 2 or not all(topics):
        print("error: --topics must be REQUESTS,PREDICTIONS", file=sys.stderr)
        return 2
    from loadgen import stream_driver  # noqa: PLC0415
    stream_driver.check_loopback(a.bootstrap, a.allow_remote)
    stream_driver.drive(sc, a.bootstrap, a.out, a.run_id, topics=(topics[0], topics[1]),
                        start_at=a.start_at, lateness_p99_bound_s=bound,
                        validate_answers=not a.no_validate, quiet=a.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
