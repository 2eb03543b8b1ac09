"""summary.json / summary.md / report.html / charts from a fixture run folder."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fixtures.fake_run import make_run  # noqa: E402

from analysis.__main__ import main  # noqa: E402
from analysis.charts import CHARTS  # noqa: E402
from analysis.report import build_report  # noqa: E402
from analysis.rundir import load_run  # noqa: E402
from analysis.summary import analyse, build_summary  # noqa: E402

CONTRACT_M = {"sent", "ok", "failed", "successful_throughput", "reviews_per_s", "latency_ms",
              "error_rate", "throughput_cv", "efficiency"}
FAULTS = {"stream": [{"t_s": 40.0, "kind": "kill", "target": "faust"}],
          "rest": [{"t_s": 30.0, "kind": "kill", "target": "uwsgi"}]}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    d = make_run(tmp_path_factory.mktemp("run") / "20250101T000000Z-fixture", faults=FAULTS)
    assert main(["report", str(d)]) == 0          # the CLI path, in-process
    return d


def test_summary_json_follows_the_contract(run_dir):
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["scenario"] == "fixture" and s["complete"] is True
    assert set(s["modes"]) == {"rest", "stream"}
    for m in s["modes"].values():
        assert CONTRACT_M <= set(m)
        assert {"p50", "p90", "p99", "max"} <= set(m["latency_ms"])
        assert m["sent"] == m["ok"] + m["failed"]
    assert s["baseline"] == "rest" and set(s["ratios"]) == {"stream"}
    assert {"successful_throughput", "reviews_per_s", "latency_ms.p99"} <= set(s["ratios"]["stream"])
    rest, stream = s["modes"]["rest"], s["modes"]["stream"]
    assert s["ratios"]["stream"]["successful_throughput"] == pytest.approx(
        stream["successful_throughput"] / rest["successful_throughput"])
    # the fixture's story: REST times out and retries after 60 s, the stream does not
    assert rest["error_kinds"].get("timeout", 0) > 0 and rest["retry_amplification"] > 1
    assert stream["failed"] == 0 and stream["retry_amplification"] == 1
    assert rest["efficiency_source"] == "measured" and 0 < stream["efficiency"] < 1
    assert rest["service_cpu_mean"] > 0
    rec = stream["recoveries"][0]
    assert rec["kind"] == "kill" and rec["recovery_s"] is not None and rec["recovery_s"] >= 5
    json.dumps(s, allow_nan=False)


def test_summary_is_deterministic(run_dir):
    a = build_summary(analyse(load_run(run_dir)))
    b = build_summary(analyse(load_run(run_dir)))
    assert a == b == json.loads((run_dir / "summary.json").read_text())


def test_summary_md_has_the_table(run_dir):
    md = (run_dir / "summary.md").read_text()
    assert "| metric | rest | stream | stream ÷ rest |" in md
    assert "| successful throughput (req/s) |" in md and "· fixture · complete" in md


def test_report_html_is_self_contained(run_dir):
    html = (run_dir / "report.html").read_text()
    assert "How to read this" in html and "fixture" in html
    # every chart but the rate-steps one (this fixture's load is constant)
    assert html.count("data:image/png;base64,") == len(CHARTS) - 1
    assert "Rate steps" not in html
    assert "successful throughput (req/s)" in html and "Errors by kind" in html
    assert "timeout" in html and "Recovery after faults" in html
    assert "src='http" not in html and 'src="http' not in html
    assert "Synthetic CPU" in html            # machine from meta.json


def test_charts_exist_and_are_not_blank(run_dir):
    import matplotlib.image as mpimg

    for name in CHARTS:
        if name == "sweep":  # only for rate-step scenarios
            assert not (run_dir / "charts" / "sweep.png").exists()
            continue
        assert (run_dir / "charts" / f"{name}.png").stat().st_size > 5000, name
    img = mpimg.imread(run_dir / "charts" / "throughput.png")
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 600
    assert float(np.var(img[..., :3])) > 0.005          # lines, text, colours: not a blank canvas


def test_missing_mode_is_reported_and_flagged(run_dir, tmp_path):
    d = tmp_path / "cut"
    shutil.copytree(run_dir, d, ignore=shutil.ignore_patterns("stream", "charts", "report.html",
                                                              "summary.*"))
    files = build_report(d)
    s = json.loads(files.summary_json.read_text())
    assert s["complete"] is False and s["missing_modes"] == ["stream"]
    assert s["modes"]["stream"] is None and s["modes"]["rest"]["ok"] > 0
    assert s["ratios"]["stream"]["successful_throughput"] is None
    html = files.report.read_text()
    assert "INCOMPLETE" in html and "missing: stream" in html
    assert "INCOMPLETE (missing: stream)" in files.summary_md.read_text()


def test_mode_marked_incomplete_and_no_cpu(tmp_path):
    d = make_run(tmp_path / "r", modes=("rest",), with_cpu=False, duration_s=30, ceiling=None)
    meta = json.loads((d / "meta.json").read_text())
    meta["modes"]["rest"]["complete"] = False
    (d / "meta.json").write_text(json.dumps(meta))
    files = build_report(d)
    s = files.summary
    assert s["complete"] is False
    assert s["modes"]["rest"]["efficiency_source"] == "model_cost_fallback"
    assert "cpu" not in files.charts and "summary" in files.charts
    assert any("incomplete" in n for n in s["notes"])


def test_not_a_run_folder(tmp_path):
    assert main(["report", str(tmp_path)]) == 2


def test_degenerate_run_still_reports(tmp_path):
    """An empty stream table and an all-failed REST run give a report, not a traceback."""
    from loadgen import record

    d = make_run(tmp_path / "r", duration_s=20)
    record.write(record.to_frame([]), d / "stream" / "requests.parquet")
    rest = record.read(d / "rest" / "requests.parquet")
    rest["outcome"], rest["error_kind"] = "error", "timeout"
    record.write(rest, d / "rest" / "requests.parquet")
    files = build_report(d)
    s = files.summary
    assert s["modes"]["rest"]["ok"] == 0 and s["modes"]["rest"]["error_rate"] == 1.0
    assert s["modes"]["stream"]["sent"] == 0 and s["modes"]["stream"]["latency_ms"]["p99"] is None
    assert s["ratios"]["stream"]["successful_throughput"] is None
    assert "latency" in files.charts and files.report.stat().st_size > 10_000


def test_rate_steps_scenario_gets_its_table_chart_and_maximum(tmp_path):
    """The fixture's constant 40 req/s described as two steps: the first step (load the fixture
    serves cleanly) must be sustainable for both modes, and the report must show it."""
    d = make_run(tmp_path / "20250101T000000Z-steps", scenario="steps", rest_degrade_after_s=1e9)
    meta = json.loads((d / "meta.json").read_text())
    meta["scenario"] = {"name": "steps", "slo": {"p99_ms": 10_000, "max_error_rate": 0.5},
                        "arrival": {"open": {"rate": {"shape": "steps",
                                                      "steps": [[0, 40], [60, 40]]}}}}
    (d / "meta.json").write_text(json.dumps(meta))
    files = build_report(d)
    for mode in ("rest", "stream"):
        sw = files.summary["modes"][mode]["sweep"]
        assert [s["offered_per_s"] for s in sw["steps"]] == [40.0, 40.0]
        assert sw["max_sustainable_ops_per_s"] == 40.0 and sw["efficiency_at_max"] > 0
    assert (d / "charts" / "sweep.png").stat().st_size > 5000
    assert "Rate steps" in (d / "report.html").read_text()
    assert "max sustainable" in (d / "summary.md").read_text()
