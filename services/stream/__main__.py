"""``python -m services.stream worker|lean --settings FILE.json [--name worker-0] [--datadir DIR]``

Runs ONE worker process: loads the model once, then either builds the Faust app and its agent
and runs Faust's Worker (``worker``), or runs the lean consumer loop (``lean``,
services/stream/lean.py). ``worker`` with ``engine: "lean"`` in its settings runs the lean loop
too. SIGTERM/SIGINT stop either cleanly. services/stream/launch.py starts N of these.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

ASSIGNMENT_FILE = "assignment.json"


def _worker(args: argparse.Namespace) -> int:
    from services.stream.settings import StreamSettings

    settings = StreamSettings.from_json_file(args.settings)
    if args.bootstrap:
        settings = settings.replace(bootstrap=args.bootstrap)
    level = settings.log_level.upper()
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
    log = logging.getLogger("services.stream")

    t0 = time.perf_counter()
    from services.model import load_model  # the real model, loaded once per worker process

    model = load_model()
    info = getattr(model, "info", {}) or {}
    log.info("model loaded in %.2fs: %s", time.perf_counter() - t0,
             {k: info.get(k) for k in ("name", "test_accuracy", "train_sha256") if k in info})

    datadir = Path(args.datadir) if args.datadir else Path.cwd() / f"faust-{args.name}"
    if args.cmd == "lean" or settings.engine == "lean":
        from services.stream.lean import serve

        settings = settings.replace(engine="lean")
        log.info("lean worker %s pid %d (%s): %s -> %s (dlq %s), shape=%s max_records=%d "
                 "fetch_max_wait_ms=%d cpus=%s", args.name, os.getpid(), settings.lean_client,
                 settings.topic_requests, settings.topic_predictions, settings.topic_dlq,
                 settings.shape, settings.take_max, settings.fetch_max_wait_ms,
                 sorted(os.sched_getaffinity(0)))
        return serve(settings, model.predict_batch, datadir, ASSIGNMENT_FILE)

    from faust.worker import Worker

    from services.stream.app import build_agent, build_app

    datadir.mkdir(parents=True, exist_ok=True)
    app = build_app(settings, datadir=datadir, worker_name=args.name,
                    assignment_file=datadir / ASSIGNMENT_FILE)
    build_agent(app, model.predict_batch)
    log.info("worker %s pid %d: %s -> %s (dlq %s), shape=%s take=%d/%s produce=%s "
             "fetch_max_wait_ms=%d cpus=%s", args.name, os.getpid(), settings.topic_requests,
             settings.topic_predictions, settings.topic_dlq, settings.shape, settings.take_max,
             settings.take_mode if settings.take_mode == "ready"
             else f"within {settings.take_within_s:.3f}s", settings.produce, settings.fetch_max_wait_ms,
             sorted(os.sched_getaffinity(0)))
    worker = Worker(app, loglevel=level, quiet=True, redirect_stdouts=False,
                    override_logging=False, workdir=str(datadir.parent))
    worker.execute_from_commandline()  # runs until SIGTERM/SIGINT; exits the process
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m services.stream", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for cmd, what in (("worker", "run one worker of the settings' engine (Faust by default)"),
                      ("lean", "run one lean worker (a plain consumer loop, lean.py)")):
        w = sub.add_parser(cmd, help=what)
        w.add_argument("--settings", required=True,
                       help="JSON file of StreamSettings (to_dict output)")
        w.add_argument("--name", default="worker-0", help="worker name (logs, client id, datadir)")
        w.add_argument("--datadir", default=None, help="data dir (default ./faust-NAME)")
        w.add_argument("--bootstrap", default=None, help="override settings.bootstrap")
    args = p.parse_args(argv)
    if args.cmd in ("worker", "lean"):
        return _worker(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
