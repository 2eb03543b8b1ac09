"""Pure: K shards' request tables and driver records -> the one table and driver.json that a
single driver process would have written, so nothing downstream knows the load was sharded.

Counts are recomputed from the merged table (every accounting rule checked again on the
whole) and must equal the shards' sums; distributions (send lateness, dispatcher lag, the
client's exchange times, per-second CPU) are merged from the shards' raw values, never from
their percentiles.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from loadgen import ledger as L
from loadgen import record, wirecheck

#: A shard's raw distributions, next to its table (written by the REST driver's shard mode).
RAW_FILE = "raw.npz"

#: Count fields that add up over shards (the rest of ``counts`` are per-kind dicts).
SUMMED = ("requests", "ok", "failed", "attempts", "reviews_sent", "reviews_ok",
          "retried_requests", "duplicates")


@dataclass(frozen=True)
class ShardOutput:
    """What one shard wrote: its table, its driver.json and its raw distributions."""

    index: int
    table: pd.DataFrame
    driver: Mapping
    raw: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class FixedClock:
    """The shared t0 of all shards, in the shape ``ledger.driver_record`` reads."""

    t0_epoch: float

    def epoch(self, rel_s: float) -> float:
        return self.t0_epoch + rel_s


def merge_tables(parts: Sequence[ShardOutput]) -> pd.DataFrame:
    """One table, in intended-time order; no request may come from two shards."""
    owner: dict[str, int] = {}
    for p in parts:
        for rid in p.table["request_id"].unique().tolist():
            if owner.setdefault(rid, p.index) != p.index:
                raise L.AccountingError(f"request {rid!r} has rows from shards {owner[rid]} "
                                        f"and {p.index}")
    tables = [p.table for p in parts if len(p.table)]
    if not tables:
        return record.to_frame([])
    df = pd.concat(tables, ignore_index=True)
    return df.sort_values(["request_intended_s", "request_id", "attempt"], kind="stable",
                          ignore_index=True)


def sum_counts(parts: Sequence[ShardOutput]) -> dict:
    out: dict = {k: 0 for k in SUMMED}
    by_kind: dict[str, Counter] = {"failed_by_kind": Counter(), "attempts_by_kind": Counter()}
    for p in parts:
        c = p.driver["counts"]
        for k in SUMMED:
            out[k] += int(c.get(k, 0))
        for k, acc in by_kind.items():
            acc.update(c.get(k, {}))
    return {**out, **{k: dict(sorted((str(a), int(b)) for a, b in v.items()))
                      for k, v in by_kind.items()}}


def _raw(parts: Sequence[ShardOutput], key: str) -> np.ndarray:
    arrays = [np.asarray(p.raw.get(key, ()), dtype=float) for p in parts]
    return np.concatenate(arrays) if arrays else np.zeros(0)


def _sum_dicts(dicts) -> dict:
    acc: Counter = Counter()
    for d in dicts:
        acc.update({k: int(v) for k, v in (d or {}).items()})
    return dict(sorted(acc.items()))


def merge_cpu(parts: Sequence[ShardOutput], parent_cpu_s: float, wall_s: float) -> dict:
    """The driver's CPU as one figure (100 % = one core): every shard plus the parent, the
    per-second samples added up second by second (all shards sample at t0 + 1, 2, ... s)."""
    cpus = [p.driver["cpu"] for p in parts]
    user = sum(c["user_s"] for c in cpus)
    system = sum(c["system_s"] for c in cpus)
    samples = [np.asarray(p.raw.get("cpu_samples", ()), dtype=float) for p in parts]
    n = max((len(s) for s in samples), default=0)
    per_s = np.zeros(n)
    for s in samples:
        per_s[:len(s)] += s
    used = user + system + parent_cpu_s
    return {"percent_mean": round(100.0 * used / wall_s, 1) if wall_s > 0 else None,
            "percent_max_1s": round(float(per_s.max()), 1) if n else None,
            "user_s": round(user, 3), "system_s": round(system, 3),
            "parent_s": round(parent_cpu_s, 3), "wall_s": round(wall_s, 3),
            "affinity": sorted({c for x in cpus for c in x.get("affinity", [])}),
            "rss_mb": round(sum(c.get("rss_mb", 0.0) for c in cpus), 1),
            "per_shard": [{"shard": p.index, **{k: c.get(k) for k in (
                "percent_mean", "percent_max_1s", "affinity")}} for p, c in zip(parts, cpus)]}


def merge(parts: Sequence[ShardOutput], *, planned_ids: set[str] | None, p99_bound_s: float,
          interrupted: list, parent_cpu_s: float = 0.0, wall_s: float | None = None,
          process: Mapping | None = None) -> tuple[pd.DataFrame, dict]:
    """The merged table and driver.json. ``planned_ids``: every id of the plan when the run was
    not interrupted (each must have rows), else None (then only: no id outside the plan is
    checked by each shard, and no id from two shards here)."""
    if not parts:
        raise ValueError("no shard outputs to merge")
    parts = sorted(parts, key=lambda p: p.index)
    first = parts[0].driver
    t0s = {p.driver["t0_epoch"] for p in parts}
    if len(t0s) != 1:
        raise L.AccountingError(f"shards started at different t0s: {sorted(t0s)}")
    if len({p.driver["payload"]["sha256"] for p in parts}) != 1:
        raise L.AccountingError("shards sent different payloads")
    df = merge_tables(parts)
    counts = L.check_accounting(df, planned_ids)
    summed = sum_counts(parts)
    mismatch = {k: (counts.get(k, 0), v) for k, v in summed.items() if counts.get(k, 0) != v}
    if mismatch:
        raise L.AccountingError(f"merged table != sum of the shards: {mismatch}")

    lateness = L.dist(_raw(parts, "lateness_s"))
    wire = wirecheck.sum_counts(p.driver["crosscheck"]["wire"] | {
        "abandoned": p.driver["crosscheck"].get("abandoned_at_stop", 0)} for p in parts)
    xcheck = wirecheck.crosscheck(
        df, wire, _sum_dicts(p.driver["crosscheck"].get("wire_errors") for p in parts),
        _raw(parts, "wire_times_s"),
        stale=sum(p.driver["crosscheck"].get("stale_connections_replaced", 0) for p in parts))
    extra = [] if xcheck["match"] else \
        [f"the client counted {xcheck['wire']} exchanges but the table says {xcheck['ours']}"]
    if not interrupted and any(p.driver.get("interrupted") for p in parts):
        k = next(p.index for p in parts if p.driver.get("interrupted"))
        interrupted = [f"sent to shard {k}"]
    stop_s = max(p.driver["stop_s"] for p in parts)
    saturated = sum(int(p.driver["generator_saturated"]) for p in parts)
    k_count = len(parts)
    settings = dict(first["settings"])
    settings.pop("lateness_p99_bound_s", None)
    settings.update(part=[0, 1], shards=k_count,
                    max_in_flight_per_shard=settings.get("max_in_flight"),
                    max_in_flight=sum(p.driver["settings"].get("max_in_flight") or 0
                                      for p in parts) or None)
    max_late = (first["settings"].get("arrival", {}).get("open") or {}).get("max_lateness_s")
    driver = {
        **L.driver_record(mode="rest", run_id=first["run_id"], scenario=first["scenario"],
                          clock=FixedClock(first["t0_epoch"]), stop_s=stop_s,
                          interrupted=interrupted, lateness=lateness, saturated=saturated,
                          p99_bound_s=p99_bound_s, max_lateness_s=max_late, settings=settings,
                          extra=extra,
                          workers_answered=_sum_dicts(p.driver["workers_answered"]
                                                      for p in parts)),
        "counts": counts,
        "lateness_s": lateness,
        "dispatch_lag_s": L.dist(_raw(parts, "dispatch_lag_s")),
        "cap_waits": sum(int(p.driver["cap_waits"]) for p in parts),
        "generator_saturated": saturated,
        "connections": _sum_dicts(p.driver["connections"] for p in parts),
        "error_detail": _sum_dicts(p.driver["error_detail"] for p in parts),
        "crosscheck": xcheck,
        "cpu": merge_cpu(parts, parent_cpu_s, wall_s if wall_s is not None else stop_s),
        "payload": first["payload"],
        "process": dict(process or {}),
        "shards": [{"shard": p.index, "pid": p.driver["process"]["pid"],
                    "requests": p.driver["counts"]["requests"], "valid": p.driver["valid"],
                    "invalid_reasons": p.driver["invalid_reasons"]} for p in parts],
    }
    return df, driver
