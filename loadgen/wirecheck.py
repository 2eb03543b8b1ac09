"""The REST table against the client's own count of exchanges (:class:`loadgen.http1.Wire`).

The rows are written by the driver, the count is kept where the bytes are exchanged; the two
agree unless a row was lost, doubled or filed under the wrong outcome. The check replaces the
cross-check against Locust's statistics, which cost more per request than the request itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

KEYS = ("exchanges", "answered", "no_answer", "abandoned")


def table_counts(df: pd.DataFrame) -> dict:
    """Exchanges that ended per the table: answered (by status class) or not. Rows still in
    flight at the stop are left out (the client counts them as abandoned)."""
    reported = df[df["sent_s"].notna() & (df["error_kind"] != "in_flight")]
    status = reported["http_status"].dropna().astype(int).to_numpy()
    answered = Counter(f"{s // 100}xx" for s in status.tolist())
    return {"exchanges": int(len(reported)), "answered": dict(sorted(answered.items())),
            "no_answer": int(len(reported) - len(status))}


def sum_counts(parts: Iterable[Mapping]) -> dict:
    """The client counts of several processes (shards) as one."""
    out: dict = {"exchanges": 0, "answered": Counter(), "no_answer": 0, "abandoned": 0}
    for p in parts:
        out["exchanges"] += int(p.get("exchanges", 0))
        out["answered"].update(p.get("answered", {}))
        out["no_answer"] += int(p.get("no_answer", 0))
        out["abandoned"] += int(p.get("abandoned", 0))
    out["answered"] = dict(sorted(out["answered"].items()))
    return out


def crosscheck(df: pd.DataFrame, wire: Mapping, wire_errors: Mapping[str, int],
               wire_times_s, *, stale: int = 0) -> dict:
    """driver.json ``crosscheck``: both counts, whether they match, and both views of the
    response time (the table's send-to-answer, the client's connection-to-answer)."""
    reported = df[df["sent_s"].notna() & (df["error_kind"] != "in_flight")]
    ours = table_counts(df)
    theirs = {k: wire[k] for k in ("exchanges", "answered", "no_answer")}
    svc = ((reported["done_s"] - reported["sent_s"]) * 1e3).to_numpy(dtype=float)
    wt = np.asarray(wire_times_s, dtype=float) * 1e3

    def q(a, p):
        return round(float(np.percentile(a, p)), 3) if len(a) else None
    return {"match": ours == theirs, "ours": ours, "wire": theirs,
            "abandoned_at_stop": int(wire.get("abandoned", 0)),
            "wire_errors": dict(sorted(wire_errors.items())),
            "stale_connections_replaced": int(stale),
            "response_time_ms": {"ours_p50": q(svc, 50), "ours_p99": q(svc, 99),
                                 "wire_p50": q(wt, 50), "wire_p99": q(wt, 99)}}
