"""`make verdict` end to end, short: ``python -m bench verdict --quick`` through the real REST
stack (nginx, uWSGI, the trained model), every phase a few seconds. It proves the pipeline
(deploy once, saturate, open-loop steps, batch-and-retry, analysis, report), not a figure; a
comparison of two deployments is unit-tested (tests/test_verdict.py), since a second deployment
on the embedded broker would double the time.

Payload and model: the IMDB test split and the trained IMDB model. When ``examples/`` and
``PAYLOAD=``/``MODEL=`` land (branch helper-model), switch ``payload`` below to the example JSONL
and set the example model in the environment of ``_verdict``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from fixtures.stack import REPO, needs_model  # noqa: E402

pytestmark = [pytest.mark.stack, needs_model]


def test_a_quick_verdict_writes_the_block_the_chart_and_says_it(tmp_path):
    doc = {"name": "verdict-quick", "modes": ["rest"],
           "payload": {"source": "imdb", "split": "test", "sample": 200, "seed": 1},
           "workload": {"batch_size": 10}, "arrival": {"closed": {"clients": 2}},
           "client": {"timeout_s": 1, "retry": {"policy": "exponential", "max_attempts": 2,
                                                "backoff_s": 0.1, "cap_s": 0.5}},
           "slo": {"p99_ms": 1000, "max_error_rate": 0.01}}
    sc = tmp_path / "verdict-quick.yaml"
    sc.write_text(yaml.safe_dump(doc))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "bench", "verdict", "--quick", "--scenario",
                           str(sc), "--results", str(tmp_path / "r"), "--target-rate", "5000"],
                          cwd=REPO, capture_output=True, text=True, timeout=180)
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    (run,) = [p for p in (tmp_path / "r").iterdir() if p.is_dir() and p.name.endswith("-verdict")]
    for f in ("meta.json", "summary.json", "summary.md", "report.html", "charts/verdict.png",
              "rest/calibration/requests.parquet", "rest/open/requests.parquet",
              "rest/overload-1.5x/requests.parquet", "rest/overload-3x/cpu.csv"):
        assert (run / f).is_file(), f"missing {f}"
    s = json.loads((run / "summary.json").read_text())
    assert s["kind"] == "verdict" and s["complete"] is True
    v = s["verdict"]
    assert [r["load"] for r in v["regimes"]] == ["¼ of capacity", "½ of capacity",
                                                 "¾ of capacity", "at the SLO", "saturated",
                                                 "1.5× capacity", "3× capacity"]
    for r in v["regimes"]:
        assert {"load", "winner", "ratio", "ci95"} <= set(r)
    cap = v["capacity"]["rest"]
    assert cap["saturated_reviews_per_s"] > 0 and cap["batch_size"] == 10
    assert {p["phase"] for p in cap["points"]} == {"open", "saturated", "overload"}
    meta = json.loads((run / "meta.json").read_text())
    phases = meta["modes"]["rest"]["phases"]
    # each phase's load is the deployment's own: 1.5x = 1.5 x timeout x its ops/s
    fill = meta["modes"]["rest"]["capacity"]["timeout_fill_clients"]
    assert phases["overload-1.5x"]["clients"] == max(1, round(1.5 * fill))
    plan = v["plan"]["modes"]["rest"]
    if plan["workers"]:
        assert plan["service_cores"] == plan["workers"] + 1        # the N−1 rule
    assert v["plan"]["target_reviews_per_s"] == 5000
    assert [r["rule"][:4] for r in v["rules"]] == ["When", "N−1 "]
    # the console and summary.md open with the verdict in words
    assert "Verdict" in proc.stdout and "of capacity" in proc.stdout
    assert "**Verdict.**" in (run / "summary.md").read_text().splitlines()[:6]
    # `python -m analysis report` rebuilds it from the folder alone
    again = subprocess.run([sys.executable, "-m", "analysis", "report", str(run)], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "verdict" in again.stdout, again.stderr[-2000:]
    assert wall < 90, f"a quick verdict took {wall:.0f} s"
