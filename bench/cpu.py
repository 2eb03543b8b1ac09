"""Sample the CPU use of a deployment's processes while it is driven (tidy rows -> cpu.csv).

A reader must see whether the service was saturated (or the driver was): a run whose service core
idles at "saturation" measured the load generator, not the service.
"""

from __future__ import annotations

import csv
import threading
import time
from pathlib import Path

import psutil


class CpuSampler:
    """Background thread: every ``interval`` s, cpu % of each process in the given trees."""

    def __init__(self, roots: dict[str, list[int]], out: Path, interval: float = 0.5):
        self.roots = roots          # group name ("service", "broker", "driver") -> root pids
        self.out = Path(out)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
        self._procs: dict[int, tuple[str, psutil.Process]] = {}
        self.rows: list[tuple] = []

    def start(self) -> CpuSampler:
        self._thread.start()
        return self

    def stop(self, t0_epoch: float | None = None) -> Path:
        """Stop sampling; write times relative to ``t0_epoch`` (the load schedule's start)."""
        self._stop.set()
        self._thread.join(timeout=5)
        t0 = t0_epoch if t0_epoch is not None else (self.rows[0][0] if self.rows else 0.0)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        with open(self.out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t_s", "role", "process", "pid", "cpu_percent"])
            w.writerows((round(t - t0, 3), *rest) for t, *rest in self.rows)
        return self.out

    def _refresh(self) -> None:
        for group, pids in self.roots.items():
            for pid in pids:
                try:
                    root = psutil.Process(pid)
                    tree = [root, *root.children(recursive=True)]
                except psutil.Error:
                    continue
                for p in tree:
                    if p.pid not in self._procs:
                        try:
                            p.cpu_percent(None)  # prime: the first call always returns 0.0
                            self._procs[p.pid] = (group, p)
                        except psutil.Error:
                            pass

    def _run(self) -> None:
        self._refresh()
        while not self._stop.wait(self.interval):
            self._refresh()
            t = time.time()
            for pid, (group, p) in list(self._procs.items()):
                try:
                    self.rows.append((t, group, p.name(), pid,
                                      p.cpu_percent(None)))
                except psutil.Error:
                    self._procs.pop(pid, None)


class CoreSampler:
    """Busy seconds of some cores (/proc/stat via psutil), sampled every ``interval`` s.

    Busy = user + nice + system (processes) + irq + softirq (the kernel, e.g. loopback network
    work) + steal (the hypervisor gave the core to another VM). Each sample keeps the three parts
    so a report can say which one took the service's core: what the service's own processes do
    not account for of "processes" was someone else's (a shared machine).
    """

    PARTS = ("processes", "irq", "steal")

    def __init__(self, cpus, interval: float = 0.5):
        self.cpus = list(cpus)
        self.interval = interval
        # (epoch, busy seconds of self.cpus, {part: seconds})
        self.samples: list[tuple[float, float] | tuple[float, float, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="core-sampler", daemon=True)

    def _sample(self) -> tuple[float, float, dict]:
        per = psutil.cpu_times(percpu=True)
        parts = dict.fromkeys(self.PARTS, 0.0)
        for c in self.cpus:
            if c < len(per):
                t = per[c]
                parts["processes"] += t.user + t.nice + t.system
                parts["irq"] += getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
                parts["steal"] += getattr(t, "steal", 0.0)
        return time.time(), sum(parts.values()), parts

    def _run(self) -> None:
        self.samples.append(self._sample())
        while not self._stop.wait(self.interval):
            self.samples.append(self._sample())

    def start(self) -> CoreSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def busy_percent(self, start_epoch: float, end_epoch: float) -> float | None:
        """Mean busy % (100 = one core) between the samples nearest the window's ends."""
        inside = [s for s in self.samples if start_epoch <= s[0] <= end_epoch]
        if len(inside) < 2:
            return None
        (t0, b0), (t1, b1) = inside[0][:2], inside[-1][:2]
        return 100.0 * (b1 - b0) / (t1 - t0) if t1 > t0 else None

    def parts_percent(self, start_epoch: float, end_epoch: float) -> dict[str, float] | None:
        """busy_percent split into processes / irq (+softirq) / steal."""
        inside = [s for s in self.samples if start_epoch <= s[0] <= end_epoch and len(s) > 2]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        a, b = inside[0], inside[-1]
        return {k: 100.0 * (b[2][k] - a[2][k]) / (b[0] - a[0]) for k in self.PARTS}

    def write_csv(self, out: Path, t0_epoch: float | None = None) -> Path:
        """cores.csv: t_s (relative to ``t0_epoch``, the load schedule's start), the number of
        cores sampled, and the cumulative seconds of each part summed over them (a window's mean
        is the difference of its end rows over its length: analysis.metrics.core_noise)."""
        full = [s for s in self.samples if len(s) > 2]
        t0 = t0_epoch if t0_epoch is not None else (full[0][0] if full else 0.0)
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t_s", "cores", *(f"{p}_s" for p in self.PARTS)])
            for t, _, parts in full:
                w.writerow([round(t - t0, 3), len(self.cpus),
                            *(round(parts[p], 3) for p in self.PARTS)])
        return out
