"""make capacity without a stack: the rate search, the sustained test of a step, the headroom
verdict and what it says limits a driver."""

from __future__ import annotations

import pytest

from loadgen import capacity as cap


def _step(rate: float, sustained: bool, **kw) -> cap.Step:
    base = dict(mode="rest", rate=rate, sustained=sustained, sent_per_s=rate, ok_fraction=1.0,
                valid=sustained, invalid_reasons=[] if sustained else ["send lateness p99 "
                                                                       "31.0 ms > bound 20 ms"],
                lateness_ms={"p50": 1, "p99": 5, "max": 9}, round_trip_ms={},
                driver_cpu_percent=50.0, driver_cpu_max_1s=60.0)
    return cap.Step(**{**base, **kw})


def test_nice_rates():
    assert cap.nice(4321) == 4300 and cap.nice(1521.6) == 1500 and cap.nice(87) == 87
    assert cap.nice(12_345) == 12_000


@pytest.mark.parametrize("limit", [700, 2500, 4321, 9000, 30_000])
def test_search_finds_the_highest_sustained_rate_within_the_resolution(limit):
    steps = cap.search(lambda r: _step(r, r <= limit), start=3000, max_steps=12)
    best = cap.best_of(steps)
    failed = [s.rate for s in steps if not s.sustained and s.rate > (best.rate if best else 0)]
    assert best is not None and best.rate <= limit
    assert failed and min(failed) / best.rate <= cap.RESOLUTION * 1.05   # bracketed tightly
    assert len({s.rate for s in steps}) == len(steps)                    # never a rate twice


def test_search_is_bounded_by_max_steps():
    steps = cap.search(lambda r: _step(r, True), start=1000, max_steps=4)
    assert [s.rate for s in steps] == [1000, 1500, 2200, 3300]


def test_next_rate_grows_shrinks_then_bisects():
    assert cap.next_rate([(1000, True)]) == 1500
    assert cap.next_rate([(3000, False)]) == 2000
    mid = cap.next_rate([(3000, False), (2000, True)])
    assert 2000 < mid < 3000
    assert cap.next_rate([(2000, True), (2200, False)]) is None            # within 15 %


def test_headroom_against_the_peak_measured_in_the_run():
    peak = cap.Peak("rest", 1600.0, 99.0, "REST defaults")
    v = cap.Verdict("rest", 3.0, _step(5000, True), peak)
    assert v.headroom == pytest.approx(3.125) and v.met
    v = cap.Verdict("rest", 3.0, _step(4000, True), peak)
    assert not v.met and v.to_dict()["headroom"] == 2.5
    assert cap.Verdict("rest", 3.0, _step(4000, True), None).met is None
    assert cap.first_start(peak, 2000, 3.0) == 4800 and cap.first_start(None, 2000, 3.0) == 2000


def _driver_json(requests=20_000, ok=20_000, valid=True, match=True, reasons=()):
    return {"counts": {"requests": requests, "ok": ok}, "valid": valid,
            "invalid_reasons": list(reasons),
            "crosscheck": {"match": match, "response_time_ms": {"ours_p50": 0.3,
                                                                 "ours_p99": 2.0}},
            "lateness_s": {"p50": 0.001, "p99": 0.004, "max": 0.009},
            "cpu": {"percent_mean": 60.0, "percent_max_1s": 70.0, "user_s": 2.0,
                    "system_s": 1.0}, "settings": {"shards": 2}}


def test_a_step_is_sustained_only_when_valid_complete_on_rate_and_counted():
    # 4 s (1 s warm-up + 3 s) at 5000/s = 20,000 planned
    assert cap.step_result("rest", 5000, _driver_json(), 3.0).sustained
    assert cap.step_result("rest", 5000, _driver_json(), 3.0).shards == 2
    assert not cap.step_result("rest", 5000, _driver_json(valid=False), 3.0).sustained
    assert not cap.step_result("rest", 5000, _driver_json(ok=19_900), 3.0).sustained
    assert not cap.step_result("rest", 5000, _driver_json(requests=19_000, ok=19_000),
                               3.0).sustained
    assert not cap.step_result("rest", 5000, _driver_json(match=False), 3.0).sustained


def test_profile_summary_keeps_the_sending_and_drops_imports_and_the_table():
    raw = [
        "<module> (loadgen/__main__.py:1);_find_and_load (<frozen importlib._bootstrap>:1) 500",
        'process 12:"python -m loadgen drive rest";<module> (loadgen/__main__.py:1);'
        "_call_with_frames_removed (<frozen importlib._bootstrap>:241) 70",
        "Hub.run (gevent/hub.py:647);RestRun._request (loadgen/rest_driver.py:210);"
        "Wire.request (loadgen/http1.py:264);SocketMixin.send (gevent/_socketcommon.py:716) 60",
        "Hub.run (gevent/hub.py:647);RestRun._request (loadgen/rest_driver.py:212);"
        "_parse_head (loadgen/http1.py:189) 30",
        'process 12:"python -m loadgen drive rest";Hub.run (gevent/hub.py:647);'
        "RestRun._request (loadgen/rest_driver.py:212);_parse_head (loadgen/http1.py:190) 10",
        "drive (loadgen/rest_driver.py:460);to_frame (loadgen/record.py:85) 200",
    ]
    p = cap.profile_summary(raw)
    assert p["samples"] == 100
    assert p["top_frames"][0] == ["SocketMixin.send (gevent/_socketcommon.py)", 60.0]
    assert p["top_frames"][1] == ["_parse_head (loadgen/http1.py)", 40.0]   # lines folded
    assert p["packages"] == {"gevent": 60.0, "loadgen": 40.0}
    assert cap.profile_summary(["garbage"])["samples"] == 0


def test_limits_say_whether_the_driver_was_cpu_bound_or_crowded_out():
    busy = _step(6000, False, driver_cpu_percent=97.0, cpu_user_s=2.0, cpu_system_s=1.0,
                 driver_cores={"processes": 99.0, "irq": 1.0, "steal": 0.0})
    text = "\n".join(cap.limits(busy, 1, {"samples": 10, "packages": {"gevent": 60.0},
                                          "top_frames": [["send (x)", 60.0]]}))
    assert "31.0 ms" in text and "-> CPU-bound" in text
    assert "user 65%, kernel 32%" in text and "gevent 60.0%" in text and "send (x)" in text
    crowded = _step(6000, False, driver_cpu_percent=45.0,
                    driver_cores={"processes": 96.0, "irq": 3.0, "steal": 0.0})
    text = "\n".join(cap.limits(crowded, 1, {"error": "py-spy not installed"}))
    assert "not CPU-bound, but its cores were full" in text and "other processes 51%" in text
    assert "py-spy not installed" in text
    idle = _step(6000, False, driver_cpu_percent=45.0,
                 driver_cores={"processes": 50.0, "irq": 3.0, "steal": 0.0})
    assert "had idle time" in "\n".join(cap.limits(idle, 1, None))
    two = _step(9000, False, driver_cpu_percent=120.0,
                driver_cores={"processes": 130.0, "irq": 5.0, "steal": 0.0})
    assert "had idle time" in "\n".join(cap.limits(two, 2, None))         # 2 cores: 200 %


def test_placement_defaults_to_the_bench_split(monkeypatch):
    monkeypatch.setattr(cap.os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    assert cap.placement(None, None) == ((1, 2, 3), (0,))
    assert cap.placement("2", "0-1") == ((2,), (0, 1))
    monkeypatch.setattr(cap.os, "sched_getaffinity", lambda _pid: {5})
    assert cap.placement(None, None) == ((5,), (5,))
