"""Repeated runs: the repeats block's schema and statistics, the one-run window fallback, the
interleaved order, and compare's use of repeats (asv's rule for too few)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fixtures.fake_run import make_run  # noqa: E402

from analysis import repeats as rp  # noqa: E402
from analysis.compare import run_compare  # noqa: E402
from analysis.rundir import load_run  # noqa: E402
from analysis.summary import (analyse, build_summary, repeats_table,  # noqa: E402
                              summary_markdown)

FIGURES = {f"{m}.{f}" for m in ("rest", "stream") for f in rp.mode_figures()} | \
    {"stream/rest.reviews_per_s"}


def make_repeated(root: Path, seeds: list[int], **kw) -> Path:
    """A repeated run folder as bench/run.py writes it: meta.json listing repeat-<k>/ run folders."""
    runs = []
    for k, (seed, order) in enumerate(zip(seeds, rp.interleaved(("rest", "stream"), len(seeds))), 1):
        make_run(root / f"repeat-{k}", seed=seed, run_id=f"{root.name}/repeat-{k}", **kw)
        runs.append({"dir": f"repeat-{k}", "order": list(order), "complete": True})
    meta = json.loads((root / "repeat-1" / "meta.json").read_text())
    meta.pop("modes")
    meta.update(run_id=root.name, repeats={"n": len(seeds), "runs": runs})
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def _summary(path: Path) -> dict:
    return build_summary(analyse(load_run(path)))


# --------------------------------------------------------------------------------------------
# Pure statistics


def test_interleaved_alternates_the_order():
    assert rp.interleaved(("rest", "stream"), 4) == [("rest", "stream"), ("stream", "rest"),
                                                      ("rest", "stream"), ("stream", "rest")]
    assert rp.interleaved(("rest", "stream"), 1) == [("rest", "stream")]
    with pytest.raises(ValueError):
        rp.interleaved(("rest",), 0)


def test_bootstrap_is_deterministic_under_its_seed():
    v = list(np.random.default_rng(3).lognormal(3, 0.5, 10))
    a, b = rp.bootstrap_ci(v, seed=7), rp.bootstrap_ci(v, seed=7)
    assert a == b
    # the seed is what fixes it (few resamples, so two seeds' intervals do differ)
    assert rp.bootstrap_ci(v, seed=7, resamples=40) != rp.bootstrap_ci(v, seed=8, resamples=40)
    # nothing computed before changes it (a fresh generator per call)
    rp.stat(list(reversed(v)), seed=7)
    assert rp.bootstrap_ci(v, seed=7) == a
    assert rp.stat(v).ci95 == rp.stat(v).ci95


@pytest.mark.parametrize("seed", range(6))
def test_a_ratio_median_lies_within_its_min_and_max(seed):
    rng = np.random.default_rng(seed)
    samples = [rp.figures({"rest": {"reviews_per_s": float(r)}, "stream": {"reviews_per_s": float(s)}},
                          "rest")
               for r, s in zip(rng.uniform(100, 900, 5), rng.uniform(100, 900, 5))]
    st = rp.summarise(samples, source="repeats").metrics["stream/rest.reviews_per_s"]
    ratios = [s["stream/rest.reviews_per_s"] for s in samples]
    assert st.min == min(ratios) and st.max == max(ratios)
    assert st.min <= st.median <= st.max
    assert st.min <= st.ci95[0] <= st.ci95[1] <= st.max
    # the median of the ratios, not the ratio of the medians
    assert st.median == pytest.approx(float(np.median(ratios)))


def test_ratio_is_reviews_based_and_undefined_against_nothing():
    f = rp.figures({"rest": {"reviews_per_s": 1000.0, "successful_throughput": 1.0},
                    "stream": {"reviews_per_s": 500.0, "successful_throughput": 500.0}}, "rest")
    assert f["stream/rest.reviews_per_s"] == 0.5      # not 500 (requests/s of different sizes)
    assert not any("successful_throughput" in k for k in f)
    assert rp.figures({"rest": {"reviews_per_s": 0.0}, "stream": {"reviews_per_s": 5.0}},
                      "rest")["stream/rest.reviews_per_s"] is None


def test_stat_skips_undefined_values_and_handles_none_at_all():
    st = rp.stat([None, float("nan"), 2.0, 4.0])
    assert st.samples == (2.0, 4.0) and st.median == 3.0
    empty = rp.stat([None])
    assert empty.median is None and empty.ci95 == (None, None) and empty.samples == ()
    one = rp.stat([5.0])
    assert one.ci95 == (5.0, 5.0)


def test_representative_is_nearest_the_median():
    assert rp.representative([1.0, 5.0, 2.0]) == 2
    assert rp.representative([None, 3.0, 1.0, 3.0]) == 1
    assert rp.representative([None, None]) == 0


def test_mann_whitney_needs_seven_a_side_for_p_below_0002():
    assert rp.can_reach(7, 7) and not rp.can_reach(6, 6) and not rp.can_reach(2, 2)
    assert rp.min_p_two_sided(7, 7) == pytest.approx(2 / 3432)
    assert rp.intervals_overlap([1, 3], [2, 4]) and not rp.intervals_overlap([1, 2], [3, 4])
    assert rp.intervals_overlap([None, 1], [5, 6])


def test_window_count_keeps_windows_at_least_a_second():
    assert rp.window_count(110) == 10 and rp.window_count(4.5) == 4 and rp.window_count(0.3) == 1


# --------------------------------------------------------------------------------------------
# The block in summary.json


def _check_schema(block: dict, n: int) -> None:
    assert block["n"] == n
    assert set(block["metrics"]) == FIGURES
    for name, st in block["metrics"].items():
        assert {"median", "min", "max", "ci95"} <= set(st), name
        assert len(st["ci95"]) == 2
        assert st["min"] <= st["median"] <= st["max"], name
        assert st["min"] <= st["ci95"][0] <= st["ci95"][1] <= st["max"], name
    json.dumps(block, allow_nan=False)


def test_one_run_falls_back_to_time_windows(tmp_path):
    run = make_run(tmp_path / "one", seed=0, duration_s=30, rest_degrade_after_s=15)
    s = _summary(run)
    block = s["repeats"]
    _check_schema(block, 1)
    assert block["source"] == "windows" and block["windows"] == 10
    st = block["metrics"]["rest.reviews_per_s"]
    assert len(st["samples"]) == 10
    # the windows cut the same window: their mean is the whole window's figure
    assert np.mean(st["samples"]) == pytest.approx(s["modes"]["rest"]["reviews_per_s"])
    # REST degrades after 15 s: its late windows are slower, so the spread is real
    lat = block["metrics"]["rest.latency_ms.p50"]["samples"]
    assert np.mean(lat[-3:]) > np.mean(lat[:3])
    assert "repeat-" not in json.dumps({k: v for k, v in s.items() if k != "notes"})
    assert "time windows" in summary_markdown(s)


def test_repeated_run_summarises_its_repeats(tmp_path):
    root = make_repeated(tmp_path / "rep", [0, 1, 2], duration_s=30)
    s = _summary(root)
    block = s["repeats"]
    _check_schema(block, 3)
    assert block["source"] == "repeats"
    each = [_summary(root / f"repeat-{k}") for k in (1, 2, 3)]
    rps = [e["modes"]["stream"]["reviews_per_s"] for e in each]
    st = block["metrics"]["stream.reviews_per_s"]
    assert sorted(st["samples"]) == pytest.approx(sorted(rps))
    assert st["median"] == pytest.approx(float(np.median(rps)))
    ratios = [e["modes"]["stream"]["reviews_per_s"] / e["modes"]["rest"]["reviews_per_s"]
              for e in each]
    k = rp.representative(ratios)
    assert s["representative_repeat"] == f"repeat-{k + 1}"
    assert s["modes"]["stream"]["reviews_per_s"] == each[k]["modes"]["stream"]["reviews_per_s"]
    assert [r["order"] for r in s["repeat_runs"]] == [["rest", "stream"], ["stream", "rest"],
                                                      ["rest", "stream"]]
    assert s["complete"] is True
    assert len(repeats_table(s)) == len(FIGURES)
    assert "3 repeats" in summary_markdown(s)


def test_bootstrap_of_a_run_is_reproducible(tmp_path):
    root = make_repeated(tmp_path / "rep", [0, 1], duration_s=20)
    assert _summary(root)["repeats"] == _summary(root)["repeats"]


def test_an_interrupted_repeat_is_skipped_and_the_run_incomplete(tmp_path):
    root = make_repeated(tmp_path / "rep", [0, 1], duration_s=20)
    meta = json.loads((root / "meta.json").read_text())
    meta["repeats"]["runs"].append({"dir": "repeat-3", "order": ["rest", "stream"],
                                    "complete": False})
    meta["complete"] = False
    (root / "meta.json").write_text(json.dumps(meta))
    (root / "repeat-3").mkdir()                    # created, then interrupted before any table
    s = _summary(root)
    assert s["repeats"]["n"] == 2 and s["complete"] is False
    assert any("repeat-3" in n for n in s["notes"])


# --------------------------------------------------------------------------------------------
# compare over repeats


def test_compare_uses_repeats_and_says_when_they_are_too_few(tmp_path):
    base = make_repeated(tmp_path / "base", [0, 1], duration_s=20)
    head = make_repeated(tmp_path / "head", [2, 3], duration_s=20, stream_scale=0.6)
    code, text, cmp = run_compare(base, head)
    row = next(r for r in cmp.rows if r.key == "ratios.stream.reviews_per_s")
    assert row.samples == "2 vs 2 repeats" and row.p_value is None
    assert row.verdict == "REGRESSION (intervals)" and code == 1
    assert "fewer than 7 repeats a side" in text and "asv" in text
    # the median over the repeats, not one repeat's figure
    assert row.base == pytest.approx(
        _summary(base)["repeats"]["metrics"]["stream/rest.reviews_per_s"]["median"])


def test_compare_tests_seven_repeats_a_side(tmp_path):
    kw = dict(duration_s=8, warmup_s=1, rate=20)
    base = make_repeated(tmp_path / "base", list(range(7)), **kw)
    head = make_repeated(tmp_path / "head", list(range(10, 17)), stream_scale=0.7, **kw)
    same = make_repeated(tmp_path / "same", list(range(20, 27)), **kw)
    code, text, cmp = run_compare(base, head)
    row = next(r for r in cmp.rows if r.key == "ratios.stream.reviews_per_s")
    assert row.samples == "7 vs 7 repeats" and row.p_value < rp.REPEATS_ALPHA
    assert row.verdict == "REGRESSION" and code == 1
    assert "fewer than 7" not in text
    code, text, cmp = run_compare(base, same)
    row = next(r for r in cmp.rows if r.key == "ratios.stream.reviews_per_s")
    assert row.p_value is not None and row.verdict in ("unchanged", "worse, not significant",
                                                       "better, not significant")


def test_compare_a_summary_json_with_repeats_still_tests(tmp_path):
    base = make_repeated(tmp_path / "base", [0, 1], duration_s=20)
    head = make_repeated(tmp_path / "head", [2, 3], duration_s=20, stream_scale=0.6)
    only = tmp_path / "summary.json"
    only.write_text(json.dumps(_summary(base)))
    _, _, cmp = run_compare(only, head)
    row = next(r for r in cmp.rows if r.key == "ratios.stream.reviews_per_s")
    assert row.samples == "2 vs 2 repeats" and row.verdict == "REGRESSION (intervals)"


def test_compare_a_repeated_run_with_a_single_one_uses_windows(tmp_path):
    base = make_repeated(tmp_path / "base", [0, 1], duration_s=20)
    head = make_run(tmp_path / "head", seed=5, duration_s=20)
    _, text, cmp = run_compare(base, head)
    row = next(r for r in cmp.rows if r.key == "ratios.stream.reviews_per_s")
    assert row.samples.endswith("windows")
    assert "only BASE is a repeated run" in text


def test_a_repeated_run_with_a_calibration_phase_still_reads_its_repeats(tmp_path):
    """A relative load's calibration leaves a request table of its own at the run's top level
    (calibration/requests.parquet): it is not a mode, and the repeats are still what is read."""
    import shutil

    root = make_repeated(tmp_path / "rep", [0, 1], duration_s=20)
    (root / "calibration").mkdir()
    shutil.copy(root / "repeat-1" / "rest" / "requests.parquet",
                root / "calibration" / "requests.parquet")
    s = _summary(root)
    assert s["complete"] and s["repeats"]["source"] == "repeats" and s["repeats"]["n"] == 2
    assert set(s["modes"]) == {"rest", "stream"} and s["modes"]["rest"]["sent"] > 0
