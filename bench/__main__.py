"""``python -m bench run [SCENARIO ...|--default|--all]``, ``python -m bench ceiling`` and
``python -m bench verdict``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.run import Placement, RunOptions, main_run

#: `make bench`: the article's experiment and a clean latency comparison, ≤ 10 minutes on 2 cores.
DEFAULT_SCENARIOS = ("seed", "steady")


def shipped_scenarios() -> list[str]:
    root = Path(__file__).resolve().parent.parent / "scenarios"
    return sorted(p.stem for p in root.glob("*.yaml"))


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["verdict"]:   # its own options, parsed by bench.verdict
        from bench.verdict import main as verdict_main
        return verdict_main([o for o in argv[1:] if o != "--"])
    p = argparse.ArgumentParser(prog="python -m bench")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run scenarios against both deployments and report")
    r.add_argument("scenarios", nargs="*", help="scenario names or YAML paths")
    r.add_argument("--default", action="store_true", help=f"run {', '.join(DEFAULT_SCENARIOS)}")
    r.add_argument("--all", action="store_true", help="run every shipped scenario")
    r.add_argument("--target", choices=["local", "compose"], default="local")
    r.add_argument("--bootstrap", help="Kafka bootstrap of an existing deployment (compose)")
    r.add_argument("--url", help="REST base URL of an existing deployment (compose)")
    r.add_argument("--service-cpus", help="cores for the service (default: the first)")
    r.add_argument("--driver-cpus", help="cores for the load generator (default: the rest)")
    r.add_argument("--broker-cpus", help="cores for the embedded broker (default: driver's)")
    r.add_argument("--results", default=None, help="results root (default: results/)")
    r.add_argument("--no-report", action="store_true")
    r.add_argument("--no-ceiling", action="store_true", help="skip the in-run ceiling measure")
    r.add_argument("--repeat", type=_positive, default=1, metavar="N",
                   help="run each scenario N times, the modes interleaved (rest, stream; stream, "
                        "rest; ...); the summary gives each figure's median, range and 95%% "
                        "interval over the repeats")
    c = sub.add_parser("ceiling", help="each variant's saturated throughput vs the model ceiling "
                                       "(options: python -m bench ceiling -- -h)")
    c.add_argument("options", nargs=argparse.REMAINDER,
                   help="passed to python -m bench.ceiling (e.g. --variants rest/batch1)")
    sub.add_parser("verdict", help="which deployment to use: capacity, latency, overload and a "
                                   "capacity plan (options: python -m bench verdict -h)")
    args = p.parse_args(argv)

    if args.cmd == "ceiling":
        from bench.ceiling import main as ceiling_main
        return ceiling_main([o for o in args.options if o != "--"])

    names = list(args.scenarios)
    if args.default:
        names += list(DEFAULT_SCENARIOS)
    if args.all:
        names += shipped_scenarios()
    if not names:
        p.error("name a scenario, or pass --default / --all "
                f"(shipped: {', '.join(shipped_scenarios())})")
    if args.target == "compose" and not (args.bootstrap or args.url):
        args.bootstrap = args.bootstrap or "127.0.0.1:9094"
        args.url = args.url or "http://127.0.0.1:8080"
    opts = RunOptions(
        target=args.target, bootstrap=args.bootstrap, url=args.url,
        placement=Placement.default(args.service_cpus, args.driver_cpus, args.broker_cpus),
        measure_ceiling=not args.no_ceiling, report=not args.no_report, repeat=args.repeat,
    )
    if args.results:
        opts.results = Path(args.results)
    opts.results.mkdir(parents=True, exist_ok=True)
    return main_run(names, opts)


if __name__ == "__main__":
    sys.exit(main())
