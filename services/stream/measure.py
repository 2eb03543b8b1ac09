"""Measure the stream deployment's knobs on this machine and print a table (not a test).

    .venv/bin/python -m services.stream.measure [--n 30000] [--reps 3] [--only SUBSTR] [--json OUT]

Layout (2 cores): Faust worker pinned to core 0; the embedded broker (RVS_BROKER) + this driver (a confluent-kafka producer
and consumer) on core 1. For every configuration: a fresh broker and fresh topics, one worker,
the REAL model (services.model.load_model(); set RVS_MODEL_DIR to use another artifact), then

* light-load latency: sequential round trips (send one request, wait for its prediction);
* throughput: a backlog of N test reviews produced at once, events/s = N / (last answer - first
  send), with the worker's and the broker's CPU use over that window (a worker below ~95% busy
  means the bottleneck was elsewhere: broker or driver on core 1).

The ceiling is the in-process ``predict_batch`` on core 0 (batches of 256), reviews/s, measured
again right before each configuration's throughput runs, so that %ceil compares like with like.
Other processes on the machine spoil every figure: the script waits for an idle machine before
each configuration (``--quiet-wait``) and prints the CPU others used meanwhile (``other%``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

from services import procs
from services.broker import start_broker
from services.stream import launch
from services.stream.client import StreamClient
from services.stream.settings import StreamSettings, broker_defaults

WORKER_CPU, DRIVER_CPU = 0, 1
MODEL_CPU_US: float | None = None

# (name, overrides, latency round trips, throughput?)
CONFIGS: list[tuple[str, dict, int, bool]] = [
    ("event, awaited send", {"shape": "event", "produce": "send"}, 40, True),
    ("event, direct", {"shape": "event", "produce": "direct"}, 40, True),
    ("event, direct, fetch wait 1500 ms (Faust)", {"shape": "event", "produce": "direct",
                                                   "fetch_max_wait_ms": 1500}, 15, False),
    ("take 64/50ms, awaited send (prototype)", {"take_max": 64, "take_within_s": 0.05,
                                                "take_mode": "within", "produce": "send"}, 20, True),
    ("take 64/10ms, direct", {"take_max": 64, "take_within_s": 0.01, "take_mode": "within"}, 0, True),
    ("take 256/10ms, direct", {"take_max": 256, "take_within_s": 0.01, "take_mode": "within"},
     40, True),
    ("take 256/50ms, direct", {"take_max": 256, "take_within_s": 0.05, "take_mode": "within"}, 20, True),
    ("take 256/10ms, direct, fetch wait 1500 ms", {"take_max": 256, "take_mode": "within",
                                                  "fetch_max_wait_ms": 1500},
     15, False),
    ("take 256/10ms, awaited send", {"take_max": 256, "take_mode": "within", "produce": "send"}, 0, True),
    ("take 256/10ms, send_soon", {"take_max": 256, "take_mode": "within", "produce": "send_soon"}, 0, True),
    ("take 256/10ms, buffer 4096 (Faust default)", {"take_max": 256, "take_mode": "within",
                                                    "stream_buffer_maxsize": 4096}, 0, True),
    ("take 256/10ms, max_poll_records None (Faust default)",
     {"take_max": 256, "take_mode": "within", "broker_max_poll_records": None}, 0, True),
    ("take 1024/10ms, direct", {"take_max": 1024, "take_within_s": 0.01, "take_mode": "within"}, 0, True),
    ("take_ready 256, direct (default)", {"take_max": 256, "take_mode": "ready"}, 40, True),
    ("take_ready 256, direct, fetch wait 1500 ms", {"take_max": 256, "take_mode": "ready",
                                                   "fetch_max_wait_ms": 1500}, 15, False),
    ("take_ready 256, direct, fetch wait 10 ms", {"take_max": 256, "take_mode": "ready",
                                                 "fetch_max_wait_ms": 10}, 15, False),
    ("take_ready 256, direct, exactly-once", {"take_max": 256, "take_mode": "ready",
                                              "processing_guarantee": "exactly_once"}, 40, True),
    # the same deployment on the lean engine (services/stream/lean.py), and Faust as it ships
    ("faust default (take 256/5ms, direct)", {}, 20, True),
    ("faust default, cython_optimizations", {"extra_faust": {"cython_optimizations": True}},
     20, True),
    ("lean aiokafka 256", {"engine": "lean"}, 20, True),
    ("lean confluent 256", {"engine": "lean", "lean_client": "confluent"}, 20, True),
    ("lean aiokafka event", {"engine": "lean", "shape": "event"}, 0, True),
]


def ceiling(texts: list[str], batch: int = 256, seconds: float = 3.0) -> float:
    """In-process reviews/s of the real model on WORKER_CPU, batches of ``batch``."""
    from services.model import load_model

    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {WORKER_CPU})
    try:
        m = load_model()
        m.predict_batch(texts[:batch])
        n, t0, c0 = 0, time.perf_counter(), time.thread_time()
        i = 0
        while time.perf_counter() - t0 < seconds:
            chunk = texts[i:i + batch] or texts[:batch]
            i = (i + batch) % len(texts)
            m.predict_batch(chunk)
            n += len(chunk)
        global MODEL_CPU_US  # the model's own CPU per review: the yardstick of wCPU µs/ev
        MODEL_CPU_US = (time.thread_time() - c0) / n * 1e6
        return n / (time.perf_counter() - t0)
    finally:
        os.sched_setaffinity(0, before)


def _cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def _busy_all() -> float:
    """CPU seconds used by everything on the machine so far (all cores)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)


def wait_quiet(max_wait_s: float, threshold_pct: float = 15.0) -> float:
    """Wait (up to max_wait_s) until the machine is idle: other people's benchmarks on the same
    cores would be measured too. Returns the last machine-wide CPU% seen (100 = one core)."""
    deadline = time.monotonic() + max_wait_s
    while True:
        busy = psutil.cpu_percent(interval=1.0) * psutil.cpu_count()
        if busy < threshold_pct or time.monotonic() > deadline:
            return busy


def run_config(name: str, overrides: dict, n_lat: int, do_tp: bool, texts: list[str], n: int,
               reps: int, root: Path, quiet_wait_s: float = 0.0) -> dict:
    run = root / f"{len(list(root.iterdir())):02d}"
    run.mkdir()
    out: dict = {"name": name, "overrides": overrides}
    with procs.Supervisor(run / "logs") as sup:
        b = start_broker(sup, run, cpus=[DRIVER_CPU])
        s = StreamSettings.from_dict({"workers": 1, **broker_defaults(b.name), **overrides})
        ep = launch.start(sup, s, run, bootstrap=b.bootstrap, cpus=[WORKER_CPU], timeout_s=60)
        wpid = ep.worker_pids[0]
        out["idle_before_pct"] = round(wait_quiet(quiet_wait_s)) if quiet_wait_s else None
        if do_tp:  # the ceiling under the same conditions, right before the throughput runs
            out["ceiling"] = round(ceiling(texts, seconds=2.0))
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {DRIVER_CPU})
        try:
            with StreamClient(b.bootstrap, linger_ms=0) as c:
                if n_lat:
                    lat = [c.roundtrip(f"lat-{i}", texts[i % len(texts)]) * 1e3
                           for i in range(n_lat + 1)][1:]
                    lat.sort()
                    out["latency_ms"] = {"p50": round(statistics.median(lat), 1),
                                         "p99": round(lat[min(len(lat) - 1,
                                                              int(0.99 * len(lat)))], 1),
                                         "n": len(lat)}
                if do_tp:
                    rates, wcpu, bcpu, ocpu, wus = [], [], [], [], []
                    me = os.getpid()
                    for r in range(reps):
                        ids = [f"tp{r}-{uuid.uuid4().hex[:4]}-{i}" for i in range(n)]
                        w0, b0, d0, a0 = _cpu(wpid), _cpu(b.pid), _cpu(me), _busy_all()
                        t0 = time.time()
                        c.send_many(zip(ids, (texts[i % len(texts)] for i in range(n))))
                        c.flush()
                        missing = c.wait_for(ids, timeout=max(60.0, n / 300))
                        if missing:
                            raise RuntimeError(f"{name}: {len(missing)} of {n} unanswered")
                        t1 = max(c.received_at[i] for i in ids)
                        rates.append(n / (t1 - t0))
                        wcpu.append((_cpu(wpid) - w0) / (t1 - t0) * 100)
                        wus.append((_cpu(wpid) - w0) / n * 1e6)   # worker CPU per event
                        bcpu.append((_cpu(b.pid) - b0) / (t1 - t0) * 100)
                        ours = (_cpu(wpid) - w0) + (_cpu(b.pid) - b0) + (_cpu(me) - d0)
                        ocpu.append(max(0.0, (_busy_all() - a0 - ours) / (time.time() - t0) * 100))
                    out["events_per_s"] = round(statistics.median(rates))
                    out["events_per_s_all"] = [round(x) for x in rates]
                    out["worker_cpu_pct"] = round(statistics.median(wcpu))
                    out["worker_cpu_us_per_event"] = round(statistics.median(wus), 1)
                    out["broker_cpu_pct"] = round(statistics.median(bcpu))
                    out["others_cpu_pct"] = round(max(ocpu))
                    out["duplicates"] = c.duplicates
        finally:
            os.sched_setaffinity(0, before)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m services.stream.measure", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=30_000, help="requests per throughput repetition")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--only", default=None,
                   help="run configs whose name contains this ('a|b': either)")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--quiet-wait", type=float, default=120.0,
                   help="wait up to this many seconds for an idle machine before each config")
    args = p.parse_args(argv)
    if len(os.sched_getaffinity(0)) < 2:
        print("needs 2 cores (worker on core 0, broker + driver on core 1)", file=sys.stderr)
        return 2
    from services.model import sample_reviews

    texts, _ = sample_reviews(2000, 1)
    ceil = ceiling(texts)
    print(f"ceiling: in-process predict_batch(256) on core {WORKER_CPU}: {ceil:,.0f} reviews/s, "
          f"{MODEL_CPU_US:.0f} µs of CPU per review", flush=True)
    results = {"ceiling_reviews_per_s": round(ceil), "n": args.n, "reps": args.reps,
               "configs": []}
    hdr = f"{'configuration':55s} {'events/s':>9s} {'ceiling':>8s} {'%ceil':>6s} {'wCPU%':>6s} " \
          f"{'wCPU µs/ev':>10s} " \
          f"{'bCPU%':>6s} {'other%':>6s} {'p50 ms':>7s} {'p99 ms':>7s}"
    print(hdr, flush=True)
    with tempfile.TemporaryDirectory(prefix="rvs-measure-") as tmp:
        for name, ov, n_lat, do_tp in CONFIGS:
            if args.only and not any(o in name for o in args.only.split("|")):
                continue
            try:
                r = run_config(name, ov, n_lat, do_tp, texts, args.n, args.reps, Path(tmp),
                               args.quiet_wait)
            except Exception as e:  # noqa: BLE001 - one failing config must not hide the rest
                print(f"{name:55s} FAILED: {str(e).splitlines()[0]}", flush=True)
                continue
            results["configs"].append(r)
            eps = r.get("events_per_s")
            c = r.get("ceiling")
            lat = r.get("latency_ms", {})
            print(f"{name:55s} {eps if eps else '-':>9} {c if c else '-':>8} "
                  f"{(f'{eps / c * 100:.0f}' if eps else '-'):>6s} "
                  f"{r.get('worker_cpu_pct', '-'):>6} {r.get('worker_cpu_us_per_event', '-'):>10} "
                  f"{r.get('broker_cpu_pct', '-'):>6} "
                  f"{r.get('others_cpu_pct', '-'):>6} "
                  f"{lat.get('p50', '-'):>7} {lat.get('p99', '-'):>7}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
