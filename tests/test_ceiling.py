"""``make ceiling`` (bench/ceiling.py): the summary's schema and figures from hand-made inputs.

Everything here is pure (no process of the stack) except the last test, marked ``stack``, which
runs one short variant for real.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from bench import ceiling as C
from loadgen import record
from loadgen.scenario import ClosedArrival, OpenArrival, parse_scenario

CEIL = {"batched_reviews_per_s": 4000.0, "batch1_reviews_per_s": 2000.0, "best_batch": 256,
        "cpus": [0], "reviews_per_s_by_batch": {"1": 2000.0, "256": 4000.0}}


def entry(name: str, rps: float | None, cpu: float | None = 99.0, p50=2.0, p99=9.0) -> dict:
    return C.variant_summary(name, reviews_per_s=rps, p50_ms=p50, p99_ms=p99, service_cpu=cpu,
                             batched_ceiling=CEIL["batched_reviews_per_s"],
                             extra={"label": name, "mode": name.split("/")[0]})


def variants(**rps: float) -> dict:
    base = {"rest/batch1": 800.0, "rest/batchN": 3900.0, "stream/event": 1000.0,
            "stream/batchN": 3000.0, "stream/batchN-eos": 2000.0, "stream-lean/event": 1500.0,
            "stream-lean/batchN": 3500.0}
    base.update({k.replace("_", "/"): v for k, v in rps.items()})
    return {n: entry(n, r) for n, r in base.items()}


# --- figures ---------------------------------------------------------------------------------
def test_efficiency_is_reviews_per_s_over_batched_ceiling():
    assert C.efficiency(3000.0, 4000.0) == pytest.approx(0.75)
    assert C.efficiency(4000.0, 4000.0) == pytest.approx(1.0)
    assert C.efficiency(0.0, 4000.0) == 0.0
    assert C.efficiency(None, 4000.0) is None
    assert C.efficiency(100.0, None) is None and C.efficiency(100.0, 0.0) is None


def test_overhead_is_per_review_cost_beyond_the_batched_model():
    # 1000 reviews/s = 1000 µs per review; the model alone costs 1e6/4000 = 250 µs
    assert C.overhead_us(1000.0, 4000.0) == pytest.approx(750.0)
    # at the ceiling there is no overhead; above it (noise) it goes negative, not clipped
    assert C.overhead_us(4000.0, 4000.0) == pytest.approx(0.0)
    assert C.overhead_us(5000.0, 4000.0) == pytest.approx(-50.0)
    assert C.overhead_us(0.0, 4000.0) is None and C.overhead_us(None, 4000.0) is None
    assert C.overhead_us(1000.0, None) is None


def test_variant_summary_computes_from_its_inputs():
    v = entry("stream/event", 1000.0, cpu=97.3, p50=12.5, p99=33.0)
    assert v["reviews_per_s"] == 1000.0
    assert v["efficiency"] == pytest.approx(1000 / 4000, abs=1e-4)
    assert v["overhead_us_per_review"] == pytest.approx(1e6 / 1000 - 1e6 / 4000, abs=0.1)
    assert v["latency_ms"] == {"p50": 12.5, "p99": 33.0}
    assert v["service_cpu"] == 97.3
    assert v["service_bound"] is True and v["bottleneck"] == "service"
    assert v["label"] == "stream/event"          # extras come after the contract's keys
    assert list(v)[:5] == ["reviews_per_s", "efficiency", "overhead_us_per_review",
                           "latency_ms", "service_cpu"]


@pytest.mark.parametrize("cpu, bound", [(95.0, True), (94.9, False), (40.0, False),
                                        (180.0, True), (None, None)])
def test_service_cpu_below_95_flags_driver_or_broker(cpu, bound):
    v = entry("rest/batch1", 700.0, cpu=cpu)
    assert v["service_bound"] is bound
    assert v["bottleneck"] == {True: "service", False: "driver_or_broker", None: None}[bound]


def test_bottleneck_line_names_driver_or_broker_and_a_shared_core():
    vs = variants()
    vs["rest/batch1"] = entry("rest/batch1", 700.0, cpu=80.0)
    vs["rest/batch1"]["saturated"] = {"cpu": {"driver": 60.0, "service": 80.0},
                                      "service_core_busy": 99.0,
                                      "other_cpu_on_service_cores": 19.0}
    s = C.build_summary(CEIL, vs)
    assert s["not_service_bound"] == ["rest/batch1"]
    lines = C.bottleneck_lines(s)
    assert len(lines) == 1 and lines[0].startswith("rest/batch1: service CPU 80% < 95%")
    assert "driver or broker was the bottleneck" in lines[0]
    assert "other processes 19%" in lines[0] and "core was shared" in lines[0]


# --- summary.json ----------------------------------------------------------------------------
def test_summary_schema_and_efficiency_consistency():
    s = C.build_summary(CEIL, variants(), run_id="20260101T000000Z-ceiling")
    C.validate_summary(s)
    assert set(s) >= {"ceiling", "variants"}
    assert s["ceiling"]["batched_reviews_per_s"] == 4000.0
    assert s["ceiling"]["batch1_reviews_per_s"] == 2000.0 and s["ceiling"]["best_batch"] == 256
    assert set(s["variants"]) == set(C.VARIANT_NAMES)
    for name, v in s["variants"].items():
        assert {"reviews_per_s", "efficiency", "overhead_us_per_review", "latency_ms",
                "service_cpu"} <= set(v)
        assert set(v["latency_ms"]) >= {"p50", "p99"}
        assert isinstance(v["service_cpu"], float)
        assert v["efficiency"] == pytest.approx(v["reviews_per_s"] / 4000.0, abs=1e-4)
        assert v["overhead_us_per_review"] == pytest.approx(
            1e6 / v["reviews_per_s"] - 1e6 / 4000.0, abs=0.1)
    json.dumps(s, allow_nan=False)  # plain JSON, no NaN


def test_validate_summary_rejects_broken_ones():
    good = C.build_summary(CEIL, variants())
    bad = json.loads(json.dumps(good))
    bad["variants"]["rest/batch1"]["efficiency"] = 0.9      # not reviews_per_s / ceiling
    with pytest.raises(ValueError, match="efficiency"):
        C.validate_summary(bad)
    bad = json.loads(json.dumps(good))
    del bad["variants"]["stream/event"]["service_cpu"]
    with pytest.raises(ValueError, match="service_cpu"):
        C.validate_summary(bad)
    bad = json.loads(json.dumps(good))
    bad["variants"]["rest/batch7"] = bad["variants"].pop("rest/batchN")
    with pytest.raises(ValueError, match="unknown variant"):
        C.validate_summary(bad)
    bad = json.loads(json.dumps(good))
    del bad["variants"]["stream-lean/batchN"]["engine"]
    with pytest.raises(ValueError, match="engine"):
        C.validate_summary(bad)
    bad = json.loads(json.dumps(good))
    bad["variants"]["stream/batchN"]["engine"] = "spark"
    with pytest.raises(ValueError, match="engine"):
        C.validate_summary(bad)
    bad = json.loads(json.dumps(good))
    bad["ceiling"]["batched_reviews_per_s"] = None
    with pytest.raises(ValueError, match="batched_reviews_per_s"):
        C.validate_summary(bad)


def test_a_failed_variant_keeps_the_schema_with_nulls():
    vs = variants()
    vs["stream/batchN"] = C.failed_entry(C.default_variants()[3], "deploy failed")
    s = C.build_summary(CEIL, vs, complete=False)
    C.validate_summary(s)
    assert s["complete"] is False
    assert s["variants"]["stream/batchN"]["reviews_per_s"] is None
    assert s["variants"]["stream/batchN"]["engine"] == "faust"
    assert "FAILED" in C.table_text(s)


# --- targets ---------------------------------------------------------------------------------
def test_targets_met_and_missed():
    vs = variants(rest_batchN=3900.0, stream_batchN=3000.0, rest_batch1=800.0, stream_event=2500.0)
    vs["stream/event"]["latency_ms"] = {"p50": 14.0, "p99": 41.0}
    vs["rest/batch1"]["latency_ms"] = {"p50": 2.5, "p99": 8.0}
    got = {(t["variant"], t["metric"]): t["met"] for t in C.evaluate_targets(vs)}
    assert got[("rest/batchN", "efficiency")] is True          # 0.975 >= 0.95
    assert got[("stream/batchN", "efficiency")] is False       # 0.75 < 0.85
    assert got[("rest/batch1", "overhead_us_per_review")] is False   # 1000 us
    assert got[("stream/event", "overhead_us_per_review")] is True   # 400 - 250 = 150 us
    assert got[("stream/event", "latency_ms.p50")] is True
    assert got[("stream/event", "latency_ms.p99")] is False
    assert got[("rest/batch1", "latency_ms.p50")] is True
    assert got[("stream-lean/batchN", "efficiency")] is True             # 3500 / 4000 = 0.875
    assert got[("stream-lean/batchN", "overhead_us_per_review")] is True   # 286 - 250 = 36 us
    vs["stream-lean/batchN"] = entry("stream-lean/batchN", 2000.0)        # 500 - 250 = 250 us
    got = {(t["variant"], t["metric"]): t["met"] for t in C.evaluate_targets(vs)}
    assert got[("stream-lean/batchN", "efficiency")] is False
    assert got[("stream-lean/batchN", "overhead_us_per_review")] is False
    assert len(got) == len(C.TARGETS)


def test_targets_of_a_missing_variant_are_not_measured():
    res = C.evaluate_targets({"rest/batch1": entry("rest/batch1", 900.0)})
    assert {t["met"] for t in res if t["variant"] != "rest/batch1"} == {None}


def test_table_text_shows_every_variant_and_target():
    s = C.build_summary(CEIL, variants())
    text = C.table_text(s)
    for name in C.VARIANT_NAMES:
        assert name in text
    assert "Targets" in text and ("met" in text or "MISSED" in text)
    assert "4,000 reviews/s batched" in text


# --- scenarios the driver reads --------------------------------------------------------------
@pytest.mark.parametrize("v", C.default_variants(rest_batch=100, take_max=256),
                         ids=lambda v: v.name)
def test_phase_scenarios_validate(v, tmp_path):
    sat = C.write_scenario(C.saturated_scenario(v, C.Phase(3, 7, 3)), tmp_path / "sat.yaml")
    assert isinstance(sat.arrival, ClosedArrival)
    assert sat.arrival.max_clients == v.sat_clients and sat.arrival.think_s == 0
    assert sat.workload.batch_size == v.sat_batch and sat.modes == (v.mode,)
    assert sat.timing.warmup_s == 3 and sat.timing.duration_s == 7
    assert sat.service[v.mode] == dict(v.service)
    assert sat.source == str(tmp_path / "sat.yaml")
    half = C.write_scenario(C.half_scenario(v, C.Phase(2, 6, 3), 1000.0), tmp_path / "h.yaml")
    assert isinstance(half.arrival, OpenArrival) and half.arrival.process == "poisson"
    # the rate is in operations: half_batch reviews each
    assert half.arrival.rate.ops_per_s * v.half_batch == pytest.approx(1000.0, rel=1e-3)
    parse_scenario(half.to_dict())  # round-trips


def test_default_variants_cover_every_name_and_settings_are_valid():
    from services.rest.settings import RestSettings
    from services.stream.settings import StreamSettings

    vs = C.default_variants(rest_batch=100, take_max=256)
    assert [v.name for v in vs] == list(C.VARIANT_NAMES)
    by = {v.name: v for v in vs}
    assert by["rest/batchN"].sat_batch == 100 >= 100
    assert by["stream/event"].service["shape"] == "event"
    assert by["stream/batchN"].service["shape"] == "batch"
    assert by["stream/batchN"].service["take_max"] == 256
    # exactly-once is the micro-batched worker with one setting changed, so the two compare
    eos = dict(by["stream/batchN-eos"].service)
    assert eos.pop("processing_guarantee") == "exactly_once"
    assert eos == dict(by["stream/batchN"].service)
    # the lean variants are the Faust ones with the engine changed, so the two compare
    for shape in ("event", "batchN"):
        lean = dict(by[f"stream-lean/{shape}"].service)
        assert lean.pop("engine") == "lean" and lean == dict(by[f"stream/{shape}"].service)
    assert {v.name: v.engine for v in vs} == {
        "rest/batch1": "flask-uwsgi", "rest/batchN": "flask-uwsgi", "stream/event": "faust",
        "stream/batchN": "faust", "stream/batchN-eos": "faust", "stream-lean/event": "lean",
        "stream-lean/batchN": "lean"}
    assert all(C.engine_of(v.name) == v.engine for v in vs)
    for v in vs:
        if v.mode == "rest":
            RestSettings.from_dict(v.service)
        else:
            StreamSettings.from_dict(v.service)


def test_options_from_args():
    o = C.options_from_args(["--variants", "rest/batch1,stream/event", "--saturated", "1,2,3",
                             "--rest-batch", "500"])
    assert [v.name for v in o.variants] == ["rest/batch1", "stream/event"]
    assert o.saturated == C.Phase(1.0, 2.0, 3.0)
    assert C.options_from_args([]).variants[1].sat_batch == 100
    with pytest.raises(SystemExit):
        C.options_from_args(["--variants", "rest/batch2"])
    # every stream engine's variants run by default; --lean-set reaches only the lean batchN
    assert {"stream/batchN", "stream-lean/batchN", "stream-lean/event"} <= {
        v.name for v in C.options_from_args([]).variants}
    o = C.options_from_args(["--variants", "stream/batchN,stream-lean/batchN",
                             "--lean-set", 'lean_client="confluent"',
                             "--stream-set", "extra_faust={\"cython_optimizations\": true}"])
    faust_v, lean_v = o.variants
    assert lean_v.service["lean_client"] == "confluent" and "lean_client" not in faust_v.service
    assert faust_v.service["extra_faust"] == {"cython_optimizations": True}
    assert (faust_v.engine, lean_v.engine) == ("faust", "lean")


# --- analysing a phase from hand-made tables -------------------------------------------------
def test_analyse_phase_reviews_per_s_latency_and_cpu(tmp_path):
    # window [1, 3): 2 s. In it: 4 ok requests of 10 reviews, 1 failed; one ok before (warm-up).
    rows = []
    for i, t in enumerate([0.5, 1.0, 1.5, 2.0, 2.5, 2.9]):
        ok = i != 5
        rows.append(record.Attempt("r", "rest", f"q{i}", 1, 10, t, t, t, t + 0.004 * (i + 1),
                                   "ok" if ok else "error", None if ok else "http_5xx"))
    record.write(record.to_frame(rows), tmp_path / "requests.parquet")
    pd.DataFrame({"t_s": [0.5, 1.2, 1.2, 2.2, 2.2, 3.5], "role": ["service", "service", "driver",
                                                                "service", "driver", "service"],
                  "process": ["uwsgi", "uwsgi", "python", "uwsgi", "python", "uwsgi"],
                  "pid": [1, 1, 2, 1, 2, 1],
                  "cpu_percent": [10.0, 96.0, 40.0, 98.0, 50.0, 5.0]}).to_csv(
        tmp_path / "cpu.csv", index=False)
    r = C.analyse_phase(tmp_path, "rest", 1.0, 2.0)
    assert (r["sent"], r["ok"], r["failed"]) == (5, 4, 1)
    assert r["reviews_per_s"] == pytest.approx(4 * 10 / 2.0)
    assert r["latency_ms"]["p50"] == pytest.approx(12.0)   # 8, 12, 16, 20 ms: nearest rank
    assert r["latency_ms"]["max"] == pytest.approx(20.0)
    assert r["cpu"] == {"driver": 45.0, "service": 97.0}
    # two 1 s slices of the window, 20 reviews/s each: the median's interval is that
    assert r["reviews_per_s_ci95"] == pytest.approx([20.0, 20.0])


def test_core_sampler_busy_percent():
    s = C.CoreSampler([0])
    s.samples = [(100.0, 10.0), (100.5, 10.4), (101.0, 10.9), (101.5, 11.0)]
    assert s.busy_percent(100.4, 101.2) == pytest.approx(100.0)   # (10.9-10.4)/0.5
    assert s.busy_percent(100.0, 101.5) == pytest.approx(100 * 1.0 / 1.5)
    assert s.busy_percent(200.0, 201.0) is None


def test_core_sampler_parts():
    s = C.CoreSampler([0])
    s.samples = [(100.0, 10.0, {"processes": 8.0, "irq": 1.0, "steal": 1.0}),
                 (101.0, 10.9, {"processes": 8.7, "irq": 1.1, "steal": 1.1})]
    got = s.parts_percent(99.0, 102.0)
    assert got == pytest.approx({"processes": 70.0, "irq": 10.0, "steal": 10.0})
    assert s.busy_percent(99.0, 102.0) == pytest.approx(90.0)


def test_per_cpu_second_normalises_by_the_cpu_the_service_got():
    # 2000 reviews/s on 80 % of a core = 2500 per CPU-second; ceiling 5000 per CPU-second
    got = C.per_cpu_second(2000.0, 80.0, 5000.0)
    assert got["reviews_per_cpu_s"] == pytest.approx(2500.0)
    assert got["efficiency"] == pytest.approx(0.5)
    assert got["overhead_us_per_review"] == pytest.approx(400.0 - 200.0)
    assert C.per_cpu_second(2000.0, None, 5000.0)["efficiency"] is None
    assert C.per_cpu_second(2000.0, 80.0, None)["efficiency"] is None


def test_chart_is_written(tmp_path):
    from analysis.ceiling_chart import plot_ceiling

    vs = variants()
    vs["stream/event"]["latency_ms"] = {"p50": None, "p99": None}
    out = plot_ceiling(C.build_summary(CEIL, vs, run_id="x"), tmp_path / "c" / "ceiling.png")
    assert out.exists() and out.stat().st_size > 10_000


# --- one short real variant ------------------------------------------------------------------
@pytest.mark.stack
def test_stack_short_ceiling_rest_batch1(tmp_path):
    """One variant, a few seconds per phase, on the real stack (≈ 25 s)."""
    import os

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 cores (service on one, driver on the other)")
    opts = C.options_from_args(["--variants", "rest/batch1", "--saturated", "1,2,1",
                                "--half", "1,2,1", "--results", str(tmp_path), "--quiet"])
    run_dir, s = C.run(opts)
    C.validate_summary(s)
    assert json.loads((run_dir / "summary.json").read_text()) == s
    v = s["variants"]["rest/batch1"]
    assert v["reviews_per_s"] > 50 and v["half_load"]["failed"] == 0
    assert v["efficiency"] == pytest.approx(
        v["reviews_per_s"] / s["ceiling"]["batched_reviews_per_s"], abs=1e-3)
    assert math.isfinite(v["latency_ms"]["p50"]) and v["service_cpu"] > 0
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["complete"] is True and meta["ceiling"]["batched_reviews_per_s"] > 0
    for f in ("table.txt", "charts/ceiling.png", "rest-batch1/saturated.yaml",
              "rest-batch1/half/requests.parquet", "rest-batch1/saturated/cpu.csv"):
        assert (run_dir / f).exists(), f
