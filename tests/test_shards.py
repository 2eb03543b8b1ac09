"""Sharding the REST open loop, without a stack: how the plan is split over K driver processes,
and how their tables and records merge into the one table a single process would have written."""

from __future__ import annotations

import numpy as np
import pytest

from loadgen import ledger as L
from loadgen import parts, record, wirecheck
from loadgen.shard_merge import ShardOutput, merge, merge_tables

T0 = 1_700_000_000.0
RUN = "sh"


# ---------------------------------------------------------------------------------------------
# partitioning
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 7, 10, 1001])
@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_parts_cover_the_plan_once_each_in_time_order(n, count):
    seen = []
    for k in range(count):
        idx = list(parts.part_indices(n, (k, count)))
        assert idx == sorted(idx) and all(i % count == k for i in idx)
        assert len(idx) == parts.part_size(n, (k, count))
        seen += idx
    assert sorted(seen) == list(range(n))           # union = plan, no index twice


def test_each_shard_sees_the_whole_run_not_a_slice():
    times = np.sort(np.random.default_rng(1).uniform(0, 60, 6000))
    for k in range(3):
        mine = times[list(parts.part_indices(len(times), (k, 3)))]
        assert mine[0] < 1 and mine[-1] > 59        # spread over the run
        assert abs(len(mine) - 2000) <= 1


def test_in_flight_cap_shares_add_up_to_the_cap():
    for cap in (1, 2, 5, 100, 4000):
        for count in range(1, min(cap, 9) + 1):
            shares = [parts.cap_per_shard(cap, (k, count)) for k in range(count)]
            assert sum(shares) == cap and min(shares) >= 1 and max(shares) - min(shares) <= 1
    with pytest.raises(ValueError):
        parts.cap_per_shard(1, (0, 2))


def test_shard_count_one_per_core_within_limits():
    assert parts.shard_count(cores=2, planned=10_000, max_in_flight=2000) == 2
    assert parts.shard_count(cores=1, planned=10_000, max_in_flight=2000) == 1
    assert parts.shard_count(cores=64, planned=10_000, max_in_flight=2000) == parts.MAX_SHARDS
    assert parts.shard_count(cores=4, planned=3, max_in_flight=2000) == 3      # a request each
    assert parts.shard_count(cores=4, planned=100, max_in_flight=2) == 2        # a slot each
    assert parts.shard_count(cores=4, planned=100, max_in_flight=10, requested=1) == 1
    assert parts.shard_count(cores=1, planned=100, max_in_flight=10, requested=3) == 3


def test_parse_part():
    assert parts.parse_part("1/4") == (1, 4)
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ValueError):
            parts.parse_part(bad)


# ---------------------------------------------------------------------------------------------
# merging: synthetic shard outputs, as the REST driver's shard mode writes them
# ---------------------------------------------------------------------------------------------
def _row(i: int, attempt: int = 1, *, kind: str | None = None, status: int | None = 200,
         sent: bool = True, late: float = 0.001) -> record.Attempt:
    t = i * 0.01
    r = record.Attempt(RUN, "rest", f"{RUN}-{i}", attempt, 1, t, t + 0.05 * (attempt - 1))
    if kind == "generator_saturated":
        r.done_s, r.error_kind = t + 1.0, kind
        return r
    if sent:
        r.sent_s = r.intended_s + late
    if kind == "in_flight":
        r.done_s = 9.0
        return r
    r.done_s = r.sent_s + 0.002
    r.http_status = status
    if kind is None:
        r.outcome, r.error_kind = "ok", None
    else:
        r.error_kind = kind
    return r


def _shard(index: int, rows: list[record.Attempt], *, t0: float = T0, count: int = 2,
           interrupted: bool = False, saturated: int = 0) -> ShardOutput:
    """What one shard writes: its table, its driver.json (the fields the merge reads), raw."""
    df = record.to_frame(rows)
    counts = L.check_accounting(df)
    table = wirecheck.table_counts(df)
    abandoned = int((df["error_kind"] == "in_flight").sum())
    wire = {**table, "abandoned": abandoned}
    sent = df[(df["attempt"] == 1) & df["sent_s"].notna()]
    late = (sent["sent_s"] - sent["intended_s"]).to_numpy()
    times = (df["done_s"] - df["sent_s"]).dropna().to_numpy()
    xc = wirecheck.crosscheck(df, wire, {}, times)
    driver = {
        "mode": "rest", "run_id": RUN, "scenario": "s", "t0_epoch": t0,
        "stop_s": 9.0 + index, "interrupted": interrupted, "valid": True, "invalid_reasons": [],
        "settings": {"url": "http://x", "part": [index, count], "shards": count,
                     "max_in_flight": 50, "lateness_p99_bound_s": 0.02,
                     "arrival": {"open": {"max_lateness_s": 1.0}}},
        "workers_answered": {"w/1": int(table["answered"].get("2xx", 0))},
        "counts": counts, "cap_waits": index, "generator_saturated": saturated,
        "connections": {"created": 3, "discarded": 3, "stale": 0},
        "error_detail": {"http_5xx/503": 1} if (df["http_status"] == 503).any() else {},
        "crosscheck": xc,
        "cpu": {"percent_mean": 20.0, "percent_max_1s": 30.0, "user_s": 1.0, "system_s": 0.5,
                "wall_s": 10.0, "affinity": [index], "rss_mb": 100.0},
        "payload": {"sha256": "abc", "n_texts": 5},
        "process": {"pid": 1000 + index},
    }
    raw = {"lateness_s": late, "dispatch_lag_s": late / 2, "wire_times_s": times,
           "cpu_samples": np.array([10.0, 30.0, 20.0]) + index}
    return ShardOutput(index, df, driver, raw)


def _plan_split(n: int, count: int = 2) -> list[list[int]]:
    return [list(parts.part_indices(n, (k, count))) for k in range(count)]


def _planned(n: int) -> set[str]:
    return {f"{RUN}-{i}" for i in range(n)}


def test_merge_sums_counts_and_keeps_every_request_once():
    a, b = _plan_split(10)
    s0 = _shard(0, [_row(i) for i in a[:-1]] + [_row(a[-1], kind="http_5xx", status=503),
                                                _row(a[-1], 2)])
    s1 = _shard(1, [_row(i) for i in b[:-2]] + [_row(b[-2], kind="timeout", status=None),
                                                _row(b[-1], kind="generator_saturated",
                                                     sent=False)], saturated=1)
    df, d = merge([s1, s0], planned_ids=_planned(10), p99_bound_s=0.02, interrupted=[])
    assert len(df) == len(s0.table) + len(s1.table) == 11
    assert not df.duplicated(["request_id", "attempt"]).any()
    assert set(df["request_id"]) == _planned(10)
    assert df["request_intended_s"].is_monotonic_increasing
    c = d["counts"]
    assert c["requests"] == 10 and c["ok"] == 8 and c["failed"] == 2 and c["attempts"] == 11
    assert c["ok"] + c["failed"] == c["requests"]
    assert c["failed_by_kind"] == {"generator_saturated": 1, "timeout": 1}
    assert c["retried_requests"] == 1
    assert d["crosscheck"]["match"], d["crosscheck"]
    assert d["crosscheck"]["wire"]["exchanges"] == 10            # the saturated one never left
    assert d["settings"]["shards"] == 2 and d["settings"]["part"] == [0, 1]
    assert d["settings"]["max_in_flight"] == 100                   # the shards' shares added
    assert d["generator_saturated"] == 1 and not d["valid"]      # a saturated row: invalid
    assert d["cap_waits"] == 1 and d["connections"]["created"] == 6
    assert d["workers_answered"] == {"w/1": 8}
    assert d["t0_epoch"] == T0 and d["stop_s"] == 10.0 and d["complete"]
    assert [s["shard"] for s in d["shards"]] == [0, 1]


def test_merged_distributions_come_from_raw_values_not_percentiles():
    a, b = _plan_split(200)
    s0 = _shard(0, [_row(i, late=0.001) for i in a])
    s1 = _shard(1, [_row(i, late=0.030) for i in b])    # one slow shard
    _, d = merge([s0, s1], planned_ids=_planned(200), p99_bound_s=0.02, interrupted=[])
    both = np.concatenate([s0.raw["lateness_s"], s1.raw["lateness_s"]])
    assert d["lateness_s"] == L.dist(both)
    assert d["lateness_s"]["p50"] > 0.001                # not the mean or max of two p50s
    assert not d["valid"] and any("lateness p99" in r for r in d["invalid_reasons"])
    assert d["cpu"]["percent_max_1s"] == 30.0 + 31.0     # second by second, then the max
    assert d["cpu"]["user_s"] == 2.0 and d["cpu"]["affinity"] == [0, 1]


def test_in_flight_at_the_stop_is_failed_and_matches_the_client():
    a, b = _plan_split(6)
    s0 = _shard(0, [_row(i) for i in a[:-1]] + [_row(a[-1], kind="in_flight")], interrupted=True)
    s1 = _shard(1, [_row(i) for i in b], interrupted=True)
    df, d = merge([s0, s1], planned_ids=None, p99_bound_s=0.02, interrupted=[15])
    assert d["counts"]["failed_by_kind"] == {"in_flight": 1}
    assert d["counts"]["ok"] + d["counts"]["failed"] == d["counts"]["requests"] == 6
    assert d["crosscheck"]["match"] and d["crosscheck"]["abandoned_at_stop"] == 1
    assert d["interrupted"] and not d["complete"]
    assert "interrupted by signal 15" in d["invalid_reasons"]


def test_a_request_from_two_shards_is_an_accounting_error():
    s0 = _shard(0, [_row(0), _row(2)])
    s1 = _shard(1, [_row(1), _row(2)])                  # request 2 sent by both
    with pytest.raises(L.AccountingError, match="shards 0 and 1"):
        merge_tables([s0, s1])
    with pytest.raises(L.AccountingError):
        merge([s0, s1], planned_ids=None, p99_bound_s=0.02, interrupted=[])


def test_a_planned_request_without_rows_is_an_accounting_error():
    a, b = _plan_split(6)
    s0 = _shard(0, [_row(i) for i in a])
    s1 = _shard(1, [_row(i) for i in b[:-1]])           # shard 1 lost one
    with pytest.raises(L.AccountingError, match="without rows"):
        merge([s0, s1], planned_ids=_planned(6), p99_bound_s=0.02, interrupted=[])


def test_shards_must_share_one_clock_and_payload():
    a, b = _plan_split(4)
    with pytest.raises(L.AccountingError, match="t0"):
        merge([_shard(0, [_row(i) for i in a]), _shard(1, [_row(i) for i in b], t0=T0 + 0.01)],
              planned_ids=None, p99_bound_s=0.02, interrupted=[])


def test_a_shard_record_that_disagrees_with_its_table_is_caught():
    a, b = _plan_split(4)
    s0 = _shard(0, [_row(i) for i in a])
    s1 = _shard(1, [_row(i) for i in b])
    s1.driver["counts"]["ok"] += 1                       # its driver.json says one more ok
    with pytest.raises(L.AccountingError, match="sum of the shards"):
        merge([s0, s1], planned_ids=_planned(4), p99_bound_s=0.02, interrupted=[])


def test_empty_shards_merge_to_an_empty_table():
    s0, s1 = _shard(0, [], interrupted=True), _shard(1, [], interrupted=True)
    df, d = merge([s0, s1], planned_ids=None, p99_bound_s=0.02, interrupted=[15])
    assert len(df) == 0 and list(df.columns) == record.COLUMNS
    assert d["counts"]["requests"] == 0 and d["crosscheck"]["match"]
