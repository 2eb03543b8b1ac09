"""Known answers for every metric, from small hand-made request tables."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fixtures.tables import att, table  # noqa: E402

from analysis import metrics as mx  # noqa: E402

NAN = float("nan")


def approx(x):
    return pytest.approx(x, rel=1e-9, abs=1e-9)


def as_json(m) -> dict:
    return json.loads(json.dumps(mx.jsonable(m), allow_nan=False))


# ---------------------------------------------------------------------------------- throughput


def test_throughput_counts_requests_due_in_window_over_duration():
    w = mx.Window(10, 10)
    rows = [att(f"r{i}", 10 + i * 0.33, batch=2) for i in range(29)]
    rows += [att("late", 19.95, batch=2, done=20.5),          # due inside, answered in the drain
             att("warm", 5.0, batch=2), att("after", 21.0, batch=2)]
    m = mx.mode_metrics(table(*rows), w)
    assert m.counts.sent == 30 and m.counts.ok == 30 and m.counts.failed == 0
    assert m.successful_throughput == approx(3.0)
    assert m.reviews_per_s == approx(6.0)
    assert m.counts.reviews_ok == 60


def test_spread_and_cv_of_per_second_series():
    w = mx.Window(0, 4)
    times = [0.5, 1.1, 1.4, 1.7, 2.5, 3.1, 3.4, 3.7]          # 1, 3, 1, 3 completions per second
    m = mx.mode_metrics(table(*[att(f"r{i}", t) for i, t in enumerate(times)]), w)
    s = m.spread_1s
    assert (s.n_bins, s.mean, s.std, s.min, s.max, s.range) == (4, 2.0, 1.0, 1.0, 3.0, 2.0)
    assert s.cv == approx(0.5) and m.throughput_cv == approx(0.5)
    assert m.spread_10s.n_bins == 0 and m.spread_10s.cv is None    # no whole 10 s bin in 4 s


def test_throughput_series_bins_completions_and_zero_fills():
    w = mx.Window(2, 4)
    t = table(att("a", 2.2, batch=3), att("b", 2.5, done=4.5, batch=5), att("c", 3.0, ok=False))
    s = mx.throughput_series(t, w, 1.0)
    assert list(s["t_s"]) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert list(s["in_window"]) == [False, False, True, True, True, True]
    assert list(s["ok"]) == [0, 0, 1, 0, 1, 0]
    assert list(s["reviews_per_s"]) == [0, 0, 3, 0, 5, 0]


# ---------------------------------------------------------------------------------- latency


def test_latency_percentiles_open_loop_and_service_view():
    w = mx.Window(0, 100)
    # due at t, sent 0.5 s late (generator lag), answered i ms after sending
    rows = [att(f"r{i}", float(i - 1), sent=i - 1 + 0.5, lat=i / 1000) for i in range(1, 101)]
    m = mx.mode_metrics(table(*rows), w)
    svc, opn = m.service_latency_ms, m.latency_ms
    assert (svc.n, svc.p50, svc.p90, svc.p95, svc.p99, svc.p999, svc.max) == \
        (100, approx(50), approx(90), approx(95), approx(99), approx(100), approx(100))
    assert opn.p50 == approx(550) and opn.p99 == approx(599) and opn.max == approx(600)


def test_latency_of_retried_request_counts_from_first_due_time():
    t = table(att("r", 1.0, ok=False, kind="timeout", lat=1.0),
              att("r", 1.0, attempt=2, intended=2.5, lat=0.05))
    m = mx.mode_metrics(t, mx.Window(0, 10))
    assert m.counts.ok == 1 and m.counts.attempts == 2
    assert m.latency_ms.p50 == approx(1550.0)          # 2.55 - 1.0
    assert m.service_latency_ms.p50 == approx(50.0)    # of the ok attempt


def test_latency_series_per_bin():
    w = mx.Window(0, 20)
    rows = [att(f"a{i}", float(i - 1) * 0.5, lat=i / 1000) for i in range(1, 11)]   # bin 0: 1..10 ms
    rows += [att(f"b{i}", 12.0 + i * 0.1, lat=0.1) for i in range(3)]                 # bin 1: 100 ms
    s = mx.latency_series(table(*rows), w, 10.0)
    assert list(s["n"]) == [10, 3]
    assert s["p50"].tolist() == [approx(5.0), approx(100.0)]
    assert s["p99"].iloc[0] == approx(10.0) and s["max"].iloc[1] == approx(100.0)


def test_percentiles_nearest_rank_and_empty():
    p = mx.percentiles(list(range(1, 11)))
    assert (p.p50, p.p90, p.p99, p.p999, p.max) == (5, 9, 10, 10, 10)
    e = mx.percentiles([])
    assert e.n == 0 and e.p50 is None and e.max is None


# ---------------------------------------------------------------------------------- errors, retries


def _error_table():
    rows = [att(f"r{i}", float(i)) for i in range(7)]
    rows += [att("r7", 7.0, ok=False, kind="timeout", lat=1.0),
             att("r7", 7.0, attempt=2, intended=8.2, ok=False, kind="timeout", lat=1.0),
             att("r8", 8.0, ok=False, kind="http_5xx", lat=0.01),
             att("r9", 9.0, ok=False, kind="refused", lat=0.001),
             att("r9", 9.0, attempt=2, intended=9.2)]
    return table(*rows)


def test_error_rates_kinds_and_accounting():
    m = mx.mode_metrics(_error_table(), mx.Window(0, 10))
    c = m.counts
    assert (c.sent, c.ok, c.failed, c.attempts, c.failed_attempts) == (10, 8, 2, 12, 4)
    assert c.sent == c.ok + c.failed
    assert m.error_rate == approx(0.2)
    assert m.attempt_error_rate == approx(4 / 12)
    assert m.retry_amplification == approx(1.2)
    assert m.error_kinds == {"http_5xx": 1, "refused": 1, "timeout": 2}
    assert m.failed_by_kind == {"http_5xx": 1, "timeout": 1}


def test_retry_amplification():
    rows = []
    for i, n in enumerate([1, 2, 3, 2]):
        for a in range(1, n + 1):
            rows.append(att(f"r{i}", float(i), attempt=a, intended=i + a * 0.1,
                            ok=(a == n), kind=None if a == n else "timeout"))
    m = mx.mode_metrics(table(*rows), mx.Window(0, 10))
    assert m.retry_amplification == approx(2.0)
    assert m.counts.ok == 4 and m.error_rate == 0.0


def test_error_series_by_kind_over_time():
    t = table(att("a", 0.2), att("b", 0.5, ok=False, kind="timeout", lat=1.0),
              att("c", 1.2, ok=False, kind="refused", lat=0.01), att("d", 1.3), att("e", 2.5))
    s = mx.error_series(t, mx.Window(0, 4), 1.0)
    assert list(s["attempts"]) == [1, 3, 1, 0]
    assert list(s["errors"]) == [0, 2, 0, 0]
    assert s["error_fraction"].iloc[1] == approx(2 / 3) and math.isnan(s["error_fraction"].iloc[3])
    assert list(s["timeout"]) == [0, 1, 0, 0] and list(s["refused"]) == [0, 1, 0, 0]


def test_retries_per_second_by_when_they_were_due():
    # request a: timed out at 0.2 s, retried at 1.4 s (attempt 2) and 2.6 s (attempt 3)
    t = table(att("a", 0.2, ok=False, kind="timeout", lat=1.0),
              att("a", 0.2, attempt=2, intended=1.4, ok=False, kind="timeout", lat=1.0),
              att("a", 0.2, attempt=3, intended=2.6), att("b", 1.1))
    s = mx.error_series(t, mx.Window(0, 4), 1.0)
    assert list(s["retries_per_s"]) == [0, 1, 1, 0]
    assert not mx.error_series(table(att("x", 0.5)), mx.Window(0, 2))["retries_per_s"].any()


def test_duplicates_counted():
    t = table(att("a", 1.0, dup=1), att("b", 2.0, dup=2), att("c", 3.0))
    assert mx.mode_metrics(t, mx.Window(0, 10)).counts.duplicates == 3


# ---------------------------------------------------------------------------------- efficiency


def test_efficiency_measured_and_fallback():
    t = table(*[att(f"r{i}", float(i), batch=320) for i in range(10)])
    w = mx.Window(0, 10)
    measured = mx.ceiling_from_meta({"ceiling": {"batched_reviews_per_s": 3200}})
    assert measured == mx.Ceiling(3200.0, "measured")
    assert mx.mode_metrics(t, w, ceiling=measured).efficiency == approx(0.1)
    meta = {"ceiling": {}, "model": {"cost_us_per_prediction": {"batched_median": 312.5}},
            "modes": {"rest": {"service_cpus": [0, 1]}}}
    fb = mx.ceiling_from_meta(meta, "rest")
    assert fb.source == "model_cost_fallback" and fb.reviews_per_s == approx(6400.0)
    assert mx.mode_metrics(t, w, ceiling=fb).efficiency == approx(0.05)
    unknown = mx.ceiling_from_meta({}, "rest")
    assert unknown.source == "unknown" and mx.mode_metrics(t, w, ceiling=unknown).efficiency is None


# ---------------------------------------------------------------------------------- in flight


def test_in_flight_counts_sent_not_done():
    t = table(att("a", 0.0, done=2.5, batch=1),
              att("b", 0.5, done=1.2, batch=2),
              att("c", 1.0, done=3.0, batch=3),
              att("d", 0.7, ok=False, kind="generator_saturated", sent=NAN, done=0.7),  # never sent
              att("e", 1.5, ok=False, kind="in_flight", done=NAN, batch=4))          # never answered
    s = mx.in_flight_series(t, mx.Window(0, 4), 1.0)
    assert list(s["t_s"]) == [0.0, 1.0, 2.0, 3.0]
    assert list(s["in_flight"]) == [1, 3, 3, 1]
    assert list(s["reviews_in_flight"]) == [1, 6, 8, 4]
    m = mx.mode_metrics(t, mx.Window(0, 4))
    assert m.in_flight_max == 3 and m.in_flight_mean == approx(2.0)


# ---------------------------------------------------------------------------------- recovery


def _recovery_table(good_seconds):
    rows = []
    for s in range(40):
        for j in range(10):
            t = s + j / 10 + 0.001
            if s in good_seconds:
                rows.append(att(f"r{s}-{j}", t, lat=0.01))
            else:
                rows.append(att(f"r{s}-{j}", t, ok=False, kind="timeout", lat=0.01))
    return table(*rows)


def test_recovery_time_after_fault():
    w = mx.Window(0, 40)
    fault = (mx.Fault(20.0, "kill", "svc"),)
    back = set(range(20)) | set(range(25, 40))
    r = mx.mode_metrics(_recovery_table(back), w, faults=fault).recoveries[0]
    assert r.baseline_per_s == 10.0 and r.recovered_at_s == 25.0 and r.recovery_s == 5.0
    # two good seconds then a dip: the run of three starts later
    dip = set(range(20)) | {25, 26} | set(range(28, 40))
    assert mx.mode_metrics(_recovery_table(dip), w, faults=fault).recoveries[0].recovery_s == 8.0
    never = mx.mode_metrics(_recovery_table(set(range(20))), w, faults=fault).recoveries[0]
    assert never.recovery_s is None and never.recovered_at_s is None and never.baseline_per_s == 10.0


def test_recovery_counts_backlog_burst_as_recovered():
    rows = [att(f"r{i}", i / 10, lat=0.01) for i in range(400)
            if not (200 <= i < 250)]
    rows += [att(f"s{i}", i / 10, done=25.05) for i in range(200, 250)]   # stalled, then answered
    r = mx.mode_metrics(table(*rows), mx.Window(0, 40), faults=(mx.Fault(20.0, "pause"),)).recoveries[0]
    assert r.recovered_at_s == 25.0 and r.recovery_s == 5.0


def test_faults_from_meta_sorted_and_tolerant():
    f = mx.faults_from_meta([{"t_s": 30, "kind": "b"}, {"t_s": 10, "kind": "a", "target": "x"}, {"kind": "no time"}])
    assert [x.t_s for x in f] == [10.0, 30.0] and f[0].target == "x"


# ---------------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("tbl", [
    table(),                                                   # nothing at all
    table(att("w", 1.0), att("x", 25.0)),                      # rows, none due in the window
])
def test_empty_window_is_well_defined(tbl):
    m = mx.mode_metrics(tbl, mx.Window(10, 10))
    j = as_json(m)
    assert j["counts"] == {"sent": 0, "ok": 0, "failed": 0, "attempts": 0, "failed_attempts": 0,
                           "duplicates": 0, "reviews_ok": 0}
    assert j["successful_throughput"] == 0.0 and j["reviews_per_s"] == 0.0
    assert j["error_rate"] is None and j["retry_amplification"] is None
    assert j["latency_ms"]["p50"] is None and j["spread_1s"]["cv"] is None
    assert j["spread_1s"]["mean"] == 0.0


def test_all_failed_run():
    t = table(*[att(f"r{i}", float(i), ok=False, kind="timeout", lat=1.0) for i in range(5)])
    m = mx.mode_metrics(t, mx.Window(0, 5), ceiling=mx.Ceiling(100.0, "measured"))
    j = as_json(m)
    assert (m.counts.ok, m.counts.failed) == (0, 5)
    assert j["successful_throughput"] == 0.0 and j["error_rate"] == 1.0
    assert j["latency_ms"]["p99"] is None
    assert m.throughput_cv is None and m.efficiency == 0.0
    assert j["error_kinds"] == {"timeout": 5}


def test_single_request():
    m = mx.mode_metrics(table(att("only", 3.0, lat=0.02)), mx.Window(0, 10))
    assert m.successful_throughput == approx(0.1)
    lat = m.latency_ms
    assert lat.n == 1 and lat.p50 == lat.p99 == lat.p999 == lat.max == approx(20.0)
    assert m.spread_1s.mean == approx(0.1) and m.spread_1s.std == approx(0.3)
    assert m.throughput_cv == approx(3.0)
    as_json(m)


def test_window_rejects_nonsense():
    with pytest.raises(ValueError):
        mx.Window(0, 0)
    with pytest.raises(ValueError):
        mx.Window(-1, 10)


def test_recompute_is_identical_and_order_free():
    t = _error_table()
    w = mx.Window(0, 10)
    a = as_json(mx.mode_metrics(t, w))
    b = as_json(mx.mode_metrics(t, w))
    shuffled = t.sample(frac=1.0, random_state=3).reset_index(drop=True)
    c = as_json(mx.mode_metrics(shuffled, w))
    assert a == b == c
    pd.testing.assert_frame_equal(mx.error_series(t, w), mx.error_series(shuffled, w))


def test_ratios_stream_over_rest():
    w = mx.Window(0, 10)
    rest = mx.mode_metrics(table(*[att(f"r{i}", float(i), lat=0.02) for i in range(4)]), w, mode="rest")
    stream = mx.mode_metrics(table(*[att(f"s{i}", float(i), lat=0.01) for i in range(6)]), w, mode="stream")
    r = mx.ratios(rest, stream)
    assert r["successful_throughput"] == approx(1.5)
    assert r["latency_ms.p99"] == approx(0.5)
    dead = mx.mode_metrics(table(att("x", 1.0, ok=False)), w, mode="rest")
    assert mx.ratios(dead, stream)["successful_throughput"] is None
    assert set(mx.ratios(None, stream).values()) == {None}


def test_cpu_roles_and_window_mean():
    cpu = pd.DataFrame({
        "t_s": [0, 0, 0, 0, 5, 5, 5, 5],
        "process": ["nginx", "uwsgi", "locust-driver", "kafka"] * 2,
        "pid": [1, 2, 3, 4] * 2,
        "cpu_percent": [10, 60, 30, 20, 20, 80, 30, 10],
    })
    roles = mx.cpu_by_role(cpu)
    assert roles.loc[roles["t_s"] == 5, "service"].item() == 100
    assert mx.cpu_means(roles, mx.Window(4, 10)) == {"broker": 10.0, "driver": 30.0, "service": 100.0}
    assert set(mx.cpu_by_role(cpu, {4: "service"}).columns) == {"t_s", "service", "driver"}


def test_jsonable_turns_nan_into_none():
    assert mx.jsonable({"a": np.float64("nan"), "b": [np.int32(3), math.inf]}) == {"a": None, "b": [3, None]}


def test_rate_steps_and_maximum_sustainable_throughput():
    assert mx.rate_steps({"arrival": {"open": {"rate": {"shape": "constant", "ops_per_s": 5}}}}) == []
    steps = mx.rate_steps({"arrival": {"open": {"rate": {"shape": "steps",
                                                         "steps": [[0, 2], [10, 4], [20, 8]]}}}})
    assert steps == [(0.0, 2.0), (10.0, 4.0), (20.0, 8.0)]
    rows = []
    for i in range(20):   # step 1: 2 req/s, 10 ms each
        rows.append(att(f"a{i}", i * 0.5, lat=0.010))
    for i in range(40):   # step 2: 4 req/s, 100 ms each (p99 over a 50 ms SLO)
        rows.append(att(f"b{i}", 10 + i * 0.25, lat=0.100))
    for i in range(80):   # step 3: 8 req/s, fast but 1 in 10 fails (over a 1 % error bound)
        rows.append(att(f"c{i}", 20 + i * 0.125, lat=0.005, ok=i % 10 != 0))
    st = mx.step_metrics(table(*rows), steps, 30.0, slo_p99_ms=50, max_error_rate=0.01)
    assert [s.requests for s in st] == [20, 40, 80] and [s.ok for s in st] == [20, 40, 72]
    assert st[0].ok_per_s == approx(2.0) and st[2].ok_per_s == approx(7.2)
    assert st[1].p99_ms == approx(100.0) and st[2].error_rate == approx(0.1)
    assert [s.sustainable for s in st] == [True, False, False]
    assert mx.max_sustainable(st).offered_per_s == 2.0
    # without a latency bound the second step is fine; no step at all is None
    st2 = mx.step_metrics(table(*rows), steps, 30.0, slo_p99_ms=None, max_error_rate=0.01)
    assert mx.max_sustainable(st2).offered_per_s == 4.0
    empty = mx.step_metrics(table(att("late", 99.0)), steps, 30.0, slo_p99_ms=50,
                            max_error_rate=0.01)   # no request due in any step
    assert [s.requests for s in empty] == [0, 0, 0] and mx.max_sustainable(empty) is None


# -- broker drift ----------------------------------------------------------------------------

def _steady(n_per_s: int, seconds: int, broker_cpu) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = [att(f"r{s}-{i}", s + i / n_per_s, mode="stream")
            for s in range(seconds) for i in range(n_per_s)]
    cpu = pd.DataFrame({"t_s": [s + 0.5 for s in range(seconds)],
                        "broker": [broker_cpu(s) for s in range(seconds)],
                        "service": [30.0] * seconds})
    return table(*rows), cpu


def test_broker_drift_sees_a_broker_whose_cost_per_request_grows():
    w = mx.Window(warmup_s=0, duration_s=30)
    tbl, cpu = _steady(10, 30, lambda s: 20.0 + 2.0 * s)       # 20 % -> 78 % at a steady load
    d = mx.broker_drift(cpu, tbl, w)
    assert d["first_cpu_percent"] == pytest.approx(29.0) and d["last_cpu_percent"] == pytest.approx(69.0)
    assert d["ratio"] == pytest.approx(69 / 29, rel=0.02)
    # the same CPU per request at twice the load is not drift
    tbl2, cpu2 = _steady(10, 30, lambda s: 30.0)
    assert mx.broker_drift(cpu2, tbl2, w)["ratio"] == pytest.approx(1.0, rel=0.02)
    # no broker column (REST), no answers: nothing to say
    assert mx.broker_drift(cpu.drop(columns="broker"), tbl, w) is None
    assert mx.broker_drift(cpu, tbl.iloc[0:0], w) is None


def test_caveats_name_the_broker_and_stay_quiet_below_the_threshold():
    from analysis.summary import BROKER_DRIFT_WARN, caveats, summary_markdown
    drift = {"ratio": 2.4, "first_cpu_percent": 25.0, "last_cpu_percent": 60.0}
    s = {"modes": {"rest": {"broker_drift": None},
                   "stream": {"broker": {"name": "tansu", "version": "0.6.0"},
                              "broker_drift": drift}}}
    (line,) = caveats(s)
    assert line.startswith("stream: tansu's CPU per answered request grew 2.4x")
    assert "the broker, not the deployment" in line and "25% -> 60%" in line
    assert "Caveats:" in summary_markdown({**s, "scenario": "x", "ratios": {}})
    s["modes"]["stream"]["broker"] = {"name": "kafka"}
    assert "memory storage" not in caveats(s)[0]
    s["modes"]["stream"]["broker_drift"] = {**drift, "ratio": BROKER_DRIFT_WARN - 0.01}
    assert caveats(s) == []
    assert "Caveats" not in summary_markdown({**s, "scenario": "x", "ratios": {}})


def test_answered_in_window_counts_completions_not_due_times():
    """A backlog answered after the window counts in reviews_per_s (due in the window) but not
    in reviews_answered_per_s (answered in it)."""
    w = mx.Window(warmup_s=0, duration_s=10)
    rows = [att(f"a{i}", 1.0 + i * 0.5, lat=0.1, batch=10) for i in range(10)]      # on time
    rows += [att(f"b{i}", 2.0 + i * 0.5, lat=20.0, batch=10) for i in range(10)]    # after the window
    m = mx.mode_metrics(table(*rows), w)
    assert m.reviews_per_s == pytest.approx(20.0)
    assert m.reviews_answered_per_s == pytest.approx(10.0)
    assert mx.answered_in_window(table(*rows).iloc[0:0], w) == 0.0


def test_broker_cost_is_cpu_per_thousand_answered_requests():
    w = mx.Window(warmup_s=0, duration_s=30)
    tbl, cpu = _steady(10, 30, lambda s: 30.0)     # 30 % of a core for 300 answers in 30 s
    c = mx.broker_cost(cpu, tbl, w)
    assert c["answered"] == 300 and c["cpu_percent"] == pytest.approx(30.0)
    assert c["cpu_ms_per_1k_answered"] == pytest.approx(0.30 * 30 / 300 * 1e6)   # 30,000 ms
    # twice the answers for the same CPU: half the cost per answer
    tbl2, _ = _steady(20, 30, lambda s: 30.0)
    assert mx.broker_cost(cpu, tbl2, w)["cpu_ms_per_1k_answered"] == pytest.approx(15_000)
    assert mx.broker_cost(cpu.drop(columns="broker"), tbl, w) is None
    assert mx.broker_cost(cpu, tbl.iloc[0:0], w) is None


def test_summary_markdown_names_the_broker_and_its_cost():
    from analysis.summary import broker_lines, summary_markdown
    s = {"scenario": "x", "ratios": {},
         "modes": {"rest": {"broker": None, "broker_cost": None},
                   "stream": {"broker": {"name": "kafka", "version": "3.9.1"},
                              "broker_cost": {"cpu_percent": 12.0, "answered": 6000,
                                              "cpu_ms_per_1k_answered": 1200.0}}}}
    assert broker_lines(s) == ["stream: kafka 3.9.1: 1,200 CPU-ms per 1,000 answered requests "
                               "(12% of a core over the window)"]
    assert "- stream: kafka 3.9.1: 1,200 CPU-ms" in summary_markdown(s)


def test_a_synthetic_model_cost_is_said_first_in_the_caveats():
    from analysis.summary import _model_line, caveats

    info = {"name": "imdb-tfidf", "version": "3", "synthetic_cost_us": 250,
            "synthetic_cost": {"label": "synthetic: +250 µs of CPU per input"}}
    line = _model_line(info)
    assert line == {"name": "imdb-tfidf", "version": "3",
                    "synthetic": "synthetic: +250 µs of CPU per input"}
    out = caveats({"modes": {}, "model": line})
    assert out and out[0].startswith("the model was made costlier on purpose (synthetic: +250")
    assert not any("costlier" in c for c in caveats({"modes": {}, "model": _model_line(
        {"name": "imdb-tfidf", "version": "3"})}))
