"""Pure planning: open-loop send times, closed-loop client counts, retry backoff, payload ids."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen.payloads import Payloads, check_rest_answer, check_stream_answer, synthetic_texts
from loadgen.scenario import (
    ClosedArrival,
    OpenArrival,
    RateBurst,
    RateConstant,
    RateRamp,
    RateSteps,
    Retry,
)
from loadgen.schedule import (
    backoff_s,
    client_steps,
    clients_at,
    expected_count,
    may_retry,
    plan_open,
    rate_at,
)


def arrival(rate, process="constant", seed=0):
    return OpenArrival(rate=rate, process=process, seed=seed)


def test_constant_process_exact_count_and_spacing():
    p = plan_open(arrival(RateConstant(100)), 10.0, 10**6)
    assert len(p) == 1000 and not p.truncated
    gaps = np.diff(p.intended_s)
    assert np.allclose(gaps, 0.01)
    assert p.intended_s[0] == 0 and p.intended_s[-1] < 10


def test_plan_is_sorted_and_within_horizon():
    for rate in (RateConstant(50), RateSteps(((0, 10), (2, 200), (4, 0), (6, 30))),
                 RateRamp(0, 300, 1, 5), RateBurst(5, 500, 1, 0.5, 2)):
        for proc in ("constant", "poisson"):
            t = plan_open(arrival(rate, proc, 3), 8.0, 10**6).intended_s
            assert np.all(np.diff(t) >= 0)
            assert t.size == 0 or (t[0] >= 0 and t[-1] < 8.0)


def test_poisson_seeded_reproducible_and_seed_matters():
    a = plan_open(arrival(RateConstant(200), "poisson", 7), 5, 10**6).intended_s
    b = plan_open(arrival(RateConstant(200), "poisson", 7), 5, 10**6).intended_s
    c = plan_open(arrival(RateConstant(200), "poisson", 8), 5, 10**6).intended_s
    assert np.array_equal(a, b)
    assert len(a) != len(c) or not np.array_equal(a, c)


def test_poisson_mean_and_exponential_gaps():
    # 60,000 expected arrivals: the count is within 4 sigma, gaps are exponential (CV ~ 1)
    p = plan_open(arrival(RateConstant(1000), "poisson", 1), 60, 10**6)
    n = len(p)
    assert abs(n - 60000) < 4 * np.sqrt(60000)
    gaps = np.diff(p.intended_s)
    assert abs(gaps.mean() - 1e-3) < 3e-5
    assert abs(gaps.std() / gaps.mean() - 1) < 0.03


@settings(max_examples=25, deadline=None)
@given(rate=st.floats(5, 500), seed=st.integers(0, 2**32 - 1))
def test_poisson_count_close_to_expected(rate, seed):
    H = 20.0
    n = len(plan_open(arrival(RateConstant(rate), "poisson", seed), H, 10**7))
    mean = rate * H
    assert abs(n - mean) < 6 * np.sqrt(mean) + 1


def test_steps_rates_per_window():
    rate = RateSteps(((0, 100), (5, 400), (10, 0), (12, 50)))
    t = plan_open(arrival(rate), 15, 10**6).intended_s
    counts = [np.sum((t >= a) & (t < b)) for a, b in ((0, 5), (5, 10), (10, 12), (12, 15))]
    assert counts == [500, 2000, 0, 150]
    assert expected_count(rate, 15) == pytest.approx(2650)
    assert rate_at(rate, 6, 15) == 400 and rate_at(rate, 11, 15) == 0


def test_ramp_is_linear_in_rate():
    rate = RateRamp(0, 1000, 0, 10)
    t = plan_open(arrival(rate, "poisson", 5), 10, 10**6).intended_s
    assert abs(len(t) - 5000) < 4 * np.sqrt(5000)
    first, last = np.sum(t < 2), np.sum(t >= 8)
    assert first == pytest.approx(200, abs=60) and last == pytest.approx(1800, abs=170)
    # clipped by the horizon: the ramp keeps its slope, the rest is not planned
    assert expected_count(rate, 5) == pytest.approx(1250)
    assert rate_at(RateRamp(10, 20, 2, 4), 1, 10) == 10
    assert rate_at(RateRamp(10, 20, 2, 4), 3, 10) == pytest.approx(15)
    assert rate_at(RateRamp(10, 20, 2, 4), 9, 10) == 20


def test_burst_windows():
    rate = RateBurst(base_ops_per_s=10, peak_ops_per_s=1000, at_s=1, length_s=0.5, every_s=3)
    t = plan_open(arrival(rate), 8, 10**6).intended_s
    for w0 in (1, 4, 7):
        assert np.sum((t >= w0) & (t < w0 + 0.5)) == pytest.approx(500, abs=2)
    assert np.sum((t >= 2) & (t < 3.5)) == pytest.approx(15, abs=2)
    single = RateBurst(10, 1000, 1, 0.5, None)
    assert expected_count(single, 8) == pytest.approx(10 * 7.5 + 500)


def test_max_requests_bounds_the_plan():
    p = plan_open(arrival(RateConstant(1000), "poisson", 1), 100, 1234)
    assert len(p) == 1234 and p.truncated
    p = plan_open(arrival(RateConstant(1000)), 100, 1234)
    assert len(p) == 1234 and p.truncated


def test_closed_loop_clients_over_time():
    a = ClosedArrival(clients=((0.0, 2), (10.0, 5), (20.0, 1)))
    assert [clients_at(a, t) for t in (0, 9.9, 10, 19, 25)] == [2, 2, 5, 5, 1]
    assert client_steps(a, 15) == [(0.0, 2), (10.0, 5)]


def test_backoff_policies():
    exp = Retry("exponential", 5, 0.1, 0.5, 0.0)
    assert [backoff_s(exp, a, 1.0) for a in (1, 2, 3, 4)] == pytest.approx([0.1, 0.2, 0.4, 0.5])
    fixed = Retry("fixed", 3, 0.3, 5, 0.0)
    assert backoff_s(fixed, 2, 0.5) == pytest.approx(0.3)
    full = Retry("exponential", 5, 1.0, 8, 1.0)
    assert backoff_s(full, 3, 0.25) == pytest.approx(1.0)  # 4 s * U=0.25
    assert may_retry(exp, 4) and not may_retry(exp, 5)
    assert not may_retry(Retry(), 1)


def test_payload_ids_cycling_and_bodies():
    texts = synthetic_texts(7, 1, 50)
    assert texts == synthetic_texts(7, 1, 50) and all(len(t) == 50 for t in texts)
    p1 = Payloads(texts, 1, "run-1")
    assert p1.op_id(5) == "run-1-5" and p1.event_id(5, 0) == "run-1-5"
    assert p1.parse_event_id("run-1-5") == 5
    assert p1.parse_event_id("__probe__") is None and p1.parse_event_id("run-2-5") is None
    p3 = Payloads(texts, 3, "run-1")
    assert p3.event_id(2, 1) == "run-1-2.1" and p3.parse_event_id("run-1-2.1") == 7
    assert p3.parse_event_id("run-1-2.3") is None and p3.parse_event_id("run-1-2") is None
    assert p3.op_texts(2) == [texts[6], texts[0], texts[1]]       # cycles through the sample
    import orjson
    single = orjson.loads(p1.rest_body(3))
    assert single == {"id": "run-1-3", "text": texts[3]}
    batch = orjson.loads(p3.rest_body(1))
    assert [i["id"] for i in batch["instances"]] == ["run-1-1.0", "run-1-1.1", "run-1-1.2"]
    ev = orjson.loads(p3.event_value("run-1-1.2", 5, 1700000000.25))
    assert ev == {"id": "run-1-1.2", "text": texts[5], "sent_at": 1700000000.25}
    ids = {p3.event_id(n, k) for n in range(100) for k in range(3)}
    assert len(ids) == 300
    with pytest.raises(ValueError):
        Payloads(texts, 1, "has.dot")


def test_answer_checks():
    ids = ["a", "b"]
    good = b'{"predictions":[{"id":"a","label":1,"score":0.9},{"id":"b","label":0,"score":0.1}]}'
    assert check_rest_answer(good, ids) is None
    assert "not JSON" in check_rest_answer(b"nope", ids)
    assert "1 predictions for 2" in check_rest_answer(
        b'{"predictions":[{"id":"a","label":1,"score":0.9}]}', ids)
    # any JSON answer is the model's own business (a label of 7 is fine), only the ids are checked
    assert check_rest_answer(good.replace(b'"label":1', b'"label":7'), ids) is None
    assert "do not match" in check_rest_answer(good.replace(b'"b"', b'"c"'), ids)
    assert check_stream_answer(b'{"id":"a","label":1,"score":0.5}')
    assert not check_stream_answer(b'{"id":"a","text":"x"}')
    assert not check_stream_answer(None)


def test_driver_record_validity_open_and_closed_loop():
    from loadgen import ledger as L

    clock = L.Clock()
    common = dict(mode="rest", run_id="r", scenario="s", clock=clock, stop_s=2.0,
                  settings={"x": 1}, p99_bound_s=0.02)
    late_ok = {"p99": 0.001, "max": 0.005}
    late_bad = {"p99": 0.05, "max": 2.0}
    d = L.driver_record(**common, interrupted=[], lateness=late_ok, saturated=0, max_lateness_s=1.0)
    assert d["valid"] and d["complete"] and d["invalid_reasons"] == []
    assert d["settings"] == {"x": 1, "lateness_p99_bound_s": 0.02}
    assert d["end_epoch"] == clock.epoch(2.0) and d["t0_epoch"] == clock.t0_epoch
    bad = L.driver_record(**common, interrupted=[], lateness=late_bad, saturated=3, max_lateness_s=1.0)
    assert not bad["valid"] and len(bad["invalid_reasons"]) == 3   # saturated, p99, max
    # closed loop: lateness does not apply; an interruption and extra reasons still do
    closed = L.driver_record(**common, interrupted=[], lateness=late_bad, saturated=0,
                             max_lateness_s=None)
    assert closed["valid"]
    cut = L.driver_record(**common, interrupted=[15], lateness=late_ok, saturated=0,
                          max_lateness_s=None, extra=["Locust disagrees"])
    assert not cut["valid"] and not cut["complete"] and cut["interrupted"]
    assert cut["invalid_reasons"] == ["Locust disagrees", "interrupted by signal 15"]


def test_driver_lines_and_outputs_are_written_once_for_both_drivers(tmp_path, capsys):
    """The start line, the once-a-second progress line and the final line, and driver.json: one
    writer (loadgen.ledger) for both drivers, so the bench reads the same fields from each."""
    import json

    from loadgen import ledger as L
    from loadgen import record

    clock = L.Clock()
    L.start_line("stream", "r", clock)
    beat = L.Heartbeat(L.CpuMeter(), warmup_s=1.0, duration_s=2.0)
    beat(0.5, 3, 1, 0, 2)
    beat(1.5, 5, 4, 1, 0)
    L.Heartbeat(L.CpuMeter(), 1.0, 2.0, quiet=True)(3.5, 5, 5, 0, 0)   # samples, prints nothing
    row = record.Attempt("r", "stream", "r-0", 1, 1, 0.0, 0.0, 0.1, 0.2, "ok", None, None, 0)
    df = record.to_frame([row])
    counts = L.check_accounting(df, {"r-0"})
    driver = {**L.driver_record(mode="stream", run_id="r", scenario="s", clock=clock, stop_s=1.0,
                                interrupted=[], lateness=L.dist([0.001]), saturated=0,
                                p99_bound_s=0.02, max_lateness_s=1.0, settings={}),
              "counts": counts, "lateness_s": L.dist([0.001]), "cpu": L.CpuMeter().summary()}
    assert L.finish(tmp_path, df, driver, mode="stream", duplicates=0) is driver
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x.get("event") for x in lines] == ["start", None, None, "final"]
    assert lines[0]["t0_epoch"] == clock.t0_epoch
    assert [x["phase"] for x in lines[1:3]] == ["warmup", "measure"]
    fin = lines[-1]
    assert list(fin)[:7] == ["event", "mode", "sent", "ok", "failed", "attempts", "duplicates"]
    assert (fin["sent"], fin["ok"], fin["valid"], fin["out"]) == (1, 1, True, str(tmp_path))
    assert json.loads((tmp_path / "driver.json").read_text())["counts"]["requests"] == 1
    assert len(record.read(tmp_path / "requests.parquet")) == 1
