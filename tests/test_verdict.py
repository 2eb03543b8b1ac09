"""The verdict's pure parts: intervals, winners per regime, the capacity plan, the article's rules,
every run's opening paragraph, and the phases bench/verdict.py asks the driver for."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import verdict as vd
from bench import verdict as bv
from bench.calibrate import ops_per_s
from loadgen import relative as rel
from loadgen.scenario import load_scenario, parse_scenario


def pt(load, served, *, phase="open", p99=None, err=0.0, spread=0.02, n=8, lat=None, amp=1.0,
       offered=None, seed=0):
    rng = np.random.default_rng(seed)
    windows = served * (1 + spread * rng.standard_normal(n))
    lat = lat if lat is not None else rng.gamma(4.0, (p99 or 40) / 10, 400)
    p99 = p99 if p99 is not None else vd.statistic(lat, "p99")
    return vd.Point(phase=phase, load=load, offered_reviews_per_s=offered,
                    reviews_per_s=vd.sample(windows), latency_ms=vd.sample(lat, "p99"),
                    p50_ms=float(np.median(lat)), p99_ms=p99, error_rate=err,
                    retry_amplification=amp)


def figs(mode, kind, cap, *, p99s=(30, 40, 60, 120, 400, 2000), kept=(0.45, 0.3),
         errs=(0.06, 0.2), amps=(1.6, 2.4), broker_cpu=None, service_cpu=98.0, engine=None):
    loads = (0.25, 0.5, 0.75, 0.9, 1.0, 1.1)
    steps = tuple(pt(f, f * cap, p99=p, offered=f * cap, seed=i,
                     lat=np.full(200, float(p)))
                  for i, (f, p) in enumerate(zip(loads, p99s)))
    over = tuple(pt(f, k * cap, phase="overload", err=e, amp=a, seed=10 + i)
                 for i, (f, k, e, a) in enumerate(zip((1.5, 3.0), kept, errs, amps)))
    return vd.ModeFigures(mode=mode, kind=kind, engine=engine or kind, batch_size=100,
                          capacity_reviews_per_s=cap,
                          saturated=pt(1.0, cap, phase="saturated", seed=99),
                          steps=steps, overload=over, workers=1, service_cpus=1,
                          partitions=8 if kind == "stream" else None, service_cpu=service_cpu,
                          broker_cpu=broker_cpu, broker="kafka 3.9.1" if broker_cpu else None)


REST = figs("rest", "rest", 4000.0)
STREAM = figs("stream", "stream", 1800.0, p99s=(60, 70, 90, 150, 600, 3000), kept=(0.99, 0.98),
              errs=(0.0, 0.0), amps=(1.0, 1.0), broker_cpu=45.0, engine="faust")


# --------------------------------------------------------------------------------------------
# intervals


def test_ratio_interval_is_seeded_and_brackets_a_clear_difference():
    a = vd.sample(np.random.default_rng(1).normal(200, 5, 10))
    b = vd.sample(np.random.default_rng(2).normal(100, 5, 10))
    ci = vd.ratio_ci(a, b)
    assert ci == vd.ratio_ci(a, b)                        # same samples, same interval
    assert 1.8 < ci[0] < a.value / b.value < ci[1] < 2.2
    same = vd.ratio_ci(vd.sample(np.random.default_rng(3).normal(100, 10, 10)), b)
    assert same[0] < 1 < same[1]                           # no difference: the interval holds 1


def test_ratio_interval_of_a_p99_and_of_nothing():
    slow = vd.sample(np.random.default_rng(1).gamma(4, 25, 3000), "p99")
    fast = vd.sample(np.random.default_rng(2).gamma(4, 5, 3000), "p99")
    lo, hi = vd.ratio_ci(slow, fast)
    assert 3 < lo <= slow.value / fast.value <= hi < 7
    assert vd.ratio_ci(vd.sample([]), fast) == (None, None)
    lo, hi = vd.ratio_ci(vd.sample([5.0, 6.0]), vd.sample([0.0, 0.0, 1.0]))   # often 0 below
    assert lo is not None and lo > 1 and hi is None
    assert vd.ci_text((1.2, None)) == "≥ 1.20×" and vd.ci_text((None, None)) == "–"
    with pytest.raises(ValueError):
        vd.Sample((1.0,), "p50")


# --------------------------------------------------------------------------------------------
# regimes


def test_each_regime_names_its_winner_margin_and_interval():
    regs = {r.key: r for r in vd.regimes([REST, STREAM], slo_p99_ms=500, max_error_rate=0.01)}
    assert list(regs) == ["latency_¼", "latency_½", "latency_¾", "slo", "saturated",
                          "overload_1.5x", "overload_3x"]
    light = regs["latency_¼"]                     # REST 30 ms against stream 60 ms: lower wins
    assert light.winner == "rest" and light.better == "lower"
    assert light.ratio == pytest.approx(2.0) and light.clear
    assert light.vs_first == {"stream": pytest.approx(2.0)}
    assert "REST wins by 2.00×" in light.sentence
    sat = regs["saturated"]                        # 4,000 against 1,800 reviews/s
    assert sat.winner == "rest" and sat.ratio == pytest.approx(4000 / 1800, rel=0.05)
    assert sat.ci95[0] < sat.ratio < sat.ci95[1] and sat.clear
    # REST keeps 30 % of 4,000 = 1,200 at 3x, the stream 98 % of 1,800 = 1,764: the stream wins
    over = regs["overload_3x"]
    assert over.winner == "stream" and over.ratio == pytest.approx(1764 / 1200, rel=0.05)
    assert "20.0 % failed" in over.sentence and "2.40 attempts" in over.sentence
    d = over.to_dict()
    assert list(d)[:4] == ["load", "winner", "ratio", "ci95"]


def test_the_slo_regime_uses_the_step_grid_as_its_interval():
    slo = vd.slo_capacity(REST, 500, 0.01)           # p99 400 ms at 1.0, 2,000 at 1.1
    assert slo.load == 1.0 and slo.reviews_per_s == pytest.approx(4000, rel=0.05)
    assert slo.next_offered_reviews_per_s == pytest.approx(4400)
    tight = vd.slo_capacity(STREAM, 100, 0.01)       # 60, 70, 90 ms pass; 150 fails
    assert tight.load == 0.75
    r = {x.key: x for x in vd.regimes([REST, STREAM], slo_p99_ms=500,
                                      max_error_rate=0.01)}["slo"]
    lo, hi = r.ci95                                  # the stream passes at 0.9, fails at 1.0
    assert lo < r.ratio < hi
    assert lo == pytest.approx(REST.step_at(1.0).served / STREAM.step_at(1.0).offered_reviews_per_s)
    assert hi == pytest.approx(REST.step_at(1.1).offered_reviews_per_s / STREAM.step_at(0.9).served)
    none = vd.slo_capacity(STREAM, 10, 0.01)
    assert none.reviews_per_s is None and none.load is None
    # a deployment with no step within the SLO loses it outright
    r = {x.key: x for x in vd.regimes([REST, STREAM], slo_p99_ms=35,
                                      max_error_rate=0.01)}["slo"]
    assert r.winner == "rest" and r.clear and r.ratio is None and "wins outright" in r.sentence


def test_a_difference_inside_the_noise_has_no_clear_winner():
    a = figs("rest", "rest", 1000.0)
    b = figs("stream", "stream", 1010.0)
    sat = {r.key: r for r in vd.regimes([a, b], slo_p99_ms=None, max_error_rate=None)}["saturated"]
    assert not sat.clear and "no clear winner" in sat.sentence


# --------------------------------------------------------------------------------------------
# the capacity plan


def test_the_plan_applies_n_minus_1_and_scales_the_broker():
    plan = vd.capacity_plan([REST, STREAM], 20_000, 500, 0.01)
    rest, stream = plan.modes
    per = REST.step_at(1.0).served
    assert rest.workers == math.ceil(20_000 / per) and rest.service_cores == rest.workers + 1
    assert rest.knobs == {"uwsgi_processes": rest.workers} and rest.broker_cores is None
    assert stream.per_worker_reviews_per_s == pytest.approx(STREAM.step_at(0.9).served)
    assert stream.knobs["faust_workers"] == stream.workers
    assert stream.partitions == max(stream.workers, 8)
    # the broker: 45 % of a core at 1,800 reviews/s, scaled to 20,000
    assert stream.broker_cores == math.ceil(20_000 * 0.45 / 1800)
    assert stream.total_cores == stream.service_cores + stream.broker_cores
    assert plan.cheapest == "rest"
    assert "N−1" in rest.sentence and any("linear" in a for a in plan.assumptions)
    d = plan.to_dict()
    assert d["modes"]["stream"]["total_cores"] == stream.total_cores


def test_no_plan_without_a_step_within_the_slo():
    p = vd.plan_mode(STREAM, 10_000, 1, 0.01)
    assert p.workers is None and p.total_cores is None and "no open-loop step" in p.sentence
    assert vd.capacity_plan([STREAM], 10_000, 1, 0.01).cheapest is None


# --------------------------------------------------------------------------------------------
# the article's rules


def test_the_first_rule_holds_in_behaviour_and_in_throughput_separately():
    # REST keeps 30 % of 4,000 at 3x (1,200), the stream 98 % of 1,800 (1,764): both claims hold
    r = vd.rule_stream([REST, STREAM])
    assert r.finding == "supported"
    assert r.figures["stream_kept"] == pytest.approx(0.98, abs=0.02)
    assert r.figures["stream_over_rest_saturated"] == pytest.approx(0.45)
    assert "degrades gracefully" in r.text
    # REST keeping 70 % (2,800) still serves more: graceful, but not more throughput
    sturdy = figs("rest", "rest", 4000.0, kept=(0.8, 0.7), errs=(0.01, 0.02))
    partly = vd.rule_stream([sturdy, STREAM])
    assert partly.finding == "partly supported" and "not more throughput" in partly.text
    dead = figs("rest", "rest", 4000.0, kept=(0.0, 0.0), errs=(1.0, 1.0), amps=(5, 5))
    r = vd.rule_stream([dead, STREAM])
    assert r.finding == "supported" and "REST served nothing there" in r.text
    assert "below it REST serves more per core" in r.text
    collapsing = figs("stream", "stream", 1800.0, kept=(0.4, 0.2), errs=(0.1, 0.3))
    assert vd.rule_stream([REST, collapsing]).finding == "not supported"
    assert vd.rule_stream([REST]).finding == "not tested"


def test_the_n_minus_1_rule_is_only_as_good_as_its_premise():
    assert vd.rule_n_minus_1([REST, STREAM]).finding == "partly supported"
    starved = figs("rest", "rest", 4000.0, service_cpu=40.0)
    r = vd.rule_n_minus_1([starved])
    assert r.finding == "not supported" and "No worker filled its core" in r.text
    # a core shared with other processes was still full: the core was the limit
    import dataclasses
    shared = dataclasses.replace(starved, core_busy=99.0)
    r = vd.rule_n_minus_1([shared])
    assert r.finding == "partly supported" and "other processes took the rest" in r.text
    assert "not measured" in vd.rule_n_minus_1([REST]).text


def test_the_verdict_block_has_the_contract_keys_and_words():
    b = vd.verdict_block([REST, STREAM], slo_p99_ms=500, max_error_rate=0.01,
                         target_reviews_per_s=10_000)
    assert {"regimes", "capacity", "plan", "rules", "caveats"} <= set(b)
    assert all({"load", "winner", "ratio", "ci95"} <= set(r) for r in b["regimes"])
    cap = b["capacity"]["stream"]
    assert cap["saturated_reviews_per_s"] == 1800 and len(cap["points"]) == 6 + 1 + 2
    words = vd.verdict_lines(b)
    assert len(words) == len(b["regimes"]) + 1 + 2     # regimes, the plan, two rules
    assert not any("req/s" in w for w in words)
    noisy = vd.caveats([figs("rest", "rest", 4000.0, service_cpu=50.0)])
    assert noisy and "floor" in noisy[0]


# --------------------------------------------------------------------------------------------
# every run's opening paragraph


def summary_of(rest_rps, stream_rps, *, ci=None, p99=(100.0, 50.0), errs=(0.0585, 0.0),
               source="windows"):
    return {"scenario": "seed", "baseline": "rest",
            "modes": {"rest": {"reviews_per_s": rest_rps, "successful_throughput": rest_rps / 1000,
                               "error_rate": errs[0], "failed_by_kind": {"timeout": 30},
                               "latency_ms": {"p99": p99[0]}},
                      "stream": {"reviews_per_s": stream_rps, "successful_throughput": stream_rps,
                                 "error_rate": errs[1], "failed_by_kind": {},
                                 "latency_ms": {"p99": p99[1]}}},
            "repeats": {"n": 1, "source": source, "windows": 10,
                        "metrics": {"stream/rest.reviews_per_s": {"ci95": list(ci or [])}}}}


def test_a_run_opens_with_who_served_more_reviews_and_never_a_requests_ratio():
    text = vd.run_verdict(summary_of(6436, 2782, ci=[0.40, 0.46]))
    assert text.startswith("Verdict at seed's load: REST served more reviews/s")
    assert "2.31×" in text and "0.43×" in text and "0.40–0.46× over 10 windows of one run" in text
    assert "REST 5.85 % (mostly timeout)" in text and "stream none" in text
    assert "457" not in text                       # the requests/s ratio of different sizes


def test_a_tie_in_throughput_says_who_answered_faster():
    text = vd.run_verdict(summary_of(100, 100.5, ci=[0.97, 1.04], errs=(0, 0)))
    assert "the same reviews/s within noise" in text and "stream answered faster" in text


def test_nothing_to_compare_with_one_mode():
    s = summary_of(1, 1)
    s["modes"] = {"rest": s["modes"]["rest"]}
    assert vd.run_verdict(s) is None
    s["modes"] = {"stream": {"reviews_per_s": 5}, "rest": None}
    assert "did not run" in vd.run_verdict(s)


# --------------------------------------------------------------------------------------------
# what the driver is asked to do


def test_a_stream_capacity_counts_operations_not_events():
    # a stream row is one event: 100-review operations at 1,800 reviews/s are 18 ops/s
    assert ops_per_s({"reviews_per_s": 1800.0, "ok_per_s": 1800.0}, 100) == pytest.approx(18)
    assert ops_per_s({"reviews_per_s": 4000.0, "ok_per_s": 40.0}, 100) == pytest.approx(40)


def test_phase_scenarios_scale_with_each_deployments_capacity():
    sc = load_scenario("verdict")
    cap = rel.Capacity("rest", ops_per_s=40.0, batch_size=100, timeout_s=sc.client.timeout_s)
    ph = bv.Phases()
    doc, spans = bv.open_scenario(sc, "rest", cap, ph)
    parsed = parse_scenario(doc)                      # the validator takes it
    steps = parsed.arrival.rate.steps
    assert [r for _, r in steps] == pytest.approx([f * 40 for f in ph.open_loads])
    assert steps[0][0] == 0 and steps[1][0] == ph.open_warmup_s + ph.open_step_s
    assert spans[0]["start_s"] == ph.open_warmup_s and spans[-1]["end_s"] == pytest.approx(
        ph.open_warmup_s + len(ph.open_loads) * ph.open_step_s)
    assert spans[2]["offered_reviews_per_s"] == pytest.approx(0.75 * 4000)
    assert parsed.modes == ("rest",) and parsed.client == sc.client
    # 1.5x: 1.5 x 5 s x 40 ops/s = 300 clients; capped by a per-address limit
    over = parse_scenario(bv.overload_scenario(sc, "rest", cap, 1.5, ph))
    assert over.arrival.clients == ((0.0, 300),) and over.client.retry.policy == "exponential"
    assert bv.overload_clients(cap, 3.0, limit=500) == 500
    assert bv.saturating_clients("stream", 100, 4) == 41
    assert bv.saturating_clients("rest", 100, 4) == 4
    sat = bv.saturate_scenario(sc, "stream", ph, 11)
    assert sat.calibration.mode == "stream" and sat.calibration.clients == 11


def test_the_default_verdict_fits_its_budget():
    est = bv.Phases().estimate_s(20) + bv.Phases().estimate_s(5)
    assert est < 10 * 60                           # <= 15 minutes with set-up and reports


def test_the_measured_scaling_of_the_computation_is_stated_not_assumed():
    sc = vd.Scaling(batch=100, cores=2, one_core_reviews_per_s=5000.0,
                    all_cores_reviews_per_s=9000.0)
    assert sc.ratio == pytest.approx(1.8) and sc.per_core == pytest.approx(0.9)
    assert vd.Scaling.from_dict({"batch": 100, "cores": 2, "one_core_reviews_per_s": 5000,
                                 "all_cores_reviews_per_s": 9000}) == sc
    assert vd.Scaling.from_dict(None) is None and vd.Scaling.from_dict({"batch": 1}) is None
    r = vd.rule_n_minus_1([REST], sc)
    assert "1.80× for 2× the cores (90% of linear)" in r.text and r.figures["scaling"]["ratio"]
    slow = vd.Scaling(100, 2, 5000.0, 7000.0)
    assert "below linear" in slow.sentence() and "below linear" not in sc.sentence()
    plan = vd.capacity_plan([REST], 10_000, 500, 0.01, sc)
    assert any("Measured here" in a for a in plan.assumptions)
    assert not any("Measured here" in a for a in vd.capacity_plan([REST], 10_000, 500, 0.01).assumptions)
