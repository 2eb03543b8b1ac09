"""compare: thresholds + Mann-Whitney on per-window samples; exit 1 only on a significant regression."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fixtures.fake_run import make_run  # noqa: E402

from analysis.compare import (MetricSpec, Side, compare, judge, parse_thresholds,  # noqa: E402
                              run_compare)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cmp")
    return {
        "base": make_run(d / "base", seed=0),
        "same": make_run(d / "same", seed=0),
        "noisy": make_run(d / "noisy", seed=1),
        "slow": make_run(d / "slow", seed=2, stream_scale=0.7),   # stream serves 30 % less
    }


def test_identical_runs_pass(runs):
    code, text, cmp = run_compare(runs["base"], runs["same"])
    assert code == 0 and "no significant regression" in text
    assert all(r.verdict in ("unchanged", "n/a") for r in cmp.rows)


def test_thirty_percent_lower_throughput_fails(runs):
    code, text, cmp = run_compare(runs["base"], runs["slow"])
    assert code == 1 and "RESULT: REGRESSION" in text
    row = next(r for r in cmp.rows if r.key == "ratios.stream.successful_throughput")
    assert row.verdict == "REGRESSION" and row.change < -0.2 and row.p_value < 1e-6
    info = next(r for r in cmp.rows if r.key == "modes.stream.successful_throughput")
    assert not info.gate and info.verdict == "worse"      # shown, but informational


def test_noisy_unchanged_head_passes(runs):
    code, text, _ = run_compare(runs["base"], runs["noisy"])
    assert code == 0, text


def test_summary_only_base_falls_back_to_thresholds(runs, tmp_path):
    summary = tmp_path / "summary.json"
    from analysis.rundir import load_run
    from analysis.summary import analyse, build_summary
    summary.write_text(json.dumps(build_summary(analyse(load_run(runs["base"])))))
    code, text, cmp = run_compare(summary, runs["slow"])
    assert code == 1 and "thresholds only" in text
    assert all(r.p_value is None for r in cmp.rows)
    assert run_compare(summary, runs["noisy"])[0] == 0


def test_thresholds_are_configurable(runs):
    # a 30 % drop is tolerated when the gate allows 50 %
    code, _, _ = run_compare(runs["base"], runs["slow"],
                             thresholds=parse_thresholds(["successful_throughput=0.5",
                                                          "reviews_per_s=0.5", "efficiency=0.5"]))
    assert code == 0
    with pytest.raises(ValueError):
        parse_thresholds(["efficiency"])


def _side(label, key, value, samples):
    d: dict = {"complete": True}
    cur = d
    parts = key.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return Side(label, d, {key: np.asarray(samples, float)})


def test_direction_aware_latency():
    rng = np.random.default_rng(0)
    spec = MetricSpec("modes.rest.latency_ms.p99", higher_is_better=False, gate=True, threshold=0.1)
    base = _side("BASE", spec.key, 100.0, rng.normal(100, 5, 30))
    slower = _side("HEAD", spec.key, 140.0, rng.normal(140, 5, 30))
    faster = _side("HEAD", spec.key, 60.0, rng.normal(60, 5, 30))
    assert judge(spec, base, slower, 0.01).verdict == "REGRESSION"
    assert judge(spec, base, faster, 0.01).verdict == "improved"


def test_gate_option_and_not_significant():
    rng = np.random.default_rng(1)
    key = "modes.rest.latency_ms.p99"
    base = _side("BASE", key, 100.0, rng.normal(100, 60, 6))
    head = _side("HEAD", key, 130.0, rng.normal(100, 60, 6))     # headline worse, samples the same
    cmp = compare(base, head, gates=["latency_ms.p99"],
                  specs=[MetricSpec(key, False, False, 0.1)])
    assert cmp.rows[0].gate and cmp.rows[0].verdict == "worse, not significant" and not cmp.regressed


def test_cli_exit_codes(runs):
    py = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
    cmd = [py, "-m", "analysis", "compare", str(runs["base"]), str(runs["slow"]),
           "--threshold", "ratios.stream.successful_throughput=0.1", "--markdown"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stderr
    assert "| metric | base | head | change % | p-value | verdict |" in p.stdout
