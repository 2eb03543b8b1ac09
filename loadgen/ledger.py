"""Accounting shared by both drivers: the clock, live counts, the progress heartbeat, the final
checks, driver.json and the start and final lines the bench reads.

The rule every driver keeps: a request gets its first row *before* anything is sent, so a request
in the plan can never be missing from the table, whatever happens to the target, the driver's
greenlets/threads, or the driver process (SIGTERM/SIGINT: outstanding rows stay ``in_flight``).
"""

from __future__ import annotations

import math
import os
import platform
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import psutil

from loadgen import record
from loadgen.record import Attempt
from loadgen.schedule import phase_of


class AccountingError(AssertionError):
    """The table does not account for every request: a driver bug, never a service result."""


class Clock:
    """Seconds since the mode's t0 (start of the schedule), monotonic, anchored to the epoch."""

    def __init__(self) -> None:
        self.mono0 = time.monotonic()
        self.t0_epoch = record.now_epoch()

    def rel(self) -> float:
        return time.monotonic() - self.mono0

    def epoch(self, rel_s: float) -> float:
        return self.t0_epoch + rel_s


def wait_until_epoch(start_at: float | None, sleep=time.sleep) -> None:
    """Block until the wall clock reaches ``start_at`` (lets the bench align several processes)."""
    if start_at is None:
        return
    while True:
        left = start_at - time.time()
        if left <= 0:
            return
        sleep(min(left, 0.5))


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


class Ledger:
    """Attempt rows of one mode plus live request counts (for the progress line)."""

    def __init__(self, run_id: str, mode: str):
        self.run_id = run_id
        self.mode = mode
        self.rows: list[Attempt] = []
        self.requests = 0      # requests with a first row
        self.ok = 0            # requests closed with an ok attempt
        self.failed = 0        # requests closed without one

    @property
    def in_flight(self) -> int:
        return self.requests - self.ok - self.failed

    def open_request(self) -> None:
        self.requests += 1

    def close_request(self, ok: bool) -> None:
        if ok:
            self.ok += 1
        else:
            self.failed += 1

    def attempt(self, request_id: str, attempt: int, batch_size: int, request_intended_s: float,
                intended_s: float) -> Attempt:
        row = Attempt(self.run_id, self.mode, request_id, attempt, batch_size, request_intended_s,
                      intended_s)
        self.rows.append(row)
        return row

    def saturated(self, request_id: str, batch_size: int, intended_s: float, now: float) -> None:
        """A planned request the generator could not send: it still gets its row."""
        row = self.attempt(request_id, 1, batch_size, intended_s, intended_s)
        row.done_s = now
        row.error_kind = "generator_saturated"
        self.open_request()
        self.close_request(False)

    def finalize(self, stop_s: float) -> None:
        """Rows still pending when the driver stopped: outcome error, kind in_flight, done=stop."""
        for r in self.rows:
            if r.outcome == "error" and r.error_kind == "in_flight" and math.isnan(r.done_s):
                r.done_s = stop_s


# ---------------------------------------------------------------------------------------------
# checks and figures
# ---------------------------------------------------------------------------------------------
def check_accounting(df: pd.DataFrame, expected_ids: set[str] | None = None) -> dict:
    """Every request accounted for: sent = ok + failed, attempts numbered 1..k, ok rows were
    answered, and (if given) the request ids are exactly the planned ones. Returns the counts."""
    try:
        record.validate(df)
    except AssertionError as e:
        raise AccountingError(str(e)) from None
    counts: dict = {"requests": 0, "ok": 0, "failed": 0, "attempts": int(len(df)),
                    "reviews_sent": 0, "reviews_ok": 0,
                    "failed_by_kind": {}, "attempts_by_kind": {}}
    if df.empty:
        if expected_ids:
            raise AccountingError(f"{len(expected_ids)} planned requests have no row")
        return counts
    isok = (df["outcome"] == "ok").to_numpy()
    g = df.assign(_ok=isok).groupby("request_id", sort=False)
    n_att = g.agg(amin=("attempt", "min"), amax=("attempt", "max"),
                  count=("attempt", "size"), n_ok=("_ok", "sum"))
    bad = n_att[(n_att["amin"] != 1) | (n_att["amax"] != n_att["count"])]
    if len(bad):
        raise AccountingError(f"attempts not numbered 1..k for {len(bad)} requests, e.g. "
                              f"{bad.index[0]!r}")
    if (n_att["n_ok"] > 1).any():
        raise AccountingError("a request has more than one ok attempt (duplicates must be "
                              "counted in 'duplicates', never as a second success)")
    answered = df.loc[isok, ["sent_s", "done_s"]]
    if answered.isna().any().any():
        raise AccountingError("an ok row lacks sent_s or done_s")
    req_ok = n_att["n_ok"] > 0
    last = (df.loc[~isok, ["request_id", "attempt", "error_kind"]]
            .sort_values(["request_id", "attempt"])
            .drop_duplicates("request_id", keep="last").set_index("request_id"))
    failed_ids = req_ok.index[~req_ok.to_numpy()]
    kinds = Counter(last.loc[failed_ids, "error_kind"].tolist())
    if kinds.get(None):
        raise AccountingError("a failed request's last attempt has no error kind")
    n = len(req_ok)
    ok = int(req_ok.sum())
    failed = n - ok
    if ok + failed != n or sum(kinds.values()) != failed:
        raise AccountingError(f"sent {n} != ok {ok} + failed {failed} ({dict(kinds)})")
    if expected_ids is not None:
        have = set(req_ok.index)
        missing = expected_ids - have
        extra = have - expected_ids
        if missing or extra:
            raise AccountingError(f"planned requests without rows: {len(missing)} "
                                  f"(e.g. {sorted(missing)[:3]}); rows for unplanned ids: "
                                  f"{len(extra)} (e.g. {sorted(extra)[:3]})")
    first = df[df["attempt"] == 1]
    counts.update(
        requests=n, ok=ok, failed=failed,
        reviews_sent=int(first["batch_size"].sum()),
        reviews_ok=int(df.loc[isok, "batch_size"].sum()),
        failed_by_kind=dict(sorted((str(k), int(v)) for k, v in kinds.items())),
        attempts_by_kind=dict(sorted(
            (str(k), int(v)) for k, v in
            Counter(df["error_kind"].fillna("ok").tolist()).items())),
        retried_requests=int((n_att["count"] > 1).sum()),
        duplicates=int(df["duplicates"].fillna(0).sum()),
    )
    return counts


def dist(values, scale: float = 1.0, digits: int = 6) -> dict:
    """p50/p90/p99/max/mean of finite values (None when there are none)."""
    a = np.asarray(values, dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    q = np.percentile(a, [50, 90, 99]) * scale
    return {"n": int(a.size), "p50": round(float(q[0]), digits), "p90": round(float(q[1]), digits),
            "p99": round(float(q[2]), digits), "max": round(float(a.max() * scale), digits),
            "mean": round(float(a.mean() * scale), digits)}


class CpuMeter:
    """This process's CPU use (100 % = one core), overall and per 1-s sample."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.t0 = time.monotonic()
        self.c0 = self.proc.cpu_times()
        self.samples: list[float] = []
        self._last = (self.t0, self.c0.user + self.c0.system)

    def sample(self) -> float:
        now = time.monotonic()
        c = self.proc.cpu_times()
        busy = c.user + c.system
        dt = now - self._last[0]
        pct = 100.0 * (busy - self._last[1]) / dt if dt > 0 else 0.0
        self._last = (now, busy)
        self.samples.append(pct)
        return pct

    def summary(self) -> dict:
        c = self.proc.cpu_times()
        wall = time.monotonic() - self.t0
        used = (c.user - self.c0.user) + (c.system - self.c0.system)
        return {"percent_mean": round(100.0 * used / wall, 1) if wall > 0 else None,
                "percent_max_1s": round(max(self.samples), 1) if self.samples else None,
                "user_s": round(c.user - self.c0.user, 3),
                "system_s": round(c.system - self.c0.system, 3),
                "wall_s": round(wall, 3),
                "affinity": sorted(os.sched_getaffinity(0)),
                "rss_mb": round(self.proc.memory_info().rss / 2**20, 1)}


def emit(obj: dict) -> None:
    """One JSON line on stdout (the bench reads these)."""
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY).decode() + "\n")
    sys.stdout.flush()


def progress(t: float, phase: str, sent: int, ok: int, failed: int, in_flight: int) -> None:
    emit({"t": round(t, 3), "phase": phase, "sent": sent, "ok": ok, "failed": failed,
          "in_flight": in_flight})


def start_line(mode: str, run_id: str, clock: Clock) -> None:
    """The driver's first line: the bench times its faults and progress from this t0."""
    emit({"event": "start", "mode": mode, "run_id": run_id, "t0_epoch": clock.t0_epoch})


class Heartbeat:
    """Once a second, whichever loop a driver runs: sample its CPU and print the progress line
    the bench tails (nothing printed when ``quiet``)."""

    def __init__(self, cpu: CpuMeter, warmup_s: float, duration_s: float, quiet: bool = False):
        self.cpu, self.warmup_s, self.duration_s, self.quiet = cpu, warmup_s, duration_s, quiet

    def __call__(self, now: float, sent: int, ok: int, failed: int, in_flight: int) -> None:
        self.cpu.sample()
        if not self.quiet:
            progress(now, phase_of(now, self.warmup_s, self.duration_s), sent, ok, failed,
                     in_flight)


def finish(out: Path | str, df: pd.DataFrame, driver: dict, *, mode: str, quiet: bool = False,
           **final) -> dict:
    """Write the table and driver.json, then the driver's last line (the bench reads it):
    counts, validity, lateness and CPU from ``driver``, plus the driver's own ``final`` fields."""
    write_outputs(Path(out), df, driver)
    if not quiet:
        c = driver["counts"]
        emit({"event": "final", "mode": mode, "sent": c["requests"], "ok": c["ok"],
              "failed": c["failed"], "attempts": c["attempts"], **final,
              "valid": driver["valid"], "invalid_reasons": driver["invalid_reasons"],
              "lateness_p99_s": driver["lateness_s"]["p99"],
              "cpu_percent": driver["cpu"]["percent_mean"], "out": str(out)})
    return driver


def write_outputs(out: Path, df: pd.DataFrame, driver: dict) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    table = record.write(df, out / "requests.parquet")
    meta = out / "driver.json"
    meta.write_bytes(orjson.dumps(driver, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY
                                  | orjson.OPT_NON_STR_KEYS))
    return table, meta


def environment_info() -> dict:
    return {"python": platform.python_version(), "pid": os.getpid(),
            "hostname": platform.node(), "cpus_online": os.cpu_count()}


def validity(lateness: dict, saturated: int, *, p99_bound_s: float, max_bound_s: float,
             extra: list[str] | None = None) -> tuple[bool, list[str]]:
    """A run is invalid when the generator, not the target, shaped its result."""
    reasons = list(extra or [])
    if saturated:
        reasons.append(f"{saturated} planned requests not sent (generator_saturated: in-flight "
                       f"cap or lateness bound hit)")
    p99 = lateness.get("p99")
    mx = lateness.get("max")
    if p99 is not None and p99 > p99_bound_s:
        reasons.append(f"send lateness p99 {p99 * 1e3:.1f} ms > bound {p99_bound_s * 1e3:.0f} ms")
    if mx is not None and mx > max_bound_s:
        reasons.append(f"send lateness max {mx * 1e3:.0f} ms > bound {max_bound_s * 1e3:.0f} ms")
    return (not reasons), reasons


def driver_record(*, mode: str, run_id: str, scenario: str, clock: Clock, stop_s: float,
                  interrupted: list, lateness: dict, saturated: int, p99_bound_s: float,
                  max_lateness_s: float | None, settings: dict,
                  extra: list[str] | None = None,
                  workers_answered: dict[str, int] | None = None) -> dict:
    """The part of driver.json both drivers share: times, completeness, validity, settings,
    and ``workers_answered`` (answers per serving worker, loadgen/workers.py): the one record of
    how many workers served a run when the bench only attached to the deployment.

    ``max_lateness_s`` None = closed loop: send lateness does not apply (clients send when
    their previous operation is done), only ``extra`` reasons and an interruption count.
    """
    extra = list(extra or [])
    if interrupted:
        extra.append(f"interrupted by signal {interrupted[0]}")
    if max_lateness_s is None:
        valid, reasons = (not extra), extra
    else:
        valid, reasons = validity(lateness, saturated, p99_bound_s=p99_bound_s,
                                  max_bound_s=max_lateness_s, extra=extra)
    return {
        "mode": mode, "run_id": run_id, "scenario": scenario,
        "t0_epoch": clock.t0_epoch, "end_epoch": clock.epoch(stop_s), "stop_s": stop_s,
        "complete": not interrupted, "interrupted": bool(interrupted),
        "valid": valid, "invalid_reasons": reasons,
        "settings": {**settings, "lateness_p99_bound_s": p99_bound_s},
        "workers_answered": dict(workers_answered or {}),
    }
