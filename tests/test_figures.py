"""analysis.figures owns every headline figure: each table, chart, console line and compare reads
it from there, and none declares a figure of its own."""

from __future__ import annotations

import ast
import dataclasses
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fixtures.fake_run import make_run  # noqa: E402

from analysis import charts, compare, figures as figs, metrics as mx, repeats as rp  # noqa: E402
from analysis.rundir import load_run  # noqa: E402
from analysis.summary import (analyse, build_summary, dig, headline_table,  # noqa: E402
                              repeats_table)
from bench.progress import Progress  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: A figure no consumer has heard of: it must show up wherever its flags say.
NEW = figs.Figure("latency_ms.p95", "latency p95 (ms)", "ms", "{:,.2f}", False, ratio=True,
                  threshold=0.2, compare="gate", compare_ratio="info", panel=True,
                  column="p95 ms")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run") / "20250101T000000Z-fig")


@pytest.fixture(scope="module")
def analysed(run_dir):
    ra = analyse(load_run(run_dir))
    return ra, build_summary(ra)


@pytest.fixture
def with_new(monkeypatch):
    monkeypatch.setattr(figs, "FIGURES", (*figs.FIGURES, NEW))


def test_registry_is_consistent():
    keys = [f.key for f in figs.FIGURES]
    assert len(keys) == len(set(keys)) and len({f.label for f in figs.FIGURES}) == len(keys)
    assert figs.repeated_ratio().key == "reviews_per_s"
    with pytest.raises(ValueError):
        figs.Figure("x", "x", "", "{}", compare="gate")            # no threshold, no direction
    with pytest.raises(ValueError):
        figs.Figure("x", "x", "", "{}", True, threshold=0.1, compare_ratio="info")   # no ratio


def test_headline_table_rows_are_the_registry(analysed):
    _, s = analysed
    t = headline_table(s)
    assert list(t.index) == [f.label for f in figs.FIGURES]
    for f in figs.FIGURES:
        assert t.loc[f.label, "rest"] == f.format(dig(s["modes"]["rest"], f.key))
        assert (t.loc[f.label, "stream ÷ rest"] != "") == f.ratio


def test_ratios_and_headline_are_the_ratio_figures(analysed):
    ra, s = analysed
    keys = figs.ratio_keys()
    assert list(mx.headline(ra.modes["rest"].metrics)) == keys
    assert list(s["ratios"]["stream"]) == keys
    assert list(mx.ratios(None, None)) == keys


def test_compare_specs_come_from_the_registry():
    specs = compare.default_specs(["rest", "stream"])
    expected = {(f"modes.{m}.{f.key}", f.compare) for m in ("rest", "stream")
                for f in figs.FIGURES if f.compare}
    expected |= {(f"ratios.stream.{f.key}", f.compare_ratio) for f in figs.FIGURES
                 if f.compare_ratio}
    assert {(s.key, "gate" if s.gate else "info") for s in specs} == expected
    for s in specs:
        f = figs.by_key(s.key.split(".", 2)[2])
        assert (s.threshold, s.higher_is_better) == (f.threshold, f.higher_is_better)


def test_chart_panel_and_repeats_read_the_registry(analysed):
    ra, s = analysed
    fig = charts.fig_summary(ra)
    titles = [ax.get_title().split("\n")[0] for ax in fig.axes if ax.get_visible()]
    assert titles == [f.label for f in figs.FIGURES if f.panel]
    assert rp.mode_figures() == [f.key for f in figs.FIGURES if f.repeated]
    w = ra.modes["rest"].data.window
    assert set(mx.slice_headlines(ra.modes["rest"].data.table, w, 2)[0]) == set(rp.mode_figures())
    assert set(repeats_table(s).index) == \
        {f"{m} {f.label}" for m in ("rest", "stream") for f in figs.FIGURES if f.repeated} | \
        {f"stream ÷ rest {figs.repeated_ratio().label}"}


def test_a_new_figure_shows_up_everywhere(run_dir, with_new, tmp_path):
    ra = analyse(load_run(run_dir))
    s = build_summary(ra)
    assert NEW.label in [ax.get_title().split("\n")[0] for ax in charts.fig_summary(ra).axes]
    t = headline_table(s)
    assert t.loc[NEW.label, "rest"] == NEW.format(s["modes"]["rest"]["latency_ms"]["p95"])
    assert t.loc[NEW.label, "stream ÷ rest"].endswith("×")
    assert NEW.key in s["ratios"]["stream"]
    keys = {sp.key: sp for sp in compare.default_specs(["rest", "stream"])}
    assert keys["modes.stream.latency_ms.p95"].gate
    assert keys["ratios.stream.latency_ms.p95"].threshold == 0.2
    (tmp_path / "summary.json").write_text(json.dumps(s))
    p = Progress()
    with p.console.capture() as cap:
        p.show_summary(tmp_path, None)
    assert "p95 ms" in cap.get()


def _string_constants(path: Path) -> set[str]:
    return {n.value for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_no_consumer_declares_a_figure_again():
    """No other module under analysis/ or bench/ spells a figure's label or the ratio format: a
    second spelling is a second owner."""
    owned = {f.label for f in figs.FIGURES if " " in f.label} | {figs.RATIO_SPEC}
    for path in [*(ROOT / "analysis").glob("*.py"), *(ROOT / "bench").glob("*.py")]:
        if path.name == "figures.py":
            continue
        again = owned & _string_constants(path)
        assert not again, f"{path.relative_to(ROOT)} declares {sorted(again)} again"


def test_figures_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        figs.FIGURES[0].label = "x"  # type: ignore[misc]
