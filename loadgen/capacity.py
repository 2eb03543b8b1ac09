"""Driver capacity against the service it drives: can each driver offer at least 3x what its
service serves at its peak, on the driver cores it is given? Measured in one run, so both
figures come from the same machine in the same minutes.

For each mode (REST, stream):

1. **the service's own peak**: the real deployment with its defaults (REST: one review per POST,
   nginx + uWSGI; stream: the Faust worker) pinned to ``--target-cpu``, saturated by a closed loop
   from the driver cores (the loads of ``make ceiling``); its ok operations/s in the measured
   window, and how busy its core was (a peak with the core well below 100 % is not the
   service's);
2. **the driver's highest sustained rate**: the driver (a child process, as in a real run; REST
   sharded over the driver cores, :mod:`loadgen.shards`) runs open-loop Poisson arrivals
   against a no-op target on ``--target-cpu`` (REST: nginx answering a canned 200; stream: a
   broker whose one topic is both the requests and the predictions, so producer and consumer are
   both measured). The first step is the target ratio times the peak; steps grow by 1.5x while
   sustained, then bisect to 15 %. A step is *sustained* when the run is valid (send lateness
   p99 <= 20 ms, nothing ``generator_saturated``), >= 99.9 % of requests succeed, the achieved
   send rate is within 2 % of the plan and (REST) the table matches the client's count;
3. **headroom** = sustained rate / peak, against the target (3x). Below it, what limits the
   driver: its CPU (user/kernel) and what else ran on its cores, and, when ``py-spy`` is
   installed, the top frames of a profile taken at the rate it could not sustain.

Prints one JSON line per phase and step, a summary per mode and a last JSON line with it all.
Bounded: ``--seconds`` (3) measured per step, at most ``--max-steps`` (5) steps per driver.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from services import procs

TARGET_RATIO = 3.0
GROW = 1.5            # next step while sustained and nothing failed yet
RESOLUTION = 1.15     # stop bisecting when the failed rate is within this of the sustained one
REST_START = 2000     # first REST step when no peak was measured
STREAM_START = 10000  # first stream step when no peak was measured
UNITS = {"rest": "requests/s", "stream": "messages/s"}


# ---------------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One open-loop run of a driver against its no-op target."""

    mode: str
    rate: float
    sustained: bool
    sent_per_s: float
    ok_fraction: float
    valid: bool
    invalid_reasons: list[str]
    lateness_ms: dict
    round_trip_ms: dict
    driver_cpu_percent: float | None
    driver_cpu_max_1s: float | None
    cpu_user_s: float | None = None
    cpu_system_s: float | None = None
    shards: int = 1
    driver_cores: dict | None = None     # busy % of the driver's cores: processes, irq, steal


@dataclass(frozen=True)
class Peak:
    """A deployment saturated by a closed loop: what it serves at best on its core, and how
    much of that core was the service's (the rest was other processes: a shared machine)."""

    mode: str
    ops_per_s: float | None
    service_core_busy: float | None
    what: str
    error: str | None = None
    service_cpu: float | None = None      # the service's processes, % of one core


@dataclass
class Verdict:
    mode: str
    target_ratio: float
    best: Step | None
    peak: Peak | None
    steps: list[Step] = field(default_factory=list)
    limits: list[str] = field(default_factory=list)

    @property
    def headroom(self) -> float | None:
        if self.best is None or not self.peak or not self.peak.ops_per_s:
            return None
        return self.best.sent_per_s / self.peak.ops_per_s

    @property
    def met(self) -> bool | None:
        h = self.headroom
        return None if h is None else h >= self.target_ratio

    def to_dict(self) -> dict:
        return {"mode": self.mode, "target_ratio": self.target_ratio,
                "headroom": None if self.headroom is None else round(self.headroom, 2),
                "met": self.met, "best": asdict(self.best) if self.best else None,
                "peak": asdict(self.peak) if self.peak else None,
                "steps": [asdict(s) for s in self.steps], "limits": self.limits}


# ---------------------------------------------------------------------------------------------
# the search (pure)
# ---------------------------------------------------------------------------------------------
def nice(rate: float) -> float:
    """Two significant digits: steps that read like rates people choose."""
    if rate <= 0:
        return rate
    k = 10 ** max(0, int(math.floor(math.log10(rate))) - 1)
    return float(round(rate / k) * k)


def next_rate(tried: list[tuple[float, bool]]) -> float | None:
    """The next rate to try after ``tried`` ((rate, sustained) in order), or None when the
    highest sustained rate is known to within RESOLUTION."""
    ok = [r for r, s in tried if s]
    bad = [r for r, s in tried if not s]
    lo = max(ok) if ok else None
    hi = min((r for r in bad if lo is None or r > lo), default=None)
    last = tried[-1][0]
    if hi is None:
        return nice(last * GROW)
    if lo is None:
        return nice(hi / GROW)
    if hi / lo <= RESOLUTION:
        return None
    mid = nice(math.sqrt(lo * hi))
    return mid if lo < mid < hi else None


def search(step: Callable[[float], Step], start: float, max_steps: int) -> list[Step]:
    steps: list[Step] = []
    rate: float | None = nice(start)
    while rate is not None and len(steps) < max_steps:
        steps.append(step(rate))
        rate = next_rate([(s.rate, s.sustained) for s in steps])
    return steps


def best_of(steps: list[Step]) -> Step | None:
    ok = [s for s in steps if s.sustained]
    return max(ok, key=lambda s: s.rate) if ok else None


def first_start(peak: Peak | None, default: float, ratio: float) -> float:
    return ratio * peak.ops_per_s if peak and peak.ops_per_s else default


# ---------------------------------------------------------------------------------------------
# what limits a driver (pure)
# ---------------------------------------------------------------------------------------------
_LINE = re.compile(r":\d+\)$")
_NOT_THE_RUN = ("<frozen importlib", "to_frame", "check_accounting", "write_outputs",
                "read_shard", "merge (", "load_texts")
_PROCESS = re.compile(r'^process \d+:')     # the root frame py-spy adds per (sub)process


def profile_summary(raw_lines, top: int = 6) -> dict:
    """py-spy's raw (collapsed) stacks -> the frames that used the most CPU while sending, and
    each package's share of it. Imports and the table written at the end are left out."""
    frames: Counter = Counter()
    packages: Counter = Counter()
    total = 0
    for line in raw_lines:
        stack, _, n = line.rstrip().rpartition(" ")
        if not stack or not n.isdigit():
            continue
        fr = [_LINE.sub(")", f) for f in stack.split(";") if not _PROCESS.match(f)]
        if any(x in f for f in fr for x in _NOT_THE_RUN):
            continue
        n = int(n)
        total += n
        leaf = fr[-1] if fr and fr[-1] else "(native)"
        frames[leaf] += n
        m = re.search(r"\(([^/)]+)/", leaf) or re.search(r"\(([^)]+)\)", leaf)
        packages[m.group(1) if m else "(native)"] += n
    if not total:
        return {"samples": 0, "top_frames": [], "packages": {}}
    pct = lambda c: round(100.0 * c / total, 1)  # noqa: E731
    return {"samples": total,
            "top_frames": [[f, pct(c)] for f, c in frames.most_common(top)],
            "packages": {p: pct(c) for p, c in packages.most_common(6)}}


def limits(step: Step, cores: int, profile: dict | None) -> list[str]:
    """Why the driver did not sustain ``step``: lines for people."""
    out = [f"at {step.rate:,.0f} {UNITS[step.mode]}: " + ("; ".join(step.invalid_reasons)
                                                          or "too few answers or sends")]
    cpu = step.driver_cpu_percent
    if cpu is not None:
        user = system = None
        if step.cpu_user_s is not None and step.cpu_system_s is not None:
            busy = step.cpu_user_s + step.cpu_system_s
            user = round(cpu * step.cpu_user_s / busy) if busy else None
            system = round(cpu * step.cpu_system_s / busy) if busy else None
        split = f" (user {user}%, kernel {system}%)" if user is not None else ""
        out.append(f"driver CPU {cpu:.0f}% of {cores} core(s){split}, peak second "
                   f"{step.driver_cpu_max_1s}%")
    dc = step.driver_cores
    if dc and cpu is not None:
        others = max(0.0, dc.get("processes", 0.0) - cpu)
        out.append(f"on the driver's cores meanwhile: other processes {others:.0f}%, interrupts "
                   f"{dc.get('irq', 0.0):.0f}%, steal {dc.get('steal', 0.0):.0f}% (100 = a core)")
    if cpu is not None:
        full = dc is not None and sum(dc.values()) >= 90 * cores
        out.append("-> CPU-bound: the driver used its cores" if cpu >= 85 * cores else
                   "-> not CPU-bound, but its cores were full: other processes and the kernel "
                   "took the CPU the driver needed" if full else
                   "-> not CPU-bound and its cores had idle time: the driver waited (on the "
                   "target, or to be scheduled)")
    if profile and profile.get("samples"):
        pk = ", ".join(f"{p} {v}%" for p, v in profile["packages"].items())
        out.append(f"profile ({profile['samples']} samples, CPU by package): {pk}")
        out += [f"  {v:5.1f}%  {f}" for f, v in profile["top_frames"]]
    elif profile is not None:
        out.append(f"profile: {profile.get('error', 'no samples')}")
    return out


# ---------------------------------------------------------------------------------------------
# running things
# ---------------------------------------------------------------------------------------------
def _write(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def open_scenario(path: Path, name: str, rate: float, seconds: float, timeout_s: float) -> Path:
    return _write(path, {
        "name": name, "description": f"driver capacity step at {rate:g} ops/s",
        "payload": {"source": "synthetic", "sample": 1000, "seed": 1, "text_bytes": 1300},
        "workload": {"batch_size": 1},
        "arrival": {"open": {"process": "poisson", "seed": 1,
                             "rate": {"shape": "constant", "ops_per_s": rate},
                             "max_in_flight": 2000, "max_lateness_s": 1.0}},
        "timing": {"warmup_s": 1.0, "duration_s": seconds, "drain_s": 5.0},
        "client": {"timeout_s": timeout_s, "retry": {"policy": "none"}},
    })


def peak_scenario(path: Path, mode: str, clients: int, batch: int, window: tuple[float, float]
                  ) -> Path:
    """The closed loop that saturates a deployment (make ceiling's loads), real reviews when
    the dataset is there."""
    from services.model.data import split_path
    try:
        imdb = split_path("test").exists()
    except Exception:  # noqa: BLE001 - no data folder configured: synthetic reviews
        imdb = False
    payload = ({"source": "imdb", "split": "test", "sample": 2000, "seed": 1} if imdb else
               {"source": "synthetic", "sample": 1000, "seed": 1, "text_bytes": 1300})
    return _write(path, {
        "name": f"cap-peak-{mode}", "description": f"{mode} peak: closed loop, {clients} "
        f"clients x {batch}", "payload": payload, "workload": {"batch_size": batch},
        "arrival": {"closed": {"clients": clients, "think_s": 0}},
        "timing": {"warmup_s": window[0], "duration_s": window[1], "drain_s": 3.0},
        "client": {"timeout_s": 10.0, "retry": {"policy": "none"}},
    })


def pyspy_binary() -> str | None:
    cand = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return cand if cand and os.access(cand, os.X_OK) else None


class Runner:
    """Drivers as child processes on the driver cores; targets on the target cores."""

    def __init__(self, sup: procs.Supervisor, work: Path, dcpu, tcpu, seconds: float,
                 say: Callable[[dict], None]):
        self.sup, self.work, self.dcpu, self.tcpu = sup, work, dcpu, tcpu
        self.seconds, self.say = seconds, say

    def driver(self, argv: list[str], out: Path, timeout: float, profile: Path | None = None
               ) -> dict:
        proc = self.sup.start(f"driver-{out.name}", [sys.executable, "-m", "loadgen", *argv,
                                                     "--out", str(out), "--quiet"],
                              cpus=self.dcpu, cwd=str(Path(__file__).resolve().parent.parent))
        spy = None
        if profile is not None:
            spy = subprocess.Popen(
                [pyspy_binary(), "record", "--pid", str(proc.pid), "--subprocesses",
                 "--nonblocking", "--rate", "100", "--format", "raw", "--output", str(profile)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                preexec_fn=(lambda: os.sched_setaffinity(0, self.tcpu)) if self.tcpu else None)
        try:
            proc.popen.wait(timeout=timeout)
        finally:
            self.sup.stop(proc)
            if spy is not None:
                try:
                    spy.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    spy.kill()
                    spy.wait()
        if proc.popen.returncode != 0:
            raise procs.LaunchError(f"driver failed ({proc.popen.returncode}): "
                                    f"{proc.log_tail(20)}")
        return json.loads((out / "driver.json").read_text())

    def step(self, mode: str, rate: float, target_argv: list[str], *,
             profile: Path | None = None) -> Step:
        from bench.cpu import CoreSampler

        tag = f"{mode}-{rate:g}" + ("-profiled" if profile else "")
        if mode == "rest":
            # one shard per driver core, stated: a one-shard driver then never re-executes
            # itself, which would end a profile attached to its first image
            target_argv = [*target_argv, "--shards", str(len(self.dcpu or [0]))]
        sc = open_scenario(self.work / f"{tag}.yaml", f"cap-{tag}", rate, self.seconds,
                           2.0 if mode == "rest" else 5.0)
        cores = CoreSampler(self.dcpu or sorted(os.sched_getaffinity(0))).start()
        try:
            d = self.driver(["drive", mode, "--scenario", str(sc), "--run-id", f"cap-{tag}",
                             "--no-validate", *target_argv], self.work / tag,
                            timeout=self.seconds + 90, profile=profile)
        finally:
            cores.stop()
        t0 = d["t0_epoch"]
        parts = cores.parts_percent(t0 + 1.0, t0 + 1.0 + self.seconds)
        return step_result(mode, rate, d, self.seconds, parts)


def step_result(mode: str, rate: float, d: dict, seconds: float, cores: dict | None = None
                ) -> Step:
    c = d["counts"]
    sent_rate = c["requests"] / (seconds + 1.0)
    ok_frac = c["ok"] / c["requests"] if c["requests"] else 0.0
    xcheck = d.get("crosscheck", {}).get("match", True)
    sustained = bool(d["valid"] and ok_frac >= 0.999 and abs(sent_rate / rate - 1) <= 0.02
                     and xcheck)
    if mode == "rest":
        rt = d["crosscheck"]["response_time_ms"]
        svc = {"p50": rt["ours_p50"], "p99": rt["ours_p99"]}
    else:
        lat = d.get("latency_ok_ms") or {}
        svc = {"p50": lat.get("p50"), "p99": lat.get("p99")}
    ms = {k: (None if d["lateness_s"][k] is None else round(d["lateness_s"][k] * 1e3, 3))
          for k in ("p50", "p99", "max")}
    cpu = d["cpu"]
    return Step(mode=mode, rate=rate, sustained=sustained, sent_per_s=round(sent_rate, 1),
                ok_fraction=round(ok_frac, 5), valid=d["valid"],
                invalid_reasons=list(d["invalid_reasons"]), lateness_ms=ms, round_trip_ms=svc,
                driver_cpu_percent=cpu.get("percent_mean"),
                driver_cpu_max_1s=cpu.get("percent_max_1s"), cpu_user_s=cpu.get("user_s"),
                cpu_system_s=cpu.get("system_s"), shards=int(d["settings"].get("shards", 1)),
                driver_cores={k: round(v, 1) for k, v in cores.items()} if cores else None)


def peak_from_table(out: Path, window: tuple[float, float], batch: int) -> float:
    """Ok operations/s answered inside the measured window, in reviews (events) per second."""
    from loadgen import record
    df = record.read(out / "requests.parquet")
    w0, w1 = window[0], window[0] + window[1]
    ok = df[(df["outcome"] == "ok") & (df["done_s"] >= w0) & (df["done_s"] < w1)]
    return float(ok["batch_size"].sum()) / window[1] if batch > 1 else len(ok) / window[1]


class TreeCpu:
    """CPU of some process trees (a service: its master and workers), sampled every 0.5 s."""

    def __init__(self, pids):
        import psutil
        self.roots = [psutil.Process(p) for p in pids if psutil.pid_exists(p)]
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _busy(self) -> float:
        import psutil
        total = 0.0
        for root in self.roots:
            try:
                for p in (root, *root.children(recursive=True)):
                    t = p.cpu_times()
                    total += t.user + t.system
            except psutil.Error:
                continue
        return total

    def _run(self) -> None:
        self.samples.append((time.time(), self._busy()))
        while not self._stop.wait(0.5):
            self.samples.append((time.time(), self._busy()))

    def start(self) -> TreeCpu:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def percent(self, w0: float, w1: float) -> float | None:
        inside = [s for s in self.samples if w0 <= s[0] <= w1]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        return 100.0 * (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


def measure_peak(r: Runner, mode: str, dep, window=(2.0, 5.0)) -> Peak:
    from bench.cpu import CoreSampler

    if mode == "rest":
        clients, batch = 8, 1
        what = (f"REST defaults, one review per POST, {dep.settings.get('processes')} uWSGI "
                f"process(es)")
        target = ["--url", dep.url]
    else:
        clients, batch = 16, 64
        what = (f"stream defaults ({dep.settings.get('engine', 'faust')}, shape "
                f"{dep.settings.get('shape')}), events/s")
        target = ["--bootstrap", dep.bootstrap, "--topics",
                  f"{dep.topics['requests']},{dep.topics['predictions']}"]
    sc = peak_scenario(r.work / f"peak-{mode}.yaml", mode, clients, batch, window)
    core = CoreSampler(r.tcpu or ()).start()
    svc = TreeCpu(dep.service_pids).start()
    try:
        d = r.driver(["drive", mode, "--scenario", str(sc), "--run-id", f"cap-peak-{mode}",
                      *target], r.work / f"peak-{mode}", timeout=sum(window) + 90)
    finally:
        core.stop()
        svc.stop()
    w0, w1 = d["t0_epoch"] + window[0], d["t0_epoch"] + sum(window)
    busy = core.busy_percent(w0, w1) if r.tcpu else None
    own = svc.percent(w0, w1)
    ops = peak_from_table(r.work / f"peak-{mode}", window, batch)
    return Peak(mode, round(ops, 1), None if busy is None else round(busy, 1),
                f"{what}; closed loop {clients} x {batch}",
                service_cpu=None if own is None else round(own, 1))


def repin(pid: int, cpus) -> None:
    """Move a running process tree (every thread of it: a JVM has dozens) to ``cpus``."""
    import psutil
    try:
        tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in tree:
        try:
            for tid in os.listdir(f"/proc/{p.pid}/task"):
                try:
                    os.sched_setaffinity(int(tid), cpus)
                except OSError:
                    pass
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# one mode
# ---------------------------------------------------------------------------------------------
def run_mode(r: Runner, mode: str, *, service: bool, ratio: float, max_steps: int,
             start: float | None, profile: bool) -> Verdict:
    from services.broker import create_topics, start_broker
    from services.launcher import deploy

    from loadgen.noop import start_noop_nginx

    peak = None
    broker = None
    if mode == "stream":   # one broker: with the driver for the peak (the bench's placement),
        broker = start_broker(r.sup, r.work / "broker", cpus=r.dcpu)   # then the no-op target
    if service:
        t = time.monotonic()
        try:
            with deploy(mode, r.work / f"svc-{mode}", sup=r.sup, service_cpus=r.tcpu,
                        broker_cpus=r.dcpu, bootstrap=broker.bootstrap if broker else None
                        ) as dep:
                peak = measure_peak(r, mode, dep)
        except (procs.LaunchError, OSError, ValueError) as e:
            peak = Peak(mode, None, None, "", error=str(e).splitlines()[0])
        r.say({"phase": "service_peak", **asdict(peak),
               "elapsed_s": round(time.monotonic() - t, 1)})
    if mode == "rest":
        target = start_noop_nginx(r.sup, r.work / "nginx", cpus=r.tcpu)
        argv_of = lambda rate: ["--url", target.url]  # noqa: E731
        stop_target = lambda: r.sup.stop(target.proc)  # noqa: E731
    else:
        if r.tcpu:
            repin(broker.pid, r.tcpu)

        def argv_of(rate):
            topic = f"noop-{int(rate)}-{time.monotonic_ns()}"
            create_topics(broker.bootstrap, {topic: 4})
            return ["--bootstrap", broker.bootstrap, "--topics", f"{topic},{topic}"]

        def stop_target():
            for p in list(r.sup.procs):
                if p.pid == broker.pid:
                    r.sup.stop(p)

    def one(rate: float) -> Step:
        s = r.step(mode, rate, argv_of(rate))
        r.say({"phase": "driver_step", **asdict(s)})
        return s

    try:
        first = start or first_start(peak, REST_START if mode == "rest" else STREAM_START, ratio)
        steps = search(one, first, max_steps)
        v = Verdict(mode, ratio, best_of(steps), peak, steps)
        below = v.met is False or (v.best is None and steps)
        if below:
            failed = min((s for s in steps if not s.sustained), key=lambda s: s.rate,
                         default=steps[-1])
            prof = None
            if profile:
                spy = pyspy_binary()
                if spy is None:
                    prof = {"error": "py-spy not installed (pip install py-spy): CPU only"}
                else:
                    path = r.work / f"profile-{mode}.txt"
                    again = r.step(mode, failed.rate, argv_of(failed.rate), profile=path)
                    r.say({"phase": "profiled_step", **asdict(again)})
                    prof = profile_summary(path.read_text().splitlines()) if path.exists() \
                        else {"error": "py-spy wrote no profile"}
            v.limits = limits(failed, len(r.dcpu or os.sched_getaffinity(0)), prof)
    finally:
        stop_target()
    return v


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def summary_lines(v: Verdict, dcpu, tcpu) -> list[str]:
    unit = UNITS[v.mode]
    b, p = v.best, v.peak
    drv = (f"{b.sent_per_s:,.0f} {unit} sustained on cpu {dcpu} ({b.shards} shard(s); "
           f"lateness p99 {b.lateness_ms['p99']} ms, CPU {b.driver_cpu_percent}%)"
           if b else "no rate sustained")
    if p is None:
        svc = "service peak not measured (--no-service)"
    elif p.ops_per_s is None:
        svc = f"service peak failed: {p.error}"
    else:
        busy = ""
        if p.service_core_busy is not None:
            busy = f", its core {p.service_core_busy:.0f}% busy"
            if p.service_cpu is not None:
                busy += (f" ({p.service_cpu:.0f}% the service's: the rest was other processes "
                         "and the kernel)")
        svc = f"service peak {p.ops_per_s:,.0f}/s on cpu {tcpu} ({p.what}{busy})"
    head = "headroom unknown" if v.headroom is None else (
        f"headroom {v.headroom:.2f}x, target >= {v.target_ratio:g}x: "
        + ("met" if v.met else "NOT met"))
    lines = [f"{v.mode:6s}: driver {drv}", f"        {svc}", f"        {head}"]
    if v.limits:
        lines.append("        what limits the driver:")
        lines += [f"          {x}" for x in v.limits]
    return lines


def placement(driver: str | None, target: str | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Driver and target cores: as given, else the bench's split (the target on the first
    core, the driver on the others; both on the one core of a one-core machine)."""
    cores = sorted(os.sched_getaffinity(0))
    tcpu = procs.parse_cpus(target) or (cores[0],)
    rest = tuple(c for c in cores if c not in tcpu)
    dcpu = procs.parse_cpus(driver) or rest or tcpu
    return tuple(dcpu), tuple(tcpu)


def main(args) -> int:
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    bad = set(modes) - set(UNITS)
    if bad:
        print(f"error: unknown modes {sorted(bad)} (rest, stream)", file=sys.stderr)
        return 2
    dcpu, tcpu = placement(args.driver_cpu, args.target_cpu)
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="rvs-capacity-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    say = lambda d: print(json.dumps(d), flush=True)  # noqa: E731
    verdicts = []
    procs.sigterm_unwinds()
    with procs.Supervisor(work / "logs") as sup:
        r = Runner(sup, work, dcpu, tcpu, args.seconds, say)
        for mode in modes:
            start = args.rate_rest if mode == "rest" else args.rate_stream
            verdicts.append(run_mode(r, mode, service=not args.no_service,
                                     ratio=args.target_ratio, max_steps=args.max_steps,
                                     start=start, profile=not args.no_profile))
    dname, tname = ",".join(map(str, dcpu)), ",".join(map(str, tcpu))
    print(f"# driver capacity vs the service it drives (driver on cpu {dname}, target and "
          f"service on cpu {tname}, {args.seconds:g} s per step, {time.time() - t0:.0f} s in all)")
    for v in verdicts:
        print("\n".join(summary_lines(v, dname, tname)))
    print(json.dumps({"verdicts": [v.to_dict() for v in verdicts], "work_dir": str(work),
                      "elapsed_s": round(time.time() - t0, 1)}))
    return 0
