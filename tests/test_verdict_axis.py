"""The model-cost axis of ``make verdict``: where the winner changes as a model gets costlier
(analysis/verdict.py), the axis options and phases (bench/verdict.py), and the axis folder's
summary, words and chart from sub-folder summaries alone (analysis/verdict_axis.py)."""

from __future__ import annotations

import json
import math

import pytest

from analysis import verdict as vd
from bench import verdict as bv


def reg(key, winner, *, clear=True, better="higher", values=None, ratio=2.0, ci=(1.5, 2.5),
        load=None):
    values = values or ({"rest": 100.0, "stream": 50.0} if winner == "rest"
                        else {"rest": 50.0, "stream": 100.0})
    return {"key": key, "load": load or key, "winner": winner, "clear": clear, "better": better,
            "values": values, "ratio": ratio, "ci95": list(ci), "unit": "reviews/s"}


def axis(*outs, key="saturated"):
    return [{"cost_us": c, "regimes": [reg(key, w, clear=cl)]} for c, w, cl in outs]


# --------------------------------------------------------------------------------------------
# where the winner changes


def test_a_winner_that_flips_says_between_which_costs():
    (r,) = vd.axis_regimes(axis((1000, "stream", True), (0, "rest", True), (250, "rest", True),
                                (4000, "stream", True)))
    assert [o for _, o in r.outcomes] == ["rest", "rest", "stream", "stream"]   # sorted by cost
    assert r.changes == ((250.0, 1000.0, "rest", "stream"),)
    assert r.sentence == ("saturated: REST wins up to 250 µs, stream wins from 1,000 µs "
                          "(synthetic cost per input; the winner changes between 250 µs and "
                          "1,000 µs).")


def test_one_winner_at_every_cost_is_said_once():
    (r,) = vd.axis_regimes(axis((0, "rest", True), (1000, "rest", True), (4000, "rest", True)))
    assert r.changes == ()
    assert r.sentence == "saturated: REST wins at every cost (0 µs–4,000 µs, synthetic)."


def test_an_unclear_cost_is_not_a_change_of_winner():
    (r,) = vd.axis_regimes(axis((0, "rest", True), (250, "stream", False),
                                (1000, "stream", True)))
    assert [o for _, o in r.outcomes] == ["rest", vd.TIED, "stream"]
    assert len(r.changes) == 2                     # rest -> tie -> stream: two steps
    assert ("REST wins at 0 µs, no clear winner at 250 µs, stream wins from 1,000 µs"
            in r.sentence)
    assert "the winner changes" not in r.sentence  # never REST directly next to the stream
    assert r.to_dict()["changes"][0] == {"between_us": [0.0, 250.0], "from": "rest",
                                         "to": vd.TIED}


def test_a_regime_missing_at_a_cost_is_not_measured_there():
    ax = axis((0, "rest", True), (1000, "rest", True))
    ax[1]["regimes"] = []
    (r,) = vd.axis_regimes(ax)
    assert r.outcomes == ((0.0, "rest"), (1000.0, None))
    assert "REST wins at 0 µs, not measured from 1,000 µs" in r.sentence
    only_one = reg("saturated", "rest", values={"rest": 100.0, "stream": None})
    assert vd.outcome(only_one) is None


def test_the_advantage_points_the_same_way_for_throughput_and_latency():
    thr = reg("saturated", "rest", values={"rest": 300.0, "stream": 100.0}, ratio=3.0,
              ci=(2.0, 4.0))
    v, lo, hi = vd.advantage(thr, "stream", "rest")
    assert v == pytest.approx(1 / 3) and lo == pytest.approx(0.25) and hi == pytest.approx(0.5)
    assert vd.advantage(thr, "rest", "stream") == (pytest.approx(3.0), 2.0, 4.0)
    # latency: lower is better; the stream's p99 of 50 against REST's 200 is 4x better
    lat = reg("latency_¼", "stream", better="lower", values={"rest": 200.0, "stream": 50.0},
              ratio=4.0, ci=(3.0, 5.0))
    assert vd.advantage(lat, "stream", "rest") == (pytest.approx(4.0), 3.0, 5.0)
    # REST served nothing: the stream's advantage is unbounded, not a division by zero
    assert vd.advantage(reg("x", "stream", values={"rest": 0.0, "stream": 5.0}),
                        "stream", "rest")[0] == math.inf
    assert vd.advantage(reg("x", "rest", values={"rest": 5.0, "stream": None}),
                        "stream", "rest") == (None, None, None)


def test_the_pair_is_rest_and_the_stream_by_kind():
    assert vd.axis_pair(["stream", "rest"]) == ("rest", "stream")
    assert vd.axis_pair(["a", "b"], {"a": "stream", "b": "rest"}) == ("b", "a")
    assert vd.axis_pair(["a", "b", "c"]) == ("a", "b")
    assert vd.axis_pair(["rest"]) is None


# --------------------------------------------------------------------------------------------
# the axis folder: a summary, words and a chart from each cost's summary


def _cost_folder(root, cost, rest_cap, stream_cap):
    from test_verdict import figs

    rest = figs("rest", "rest", rest_cap)
    stream = figs("stream", "stream", stream_cap, p99s=(60, 70, 90, 150, 600, 3000),
                  kept=(0.99, 0.98), errs=(0.0, 0.0), amps=(1.0, 1.0), broker_cpu=45.0,
                  engine="faust")
    block = vd.verdict_block([rest, stream], slo_p99_ms=500, max_error_rate=0.01,
                             target_reviews_per_s=10_000)
    sub = root / bv.cost_dir(cost)
    sub.mkdir()
    (sub / "meta.json").write_text(json.dumps({
        "kind": "verdict", "synthetic_cost_us": cost,
        "model": {"synthetic_cost_us": cost, "synthetic_cost": {"measured_batched_us": cost}}}))
    from analysis.metrics import jsonable
    (sub / "summary.json").write_text(json.dumps(jsonable(
        {"kind": "verdict", "complete": True, "verdict": block, "wall_s": 200})))


def test_the_axis_folder_reports_where_the_winner_changes(tmp_path):
    from analysis.verdict_axis import axis_rows, build_axis_report

    costs = [0.0, 1000.0, 4000.0]
    # REST serves more at 0 µs; as the model gets costlier its capacity falls below the stream's
    for c, (r, s) in zip(costs, [(4000.0, 1800.0), (800.0, 700.0), (200.0, 240.0)]):
        _cost_folder(tmp_path, c, r, s)
    (tmp_path / "meta.json").write_text(json.dumps({
        "kind": "verdict", "run_id": "x-verdict", "order": ["rest", "stream"], "complete": True,
        "phases": {"saturate_s": 6.0, "open_step_s": 5.0, "overload_s": 8.0},
        "verdict": {"slo_p99_ms": 500, "max_error_rate": 0.01},
        "axis": {"costs_us": costs, "dirs": [bv.cost_dir(c) for c in costs],
                 "label": "synthetic"}}))
    files = build_axis_report(tmp_path, rebuild=False)
    s = json.loads(files.summary_json.read_text())      # strict JSON: no inf, no NaN
    v = s["verdict"]
    assert s["complete"] and v["synthetic"] and v["pair"] == ["rest", "stream"]
    assert [e["cost_us"] for e in v["cost_axis"]] == costs
    sat = {c["key"]: c for c in v["changes"]}["saturated"]
    assert [o["outcome"] for o in sat["outcomes"]] == ["rest", "rest", "stream"]
    assert sat["changes"] == [{"between_us": [1000.0, 4000.0], "from": "rest", "to": "stream"}]
    adv = v["cost_axis"][0]["advantage"]["saturated"]
    assert adv["value"] == pytest.approx(1800 / 4000, rel=0.05) and adv["ci95"][1] < 1
    assert v["cost_axis"][2]["advantage"]["saturated"]["value"] > 1
    assert s["words"][0].startswith("Synthetic model cost: +0, 1,000, 4,000 µs of CPU per input")
    assert "measured in the bench's process at 1,000, 4,000 µs" in s["words"][0]
    assert any("REST wins up to 1,000 µs, stream wins from 4,000 µs" in w for w in s["words"])
    assert files.chart.is_file() and files.chart.name == "verdict-cost.png"
    md = files.summary_md.read_text()
    assert "synthetic" in md.lower() and "verdict-cost.png" in md and "cost-1000us/summary.md" in md
    head, rows = axis_rows(s)
    assert head[:2] == ["cost per input", "saturated (reviews/s)"] and len(rows) == 3
    assert rows[0][0] == "0 µs (synthetic)"


def test_a_missing_cost_is_a_gap_not_a_failure(tmp_path):
    from analysis.verdict_axis import build_axis_summary

    _cost_folder(tmp_path, 0.0, 4000.0, 1800.0)
    meta = {"order": ["rest", "stream"], "complete": False,
            "axis": {"costs_us": [0.0, 250.0], "dirs": ["cost-0us", "cost-250us"]}}
    s = build_axis_summary(tmp_path, meta, rebuild=False)
    assert not s["complete"]
    assert s["verdict"]["cost_axis"][1]["regimes"] == []
    assert any("At 250 µs the verdict is incomplete" in w for w in s["words"])


# --------------------------------------------------------------------------------------------
# the command line and the budget


def test_the_axis_comes_from_the_flag_or_a_listed_env():
    assert bv.axis_costs("0,250,1000,4000", None) == (0.0, 250.0, 1000.0, 4000.0)
    assert bv.axis_costs(None, "0, 1000") == (0.0, 1000.0)
    assert bv.axis_costs(None, "1000") is None         # one cost: one verdict, as for any run
    assert bv.axis_costs(None, None) is None
    o = bv.options(["--cost-us", "0,1000"], env={})
    assert o.costs == (0.0, 1000.0) and o.phases == bv.AXIS
    assert bv.options([], env={"RVS_COST_US": "0,250"}).costs == (0.0, 250.0)
    assert bv.options([], env={}).costs is None and bv.options([], env={}).phases == bv.Phases()
    assert bv.options(["--cost-us", "0,1", "--quick"], env={}).phases == bv.QUICK
    with pytest.raises(SystemExit):
        bv.options(["--cost-us", "0,0"], env={})       # a cost twice
    with pytest.raises(SystemExit):
        bv.options(["--cost-us", "0,1", "--target", "compose"], env={})
    assert bv.cost_dir(1000.0) == "cost-1000us" and bv.cost_dir(62.5) == "cost-62_5us"


def test_four_costs_fit_twenty_minutes():
    per_cost = bv.AXIS.estimate_s(20) + bv.AXIS.estimate_s(5) + 15   # scaling and report
    assert 4 * per_cost < 18 * 60
    assert bv.AXIS.open_loads == bv.Phases().open_loads            # every load, shorter
    assert bv.AXIS.overload_loads == bv.Phases().overload_loads


def test_cost_env_sets_and_restores(monkeypatch):
    import os

    monkeypatch.setenv("RVS_COST_US", "0,250")
    with bv.cost_env(250.0):
        assert os.environ["RVS_COST_US"] == "250"
    assert os.environ["RVS_COST_US"] == "0,250"
    monkeypatch.delenv("RVS_COST_US")
    with bv.cost_env(None):
        assert "RVS_COST_US" not in os.environ
    with bv.cost_env(1000.0):
        assert os.environ["RVS_COST_US"] == "1000"
    assert "RVS_COST_US" not in os.environ


def test_one_deployment_along_the_axis_says_what_the_cost_did_to_it():
    from analysis.verdict_axis import axis_block, axis_words, cost_entry

    def summary(cap):
        return {"complete": True, "verdict": {
            "regimes": [reg("saturated", "rest", values={"rest": cap})],
            "capacity": {"rest": {"kind": "rest", "saturated_reviews_per_s": cap}}}}

    entries = [cost_entry(0.0, "cost-0us", summary(9000.0), None, None),
               cost_entry(1000.0, "cost-1000us", summary(950.0), None, None)]
    words = axis_words(axis_block({"order": ["rest"]}, entries, None))
    assert ("Only REST was measured, so no winner to follow; its saturated rate: 9,000 reviews/s "
            "at 0 µs, 950 reviews/s at 1,000 µs (synthetic).") in words
    assert not any("at every cost" in w for w in words)


def test_each_cost_reaches_the_deployments_and_the_bench_model(tmp_path, monkeypatch):
    """run_axis with the stack stubbed out: each deployment is started with RVS_COST_US at its
    cost, the bench's own model is loaded at it, and the folders are laid out as documented."""
    import os

    import services.model as sm

    seen, loaded = [], []

    class Fake:
        def __init__(self, cost):
            self.info = {"name": "fake", "synthetic_cost_us": cost}

    def fake_load():
        loaded.append(os.environ.get("RVS_COST_US"))
        return Fake(float(os.environ["RVS_COST_US"]))

    def fake_deploy(mode, sc, mode_dir, opts, progress, run_id, info, save, rate=None):
        seen.append((mode, os.environ.get("RVS_COST_US"), mode_dir.parent.name))
        info["complete"] = True

    monkeypatch.setattr(sm, "load_model", fake_load)
    monkeypatch.setattr(bv, "run_deployment", fake_deploy)
    monkeypatch.setattr(bv, "measure_scaling", lambda *a: None)
    monkeypatch.delenv("RVS_COST_US", raising=False)
    opts = bv.options(["--cost-us", "0,500", "--results", str(tmp_path), "--modes", "rest,stream"],
                      env={})
    opts.quiet = True
    run_dir, _ = bv.run_axis(opts)
    assert loaded == ["0", "500"]
    assert seen == [("rest", "0", "cost-0us"), ("stream", "0", "cost-0us"),
                    ("rest", "500", "cost-500us"), ("stream", "500", "cost-500us")]
    assert "RVS_COST_US" not in os.environ                 # restored after the axis
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["axis"]["dirs"] == ["cost-0us", "cost-500us"] and meta["complete"]
    assert meta["phases"] == json.loads(json.dumps(bv.dataclasses.asdict(bv.AXIS)))
    sub = json.loads((run_dir / "cost-500us" / "meta.json").read_text())
    assert sub["synthetic_cost_us"] == 500 and sub["model"]["synthetic_cost_us"] == 500
    assert (run_dir / "summary.json").is_file()            # the axis reported, gaps and all


def test_a_costly_model_keeps_the_streams_saturating_round_trip_short():
    assert bv.saturating_clients("stream", 100, 4) == 41            # 4,096 events: cheap model
    assert bv.saturating_clients("stream", 100, 4, 7000.0) == 41     # computes more than that
    assert bv.saturating_clients("stream", 100, 4, 900.0) == 9       # ≈ 1 s of its work
    assert bv.saturating_clients("stream", 100, 4, 100.0) == 4       # never below the base
    assert bv.saturating_clients("rest", 100, 4, 100.0) == 4
