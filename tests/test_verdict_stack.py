"""`make verdict` end to end, short, with a model that is not the IMDB one: the example language
identifier (``RVS_MODEL=examples.langid:build``) on its own JSONL corpus (``RVS_PAYLOAD=
examples/langid/corpus.jsonl``, column ``text``), through the real REST stack (nginx, uWSGI).

``--quick`` (every phase a few seconds) and REST only: a quick verdict proves the pipeline
(deploy once, saturate, open-loop steps, batch-and-retry, analysis, report), not a figure, and a
second deployment on the embedded broker would double the time past a minute; comparing two
deployments is unit-tested (tests/test_verdict.py, tests/test_verdict_axis.py). The second test
runs the synthetic cost axis at two costs the same way: each cost's folder a verdict, its model
carrying the cost, and the axis report over them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from fixtures.stack import REPO  # noqa: E402

pytestmark = [pytest.mark.stack]

CORPUS = REPO / "examples" / "langid" / "corpus.jsonl"
ENV = {"RVS_MODEL": "examples.langid:build", "RVS_PAYLOAD": str(CORPUS),
       "RVS_PAYLOAD_COLUMN": "text"}


def _scenario(tmp_path: Path) -> Path:
    doc = {"name": "verdict-quick", "modes": ["rest"],
           "payload": {"source": "imdb", "split": "test", "sample": 200, "seed": 1},
           "workload": {"batch_size": 10}, "arrival": {"closed": {"clients": 2}},
           "client": {"timeout_s": 1, "retry": {"policy": "exponential", "max_attempts": 2,
                                                "backoff_s": 0.1, "cap_s": 0.5}},
           "slo": {"p99_ms": 1000, "max_error_rate": 0.01}}
    sc = tmp_path / "verdict-quick.yaml"
    sc.write_text(yaml.safe_dump(doc))
    return sc


def _verdict(tmp_path: Path, *args: str, timeout: float = 180) -> tuple[subprocess.CompletedProcess,
                                                                          Path, float]:
    env = {k: v for k, v in os.environ.items() if k != "RVS_COST_US"} | ENV
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "bench", "verdict", "--quick", "--scenario",
                           str(_scenario(tmp_path)), "--results", str(tmp_path / "r"),
                           "--target-rate", "5000", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    (run,) = [p for p in (tmp_path / "r").iterdir() if p.is_dir() and p.name.endswith("-verdict")]
    return proc, run, wall


def _check_verdict_folder(run: Path) -> dict:
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
    cap = v["capacity"]["rest"]
    assert cap["saturated_reviews_per_s"] > 0 and cap["batch_size"] == 10
    assert {p["phase"] for p in cap["points"]} == {"open", "saturated", "overload"}
    meta = json.loads((run / "meta.json").read_text())
    assert meta["model"]["name"] == "langid-trigram-nb"
    # the payload is the example's JSONL file, not the scenario's IMDB split
    assert meta["scenario"]["payload"]["source"] == "file"
    assert meta["scenario"]["payload"]["path"] == str(CORPUS)
    return s


def test_a_quick_verdict_with_the_example_model_and_a_jsonl_payload(tmp_path):
    proc, run, wall = _verdict(tmp_path)
    s = _check_verdict_folder(run)
    v = s["verdict"]
    for r in v["regimes"]:
        assert {"load", "winner", "ratio", "ci95"} <= set(r)
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
    assert s["synthetic"] is None                                 # no cost was asked for
    # the console and summary.md open with the verdict in words
    assert "Verdict" in proc.stdout and "of capacity" in proc.stdout
    assert "**Verdict.**" in (run / "summary.md").read_text().splitlines()[:6]
    # `python -m analysis report` rebuilds it from the folder alone
    again = subprocess.run([sys.executable, "-m", "analysis", "report", str(run)], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "verdict" in again.stdout, again.stderr[-2000:]
    assert wall < 60, f"a quick verdict took {wall:.0f} s"


def test_a_quick_cost_axis_puts_each_cost_in_every_process(tmp_path):
    proc, run, wall = _verdict(tmp_path, "--cost-us", "0,2000", timeout=240)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["axis"]["costs_us"] == [0.0, 2000.0] and meta["complete"]
    caps = []
    for cost, sub in zip((0.0, 2000.0), ("cost-0us", "cost-2000us")):
        s = _check_verdict_folder(run / sub)
        assert s["synthetic"]["cost_us"] == cost and "synthetic" in s["synthetic"]["label"]
        caps.append(s["verdict"]["capacity"]["rest"]["saturated_reviews_per_s"])
        m = json.loads((run / sub / "meta.json").read_text())
        assert m["model"]["synthetic_cost_us"] == cost
    # +2 ms of CPU per input in the service's workers: at most ≈ 500 reviews/s on one core,
    # far below the bare example model (≈ 35 µs per sentence)
    assert caps[1] < 600 < caps[0], caps
    s = json.loads((run / "summary.json").read_text())
    v = s["verdict"]
    assert v["synthetic"] and [e["cost_us"] for e in v["cost_axis"]] == [0.0, 2000.0]
    assert len(v["changes"]) == 7 and s["words"][0].startswith("Synthetic model cost")
    assert any(w.startswith("Only REST was measured") for w in s["words"])
    assert (run / "summary.md").is_file() and (run / "report.html").is_file()
    assert "Synthetic model cost" in proc.stdout
    # with REST alone there is no pair to chart, but the axis is said and tabled
    again = subprocess.run([sys.executable, "-m", "analysis", "report", str(run)], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert wall < 120, f"a quick two-cost axis took {wall:.0f} s"
