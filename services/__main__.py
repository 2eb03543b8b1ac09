"""``python -m services up rest|stream|all``: start deployments on 127.0.0.1 and keep them up.

Prints where each mode listens, then waits for Ctrl-C (or --seconds) and stops everything it
started, by PID. A failure to start prints one line that says what to do and exits 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
from pathlib import Path

from services import registry
from services.launcher import MODES, deploy
from services.procs import LaunchError, Supervisor, parse_cpus


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m services")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start one or both deployments and keep them up")
    up.add_argument("mode", choices=[*registry.names(), "all"],
                    help="a registered deployment, or all = the default pair")
    up.add_argument("--run-dir", default="var/up", help="logs and rendered configs go here")
    up.add_argument("--cpus", default=None, help="pin the service to these cores, e.g. 0 or 0-1")
    up.add_argument("--broker-cpus", default=None, help="pin the embedded broker, e.g. 1")
    up.add_argument("--bootstrap", default=None,
                    help="use this Kafka instead of starting the embedded broker")
    up.add_argument("--set", action="append", default=[], metavar="MODE.KEY=JSON",
                    help="override a setting, e.g. rest.processes=2 or stream.shape='\"batch\"'")
    up.add_argument("--seconds", type=float, default=None, help="stop by itself after this long")
    args = p.parse_args(argv)

    names = registry.names()
    overrides: dict[str, dict] = {m: {} for m in names}
    for item in args.set:
        key, _, raw = item.partition("=")
        mode, _, name = key.partition(".")
        if mode not in names or not name or not _:
            p.error(f"--set {item!r}: expected MODE.KEY=VALUE with MODE in {names}")
        try:
            overrides[mode][name] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[mode][name] = raw

    modes = MODES if args.mode == "all" else (args.mode,)
    run_dir = Path(args.run_dir)
    stop = {"now": False}

    def _stop(*_):
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        with Supervisor(run_dir / "logs") as sup, contextlib.ExitStack() as stack:
            for mode in modes:
                dep = stack.enter_context(deploy(
                    mode, run_dir / mode, overrides=overrides[mode], sup=sup,
                    service_cpus=parse_cpus(args.cpus), broker_cpus=parse_cpus(args.broker_cpus),
                    bootstrap=args.bootstrap))
                where = dep.url or f"bootstrap {dep.bootstrap} topics {dep.topics}"
                print(f"{mode}: up at {where} (pids {dep.service_pids})", flush=True)
            print("Ctrl-C stops everything.", flush=True)
            t0 = time.monotonic()
            while not stop["now"]:
                if args.seconds is not None and time.monotonic() - t0 >= args.seconds:
                    break
                time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    except (LaunchError, ValueError) as e:  # ValueError: a bad setting (its message lists the keys)
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
