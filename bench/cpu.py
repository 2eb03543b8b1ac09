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
