"""The request table: one row per request attempt, the single source every metric and chart reads.

Times are seconds relative to the mode's ``t0`` (the start of its load schedule, warm-up included),
taken from a monotonic clock anchored once per process to the wall clock, so that intervals are
exact and ``t0_epoch + t`` is still comparable with another process on the same host.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

_WALL0 = time.time()
_MONO0 = time.monotonic()


def now_epoch() -> float:
    """Wall-clock seconds that never jump (monotonic since the process's anchor)."""
    return _WALL0 + (time.monotonic() - _MONO0)


OUTCOMES = ("ok", "error")

#: Kinds of failure a row can carry. ``in_flight`` = still unanswered at the deadline.
ERROR_KINDS = (
    "timeout",            # client gave up waiting (REST) / no answer within timeout (stream)
    "refused",            # connection refused / reset before a response
    "http_4xx",
    "http_5xx",
    "bad_response",       # 2xx whose body is not a valid prediction set
    "produce_error",      # the broker rejected or never acknowledged the event
    "no_prediction",      # stream: produced, acknowledged, but no prediction before deadline+drain
    "in_flight",          # still pending when the driver stopped
    "generator_saturated",  # the driver could not send it at its intended time (open loop)
    "circuit_open",       # REST: the client's circuit breaker refused it; never sent
    "retries_exhausted",  # not a row kind by itself; reserved for summaries
)

#: Column -> pyarrow type. ``intended_s`` is when the attempt was *due* by the schedule; latency in
#: open loop is ``done_s - request_intended_s`` (coordinated-omission-free); ``done_s - sent_s`` is
#: the service-time view.
SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("mode", pa.string()),                 # "rest" | "stream"
    ("request_id", pa.string()),           # stable across retries
    ("attempt", pa.int32()),               # 1-based
    ("batch_size", pa.int32()),            # reviews carried by this attempt
    ("request_intended_s", pa.float64()),  # when the first attempt was due
    ("intended_s", pa.float64()),          # when this attempt was due (after any backoff)
    ("sent_s", pa.float64()),              # when it actually left (NaN if never sent)
    ("done_s", pa.float64()),              # when its fate was known (answer, error, or deadline)
    ("outcome", pa.string()),              # "ok" | "error"
    ("error_kind", pa.string()),           # null when ok; one of ERROR_KINDS otherwise
    ("http_status", pa.int32()),           # null for stream / no response
    ("duplicates", pa.int32()),            # extra answers received for this attempt (stream)
])

COLUMNS = [f.name for f in SCHEMA]


@dataclass(slots=True)
class Attempt:
    run_id: str
    mode: str
    request_id: str
    attempt: int
    batch_size: int
    request_intended_s: float
    intended_s: float
    sent_s: float = float("nan")
    done_s: float = float("nan")
    outcome: str = "error"
    error_kind: str | None = "in_flight"
    http_status: int | None = None
    duplicates: int = 0


def to_frame(rows: list[Attempt] | list[dict]) -> pd.DataFrame:
    """Rows -> a DataFrame with exactly SCHEMA's columns and dtypes (empty tables included)."""
    if rows and not isinstance(rows[0], dict):
        rows = [{c: getattr(r, c) for c in COLUMNS} for r in rows]
    table = pa.Table.from_pylist(list(rows), schema=SCHEMA)
    return table.to_pandas(types_mapper={pa.int32(): pd.Int32Dtype()}.get)


def validate(df: pd.DataFrame) -> None:
    """Invariants every table must hold; raises AssertionError naming the broken one."""
    missing = set(COLUMNS) - set(df.columns)
    assert not missing, f"request table lacks columns {sorted(missing)}"
    assert df["outcome"].isin(OUTCOMES).all(), "outcome must be 'ok' or 'error'"
    ok = df["outcome"] == "ok"
    assert df.loc[ok, "error_kind"].isna().all(), "an ok row carries an error_kind"
    assert df.loc[~ok, "error_kind"].notna().all(), "an error row has no error_kind"
    assert not df.duplicated(["mode", "request_id", "attempt"]).any(), "duplicate attempt rows"


def write(df: pd.DataFrame, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    validate(df)
    table = pa.Table.from_pandas(df[COLUMNS], schema=SCHEMA, preserve_index=False)
    pq.write_table(table, path)
    return path


def read(path: Path | str) -> pd.DataFrame:
    table = pq.read_table(path, schema=SCHEMA)
    return table.to_pandas(types_mapper={pa.int32(): pd.Int32Dtype()}.get)
