"""Driver capacity: the highest rate each driver sustains *with accurate latency* against a no-op
target, so a benchmark never mistakes the load generator's limit for the service's.

* REST: the REST driver (Locust FastHttpSession, open loop, batch 1, 1.3 KB synthetic reviews)
  against a real nginx that answers ``POST /predict`` with a canned JSON 200.
* stream: the stream driver against a fresh Tansu broker with one no-op topic: the driver
  produces to it and consumes the same topic as its "predictions" (an echo with no service), so
  its producer *and* its consumer are measured.

The target is pinned to ``--target-cpu`` (0), the driver (a child process, as in a real run) to
``--driver-cpu`` (1). For each rate step the driver runs ``--seconds`` of open-loop Poisson
arrivals; a step is *sustained* when the run is valid (send lateness p99 <= 20 ms, nothing
``generator_saturated``), >= 99.9 % of requests succeed, and the achieved send rate is within 2 %
of the planned one. Prints one JSON line per step and a summary.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import yaml

from services import procs

REST_RATES = (1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000)
STREAM_RATES = (5000, 10000, 20000, 30000, 40000, 50000, 60000, 80000)


def _scenario(path: Path, name: str, rate: float, seconds: float, timeout_s: float) -> Path:
    doc = {
        "name": name, "description": f"driver capacity step at {rate:g} ops/s",
        "payload": {"source": "synthetic", "sample": 1000, "seed": 1, "text_bytes": 1300},
        "workload": {"batch_size": 1},
        "arrival": {"open": {"process": "poisson", "seed": 1,
                             "rate": {"shape": "constant", "ops_per_s": rate},
                             "max_in_flight": 4000, "max_lateness_s": 1.0}},
        "timing": {"warmup_s": 1.0, "duration_s": seconds, "drain_s": 5.0},
        "client": {"timeout_s": timeout_s, "retry": {"policy": "none"}},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _run_driver(sup: procs.Supervisor, argv: list[str], out: Path, cpus, timeout: float) -> dict:
    import sys
    proc = sup.start(f"driver-{out.name}", [sys.executable, "-m", "loadgen", *argv,
                                            "--out", str(out), "--quiet", "--no-validate"],
                     cpus=cpus, cwd=str(Path(__file__).resolve().parent.parent))
    try:
        proc.popen.wait(timeout=timeout)
    finally:
        sup.stop(proc)
    if proc.popen.returncode != 0:
        raise procs.LaunchError(f"driver failed ({proc.popen.returncode}): {proc.log_tail(20)}")
    return json.loads((out / "driver.json").read_text())


def _step_result(mode: str, rate: float, d: dict, seconds: float) -> dict:
    c = d["counts"]
    sent_rate = c["requests"] / (seconds + 1.0)
    ok_frac = c["ok"] / c["requests"] if c["requests"] else 0.0
    sustained = bool(d["valid"] and ok_frac >= 0.999 and abs(sent_rate / rate - 1) <= 0.02)
    lat = d.get("latency_ok_ms") or {}
    if mode == "rest":
        rt = d["locust"]["response_time_ms"]
        svc = {"p50": rt["ours_p50"], "p99": rt["ours_p99"]}
    else:
        svc = {"p50": lat.get("p50"), "p99": lat.get("p99")}
    return {"mode": mode, "rate": rate, "sustained": sustained, "sent_per_s": round(sent_rate, 1),
            "ok_fraction": round(ok_frac, 5), "valid": d["valid"],
            "invalid_reasons": d["invalid_reasons"],
            "lateness_ms": {k: (None if d["lateness_s"][k] is None
                                else round(d["lateness_s"][k] * 1e3, 3))
                            for k in ("p50", "p99", "max")},
            "round_trip_ms": svc, "driver_cpu_percent": d["cpu"]["percent_mean"],
            "driver_cpu_max_1s": d["cpu"]["percent_max_1s"]}


def run(modes=("rest", "stream"), seconds: float = 8.0, driver_cpu="1", target_cpu="0",
        rates_rest=REST_RATES, rates_stream=STREAM_RATES, keep: Path | None = None) -> dict:
    from services.broker import create_topics, start_broker

    from loadgen.noop import start_noop_nginx

    dcpu = procs.parse_cpus(driver_cpu)
    tcpu = procs.parse_cpus(target_cpu)
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="rvs-capacity-"))
    work.mkdir(parents=True, exist_ok=True)
    summary: dict = {"seconds_per_step": seconds, "driver_cpus": list(dcpu),
                     "target_cpus": list(tcpu), "steps": [], "best": {}}
    with procs.Supervisor(work / "logs") as sup:
        if "rest" in modes:
            target = start_noop_nginx(sup, work / "nginx", cpus=tcpu)
            for rate in rates_rest:
                sc = _scenario(work / f"rest-{rate}.yaml", f"cap-rest-{rate}", rate, seconds, 2.0)
                d = _run_driver(sup, ["drive", "rest", "--scenario", str(sc), "--url", target.url,
                                      "--run-id", f"cap-rest-{rate}"],
                                work / f"rest-{rate}", dcpu, timeout=seconds + 60)
                r = _step_result("rest", rate, d, seconds)
                summary["steps"].append(r)
                print(json.dumps(r), flush=True)
                if r["sustained"]:
                    summary["best"]["rest"] = r
                else:
                    break
            sup.stop(target.proc)
        if "stream" in modes:
            for rate in rates_stream:
                broker = start_broker(sup, work, cpus=tcpu, name=f"broker-{rate}")
                topic = f"noop-{rate}"
                create_topics(broker.bootstrap, {topic: 4})
                sc = _scenario(work / f"stream-{rate}.yaml", f"cap-stream-{rate}", rate, seconds,
                               5.0)
                d = _run_driver(sup, ["drive", "stream", "--scenario", str(sc), "--bootstrap",
                                      broker.bootstrap, "--topics", f"{topic},{topic}",
                                      "--run-id", f"cap-stream-{rate}"],
                                work / f"stream-{rate}", dcpu, timeout=seconds + 90)
                for p in list(sup.procs):
                    if p.pid == broker.pid:
                        sup.stop(p)
                r = _step_result("stream", rate, d, seconds)
                summary["steps"].append(r)
                print(json.dumps(r), flush=True)
                if r["sustained"]:
                    summary["best"]["stream"] = r
                else:
                    break
    summary["work_dir"] = str(work)
    return summary


def main(args) -> int:
    modes = tuple(m.strip() for m in args.modes.split(","))
    rr = tuple(int(x) for x in args.rates_rest.split(",")) if args.rates_rest else REST_RATES
    rs = tuple(int(x) for x in args.rates_stream.split(",")) if args.rates_stream \
        else STREAM_RATES
    t0 = time.time()
    s = run(modes, args.seconds, args.driver_cpu, args.target_cpu, rr, rs, args.out)
    print("# driver capacity (highest sustained step; driver pinned to cpu "
          f"{args.driver_cpu}, target to cpu {args.target_cpu}, {args.seconds:g} s per step)")
    for mode, unit in (("rest", "requests/s"), ("stream", "messages/s")):
        if mode not in modes:
            continue
        b = s["best"].get(mode)
        if not b:
            print(f"{mode:6s}: no step sustained (see the steps above)")
            continue
        lt = b["lateness_ms"]
        print(f"{mode:6s}: {b['sent_per_s']:,.0f} {unit} sustained (step {b['rate']:,.0f}); send "
              f"lateness p50 {lt['p50']} ms, p99 {lt['p99']} ms, max {lt['max']} ms; "
              f"round trip p50 {b['round_trip_ms']['p50']} ms, p99 {b['round_trip_ms']['p99']} "
              f"ms; driver CPU {b['driver_cpu_percent']}%")
    print(json.dumps({"best": s["best"], "elapsed_s": round(time.time() - t0, 1)}))
    return 0
