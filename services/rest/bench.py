"""Measure the REST deployment's settings against each other (not a test; prints a table).

    python -m services.rest.bench [--service-cpus 0] [--driver-cpus 1] [--duration 10]
                                  [--only default,tcp,...] [--json out.json]

The stack (real model, real nginx + uWSGI) is pinned to the service cpus; the load generator
(wrk if installed, else a Python keep-alive client) to the driver cpus. Closed loop, a few
connections, bodies made from IMDB test reviews. For each configuration it prints req/s and
reviews/s, latency, non-2xx count, and the in-process ceiling of the model on the same core.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

from services.procs import Supervisor, parse_cpus
from services.rest.launch import start
from services.rest.settings import RestSettings

#: name -> (settings overrides, batch sizes)
CONFIGS: dict[str, tuple[dict, tuple[int, ...]]] = {
    "default": ({}, (1, 100, 1000)),
    "tcp": ({"uwsgi_socket": "tcp"}, (1, 100)),
    "unix+keepalive16": ({"upstream_keepalive": 16}, (1,)),
    "tcp+keepalive16": ({"uwsgi_socket": "tcp", "upstream_keepalive": 16}, (1,)),
    "threads2": ({"threads": 2}, (1, 100)),
    "processes2": ({"processes": 2}, (1, 100)),
    "access_log": ({"access_log": True}, (1,)),
    "request_log": ({"request_log": True}, (1,)),
    "preload": ({"lazy_apps": False}, (1,)),
}

WRK_LUA = r"""
local bodies = {}
local i = 0
init = function(args)
  local f = assert(io.open(args[1], "r"))
  for line in f:lines() do
    bodies[#bodies + 1] = wrk.format("POST", "/predict",
      {["Content-Type"] = "application/json"}, line)
  end
  f:close()
end
request = function()
  i = i % #bodies + 1
  return bodies[i]
end
done = function(summary, latency, requests)
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "status_errors": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def _pin_child(cpus):
    return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None


def make_bodies(batch: int, n_reviews: int, seed: int = 1) -> list[bytes]:
    from services.model import sample_reviews
    texts, _ = sample_reviews(n_reviews, seed, "test")
    if batch == 1:
        return [orjson.dumps({"id": f"r{i}", "text": t}) for i, t in enumerate(texts)]
    return [orjson.dumps({"instances": [{"id": f"r{j}-{k}", "text": texts[(j * batch + k)
                                                                     % len(texts)]}
                                        for k in range(batch)]})
            for j in range(max(1, n_reviews // batch))]


def run_wrk(url: str, bodies_file: Path, *, conns: int, duration: float, cpus) -> dict:
    lua = bodies_file.with_suffix(".lua")
    lua.write_text(WRK_LUA)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{max(1, int(duration))}s", "--timeout", "30s",
         "-s", str(lua), url + "/predict", "--", str(bodies_file)],
        capture_output=True, text=True, preexec_fn=_pin_child(cpus), timeout=duration + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith('{"requests"')), None)
    if line is None:
        raise RuntimeError(f"wrk gave no summary:\n{out.stdout}\n{out.stderr}")
    d = json.loads(line)
    secs = d["duration_us"] / 1e6
    errs = sum(d[k] for k in ("status_errors", "connect_errors", "read_errors",
                              "write_errors", "timeouts"))
    return {"rps": d["requests"] / secs, "requests": d["requests"], "errors": errs,
            "p50_ms": d["p50_us"] / 1000, "p99_ms": d["p99_us"] / 1000, "client": "wrk"}


def run_python(url: str, bodies: list[bytes], *, conns: int, duration: float, cpus) -> dict:
    """Fallback closed-loop client: ``conns`` threads, one keep-alive connection each."""
    import http.client
    if cpus:
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, cpus)
    host, port = url.split("//", 1)[1].split(":")
    lat: list[float] = []
    errors = [0]
    stop = time.monotonic() + duration

    def worker(k: int) -> None:
        c = http.client.HTTPConnection(host, int(port), timeout=30)
        i = k
        while time.monotonic() < stop:
            b = bodies[i % len(bodies)]
            i += conns
            t = time.perf_counter()
            c.request("POST", "/predict", body=b, headers={"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            lat.append(time.perf_counter() - t)
            if r.status != 200:
                errors[0] += 1
        c.close()

    t0 = time.monotonic()
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    secs = time.monotonic() - t0
    if cpus:
        os.sched_setaffinity(0, before)
    lat.sort()
    return {"rps": len(lat) / secs, "requests": len(lat), "errors": errors[0],
            "p50_ms": 1000 * lat[len(lat) // 2], "p99_ms": 1000 * lat[int(len(lat) * .99)],
            "client": "python"}


def cpu_ceiling(model, texts, cpus, batches=(1, 100, 1000), seconds: float = 2.0) -> dict:
    """In-process reviews per CPU-second (thread CPU time, pinned): unlike a wall-clock rate it
    does not drop when something else shares the core, so it compares with the service's
    reviews per service-CPU-second even on a busy machine."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    out = {}
    try:
        for b in batches:
            chunks = [[texts[(j * b + k) % len(texts)] for k in range(b)]
                      for j in range(max(1, min(64, 4096 // b)))]
            model.predict_batch(chunks[0])
            n = i = 0
            w0, c0 = time.perf_counter(), time.thread_time()
            while time.perf_counter() - w0 < seconds:
                model.predict_batch(chunks[i % len(chunks)])
                i += 1
                n += b
            out[b] = n / (time.thread_time() - c0)
    finally:
        os.sched_setaffinity(0, before)
    return out


def service_cpu_s(ep) -> float:
    """CPU seconds (user + system) used so far by nginx and uWSGI, masters and workers."""
    import psutil
    total = 0.0
    for root in (ep.uwsgi_pid, ep.nginx_pid):
        try:
            p = psutil.Process(root)
            procs = [p, *p.children()]
        except psutil.NoSuchProcess:
            continue
        for q in procs:
            try:
                t = q.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
    return total


def core_busy_s(cpus) -> float:
    """Busy (non-idle) seconds of ``cpus`` since boot, from /proc/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    busy = 0
    for line in Path("/proc/stat").read_text().splitlines():
        parts = line.split()
        if parts[0].startswith("cpu") and parts[0] != "cpu" and int(parts[0][3:]) in cpus:
            vals = list(map(int, parts[1:]))
            busy += sum(vals) - vals[3] - vals[4]  # minus idle and iowait
    return busy / tick


def memory(ep) -> dict:
    import psutil
    pss = uss = 0
    for pid in [ep.uwsgi_pid, *ep.worker_pids()]:
        m = psutil.Process(pid).memory_full_info()
        pss += m.pss
        uss += m.uss
    return {"uwsgi_pss_mb": round(pss / 2**20, 1), "uwsgi_uss_mb": round(uss / 2**20, 1)}


def upstream_conns(ep) -> int:
    """Established connections nginx's workers hold to uWSGI right now (TCP or unix)."""
    import psutil
    n = 0
    for c in psutil.Process(ep.nginx_pid).children():
        for k in c.net_connections(kind="all"):
            if k.status == psutil.CONN_ESTABLISHED and k.raddr and (
                    (isinstance(k.raddr, str) and k.raddr.endswith("uwsgi.sock"))
                    or (not isinstance(k.raddr, str)
                        and k.raddr.port == ep.settings.get("uwsgi_port"))):
                n += 1
    return n


def measure_point(ep, b, drive, args, scpu) -> dict:
    drive(args.warmup)
    c0, b0, t0 = service_cpu_s(ep), core_busy_s(scpu), time.monotonic()
    r = drive(args.duration)
    wall = time.monotonic() - t0
    ours = service_cpu_s(ep) - c0
    r["cpu_ms_per_req"] = 1000 * ours / max(1, r["requests"])
    r["service_cpu_pct"] = 100 * ours / wall
    r["foreign_cpu_pct"] = 100 * max(0.0, core_busy_s(scpu) - b0 - ours) / wall
    return r


def memory_compare(scpu, dcpu, processes: int = 2) -> None:
    """lazy-apps (load after fork, per worker) vs preload in the master (copy-on-write)."""
    import http.client
    body = make_bodies(100, 100)[0]
    with tempfile.TemporaryDirectory(prefix="rvs-rest-mem-") as tmp:
        for lazy in (True, False):
            d = Path(tmp) / f"lazy-{lazy}"
            with Supervisor(d / "logs") as sup:
                ep = start(sup, RestSettings(processes=processes, lazy_apps=lazy), d / "run",
                           cpus=scpu, timeout=60)
                before = memory(ep)
                host, port = ep.url.split("//", 1)[1].split(":")
                for _ in range(50 * processes):  # touch the model in every worker
                    c = http.client.HTTPConnection(host, int(port), timeout=30)
                    c.request("POST", "/predict", body=body)
                    c.getresponse().read()
                    c.close()
                after = memory(ep)
                print(json.dumps({"lazy_apps": lazy, "processes": processes,
                                  "ready_s": ep.ready_s, "at_start": before,
                                  "after_5000_predictions": after}), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m services.rest.bench")
    ap.add_argument("--service-cpus", default="0")
    ap.add_argument("--driver-cpus", default="1")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved rounds over all configs (medians are reported)")
    ap.add_argument("--only", default="", help="comma-separated config names: "
                    + ",".join(CONFIGS))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--memory", action="store_true",
                    help="only compare memory/start time of lazy-apps vs preload (2 workers)")
    args = ap.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as in the workers (blas_threads)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    scpu = list(parse_cpus(args.service_cpus))
    dcpu = list(parse_cpus(args.driver_cpus))
    if args.memory:
        memory_compare(scpu, dcpu)
        return 0
    names = [n for n in args.only.split(",") if n] or list(CONFIGS)
    use_wrk = shutil.which("wrk") is not None
    print(f"service cpus {scpu}, driver cpus {dcpu}, client "
          f"{'wrk' if use_wrk else 'python'}, {args.duration:.0f}s per point, "
          f"{args.rounds} interleaved rounds", flush=True)

    from services.model import load_model, sample_reviews
    from services.model.bench import measure_ceiling
    model = load_model()
    ctexts, _ = sample_reviews(2000, 2, "test")
    ceilings: list[dict] = []
    points: dict[tuple[str, int], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="rvs-rest-bench-") as tmp:
        tmp = Path(tmp)
        bodies = {b: make_bodies(b, {1: 2000, 100: 5000, 1000: 10000}[b]) for b in (1, 100, 1000)}
        files = {}
        for b, bs in bodies.items():
            files[b] = tmp / f"bodies-{b}.jsonl"
            files[b].write_bytes(b"\n".join(bs) + b"\n")
        for rnd in range(args.rounds):
            c = measure_ceiling(model, ctexts, scpu, 2.0, batch_sizes=(100, 1000))
            c["reviews_per_cpu_s_by_batch"] = {str(b): round(v, 1) for b, v in
                                               cpu_ceiling(model, ctexts, scpu).items()}
            ceilings.append(c)
            print(f"round {rnd}: in-process ceiling (wall) {c['reviews_per_s_by_batch']}, "
                  f"(per CPU-s) {c['reviews_per_cpu_s_by_batch']}", flush=True)
            for name in names:
                overrides, batches = CONFIGS[name]
                d = tmp / f"{name}-{rnd}"
                with Supervisor(d / "logs") as sup:
                    ep = start(sup, RestSettings.from_dict(overrides), d / "run", cpus=scpu,
                               timeout=60)
                    mem = memory(ep)
                    for b in batches:
                        conns = 8 if b == 1 else 4
                        if use_wrk:
                            def drive(dur, b=b, conns=conns, ep=ep):
                                return run_wrk(ep.url, files[b], conns=conns, duration=dur,
                                               cpus=dcpu)
                        else:
                            def drive(dur, b=b, conns=conns, ep=ep):
                                return run_python(ep.url, bodies[b], conns=conns, duration=dur,
                                                  cpus=dcpu)
                        r = measure_point(ep, b, drive, args, scpu)
                        r.update(mem, ready_s=ep.ready_s, conns=conns)
                        if "keepalive" in name:
                            r["idle_upstream_conns"] = upstream_conns(ep)
                        points.setdefault((name, b), []).append(r)
                        print(json.dumps({"round": rnd, "config": name, "batch": b,
                                          **{k: (round(v, 3) if isinstance(v, float) else v)
                                             for k, v in r.items()}}), flush=True)
    med = statistics.median
    ceil = {b: max(c["reviews_per_s_by_batch"][str(b)] for c in ceilings) for b in (1, 100, 1000)}
    ceil_cpu = {b: med(c["reviews_per_cpu_s_by_batch"][str(b)] for c in ceilings)
                for b in (1, 100, 1000)}
    rows = []
    for (name, b), rs in points.items():
        rps = med(r["rps"] for r in rs)
        cpu = med(r["cpu_ms_per_req"] for r in rs)
        rows.append({
            "config": name, "batch": b, "req_per_s": round(rps, 1),
            "reviews_per_s": round(rps * b, 1), "of_ceiling": round(rps * b / ceil[b], 3),
            "all_rps": [round(r["rps"], 1) for r in rs],
            "p50_ms": round(med(r["p50_ms"] for r in rs), 2),
            "p99_ms": round(med(r["p99_ms"] for r in rs), 2),
            "errors": sum(r["errors"] for r in rs),
            "cpu_ms_per_req": round(cpu, 3),
            "reviews_per_cpu_s": round(1000 * b / cpu, 1),
            "of_cpu_ceiling": round(1000 * b / cpu / ceil_cpu[b], 3),
            "best_round_req_per_s": round(min(rs, key=lambda r: r["foreign_cpu_pct"])["rps"], 1),
            "best_round_foreign_cpu_pct": round(min(r["foreign_cpu_pct"] for r in rs), 1),
            "foreign_cpu_pct_max": round(max(r["foreign_cpu_pct"] for r in rs), 1),
            "uwsgi_pss_mb": rs[-1]["uwsgi_pss_mb"], "ready_s": med(r["ready_s"] for r in rs),
            **({"idle_upstream_conns": max(r["idle_upstream_conns"] for r in rs)}
               if "idle_upstream_conns" in rs[0] else {}),
        })
    print()
    print("in-process ceiling, best round (reviews/s wall): "
          + ", ".join(f"batch {b}: {v:,.0f}" for b, v in ceil.items())
          + "; median (reviews per CPU-s): "
          + ", ".join(f"batch {b}: {v:,.0f}" for b, v in ceil_cpu.items()))
    print("| config | batch | req/s median | req/s per round | req/s in quietest round "
          "(foreign CPU %) | reviews/s | p50 ms | p99 ms | service CPU ms/req | "
          "reviews per service CPU-s | of in-process per-CPU ceiling | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['batch']} | {r['req_per_s']:,.0f} | {r['all_rps']} | "
              f"{r['best_round_req_per_s']:,.0f} ({r['best_round_foreign_cpu_pct']}) | "
              f"{r['reviews_per_s']:,.0f} | {r['p50_ms']} | {r['p99_ms']} | "
              f"{r['cpu_ms_per_req']} | {r['reviews_per_cpu_s']:,.0f} | "
              f"{r['of_cpu_ceiling']:.0%} | {r['errors']} |")
    if args.json:
        args.json.write_text(json.dumps({"ceilings": ceilings, "ceiling_median": ceil,
                                         "rows": rows,
                                         "points": {f"{n}/{b}": v for (n, b), v in
                                                    points.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
