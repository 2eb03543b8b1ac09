"""`make bench` end to end: the smoke scenario through the real stack, and a failing phase.

The smoke run is what `make bench SCENARIO=smoke` runs (same CLI, same code path), with its results
in a temporary folder. A failing phase must stop everything, keep the partial run marked
incomplete and say which phase failed and where its log is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from services.broker import broker_kind
from services.kafka import kafka_version

sys.path.insert(0, str(Path(__file__).parent))
from fixtures.stack import REPO, needs_model  # noqa: E402

pytestmark = [pytest.mark.stack, needs_model]


def _bench(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", "run", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def _descendants_now() -> set[int]:
    me = psutil.Process()
    return {c.pid for c in me.children(recursive=True)}


def test_smoke_runs_both_modes_end_to_end(tmp_path):
    t0 = time.monotonic()
    proc = _bench("smoke", "--results", str(tmp_path))
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = [p for p in tmp_path.iterdir() if p.is_dir() and p.name.endswith("-smoke")]
    assert len(runs) == 1
    run = runs[0]
    assert (tmp_path / "latest").resolve() == run.resolve()
    for f in ("meta.json", "summary.json", "summary.md", "report.html", "rest/requests.parquet",
              "stream/requests.parquet", "rest/cpu.csv", "stream/cpu.csv"):
        assert (run / f).is_file(), f"missing {f}"
    summary = json.loads((run / "summary.json").read_text())
    meta = json.loads((run / "meta.json").read_text())
    assert summary["scenario"] == "smoke" and summary["complete"] is True
    assert set(summary["modes"]) == {"rest", "stream"}
    for mode, m in summary["modes"].items():
        assert m["sent"] > 0 and m["ok"] > 0, mode
        assert m["sent"] == m["ok"] + m["failed"], mode
        for key in ("successful_throughput", "reviews_per_s", "error_rate", "throughput_cv",
                    "efficiency"):
            assert isinstance(m[key], (int, float)), (mode, key)
        assert set(m["latency_ms"]) >= {"p50", "p90", "p99", "max"}
    assert summary["baseline"] == "rest" and set(summary["ratios"]) == {"stream"}
    assert set(summary["ratios"]["stream"]) >= {"successful_throughput", "reviews_per_s",
                                                "latency_ms.p99"}
    # the run records where things ran and, per mode, the ceiling it was measured against:
    # tries right before and right after it, at its batch size, and others' load on its cores
    assert meta["complete"] is True
    for mode in ("rest", "stream"):
        c = meta["modes"][mode]["ceiling"]
        assert c["best"] > 0 and c["best"] == max(t["reviews_per_s"] for t in c["tries"])
        assert {t["when"] for t in c["tries"]} == {"before", "after"} and c["noise"] >= 0
        assert summary["modes"][mode]["ceiling_reviews_per_s"] == c["best"]
        assert summary["modes"][mode]["ceiling_check"] in ("below", "within_noise", "above")
        assert (run / mode / "cores.csv").is_file()
        assert summary["modes"][mode]["core_noise"]["cores"] == len(c["cpus"])
    assert meta["modes"]["rest"]["ceiling"]["batch"] == 1          # smoke: one review per POST
    for mode in ("rest", "stream"):
        mm = meta["modes"][mode]
        assert mm["complete"] and mm["t0_epoch"] > 0 and mm["settings"]
        assert mm["service_cpus"] and mm["driver_cpus"]
        if len(os.sched_getaffinity(0)) > 1:
            assert not set(mm["service_cpus"]) & set(mm["driver_cpus"])
    # the stream side ran on the embedded broker the run chose (Apache Kafka by default), and
    # meta.json names it, its exact version and the settings it ran with
    stream = meta["modes"]["stream"]
    kind = broker_kind()
    assert stream["broker"]["name"] == kind and stream["broker"]["embedded"] is True
    if kind == "kafka":
        assert stream["broker"]["version"] == kafka_version()
        props = stream["broker"]["settings"]["server.properties"]
        assert props["process.roles"] == "broker,controller"
    assert stream["settings"]["fetch_max_wait_ms"] == (10 if kind == "tansu" else 1500)
    # the console ends with the table and the report's path
    assert "report:" in proc.stdout and "stream ÷ rest" in proc.stdout
    assert wall < 120, f"smoke took {wall:.0f}s; the scenario promises well under a minute each"


def test_a_failing_phase_keeps_the_partial_run_and_names_the_phase(tmp_path):
    scenario = tmp_path / "broken.yaml"
    scenario.write_text(
        "name: broken\nmodes: [rest]\n"
        "arrival: {open: {rate: {shape: constant, ops_per_s: 5}}}\n"
        "timing: {warmup_s: 0, duration_s: 2, drain_s: 1}\n"
        "service: {rest: {no_such_knob: 1}}\n")
    before = _descendants_now()
    proc = _bench(str(scenario), "--results", str(tmp_path / "results"), "--no-ceiling",
                  timeout=120)
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    assert "no_such_knob" in out and "partial run kept" in out
    run = next((tmp_path / "results").glob("*-broken"))
    meta = json.loads((run / "meta.json").read_text())
    assert meta["complete"] is False
    assert meta["failed_phase"].startswith("rest")
    assert "no_such_knob" in meta["error"]
    assert _descendants_now() <= before


def test_compose_target_drives_what_is_there_and_starts_nothing(tmp_path):
    """TARGET=compose attaches to running services; when none answers, one clear line."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    before = _descendants_now()
    proc = _bench("smoke", "--target", "compose", "--url", f"http://127.0.0.1:{port}",
                  "--bootstrap", f"127.0.0.1:{port}", "--no-ceiling",
                  "--results", str(tmp_path), timeout=120)
    assert proc.returncode == 1
    assert "healthz is not healthy" in proc.stdout and "make up" in proc.stdout
    meta = json.loads(next(tmp_path.glob("*-smoke/meta.json")).read_text())
    assert meta["target"] == "compose" and meta["failed_phase"].startswith("rest")
    assert "report failed" not in proc.stdout  # a partial run still gets its report
    assert next(tmp_path.glob("*-smoke/report.html")).is_file()
    assert _descendants_now() <= before


def test_smoke_repeated_twice_interleaves_and_writes_the_repeats_block(tmp_path):
    """--repeat 2: two run folders inside the run's, modes in both orders, one repeats block.
    The shipped smoke, shortened (four deployments in a row; its full length is the test above)."""
    import yaml

    doc = yaml.safe_load((REPO / "scenarios" / "smoke.yaml").read_text())
    doc["timing"] = {"warmup_s": 1, "duration_s": 5, "drain_s": 3}
    (tmp_path / "sc").mkdir()
    path = tmp_path / "sc" / "smoke.yaml"
    path.write_text(yaml.safe_dump(doc))
    proc = _bench(str(path), "--repeat", "2", "--no-ceiling", "--results", str(tmp_path),
                  timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = next(p for p in tmp_path.iterdir() if p.is_dir() and p.name.endswith("-smoke"))
    meta = json.loads((run / "meta.json").read_text())
    assert meta["complete"] is True and meta["repeats"]["n"] == 2
    assert [r["order"] for r in meta["repeats"]["runs"]] == [["rest", "stream"],
                                                             ["stream", "rest"]]
    for k in (1, 2):
        sub = run / f"repeat-{k}"
        for f in ("meta.json", "summary.json", "rest/requests.parquet", "stream/requests.parquet"):
            assert (sub / f).is_file(), f"missing repeat-{k}/{f}"
    # the second repeat ran stream first: its t0 precedes rest's
    m2 = json.loads((run / "repeat-2" / "meta.json").read_text())["modes"]
    assert m2["stream"]["t0_epoch"] < m2["rest"]["t0_epoch"]
    summary = json.loads((run / "summary.json").read_text())
    block = summary["repeats"]
    assert block["n"] == 2 and block["source"] == "repeats"
    per = [json.loads((run / f"repeat-{k}" / "summary.json").read_text()) for k in (1, 2)]
    st = block["metrics"]["stream/rest.reviews_per_s"]
    assert sorted(st["samples"]) == sorted(
        p["modes"]["stream"]["reviews_per_s"] / p["modes"]["rest"]["reviews_per_s"] for p in per)
    assert st["min"] <= st["median"] <= st["max"]
    assert "Repeats" in (run / "report.html").read_text()
    assert "median over 2 repeats" in proc.stdout


def test_a_relative_load_is_calibrated_first_and_resolved_for_the_run(tmp_path):
    """A scenario that states its clients as multiples of REST's timeout-filling count gets a
    calibration phase of REST, and both meta.json and the driver see absolute client counts."""
    import yaml

    doc = {"name": "relative", "modes": ["rest"],
           "payload": {"source": "imdb", "split": "test", "sample": 200, "seed": 1},
           "workload": {"batch_size": 50},
           "arrival": {"closed": {"unit": "timeout_fill", "clients": [[0, 0.2], [3, 0.6]]}},
           "calibration": {"mode": "rest", "warmup_s": 1, "duration_s": 3, "clients": 2},
           "timing": {"warmup_s": 1, "duration_s": 5, "drain_s": 2},
           "client": {"timeout_s": 1, "retry": {"policy": "none"}}}
    path = tmp_path / "relative.yaml"
    path.write_text(yaml.safe_dump(doc))
    proc = _bench(str(path), "--results", str(tmp_path / "r"), "--no-ceiling")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run,) = [p for p in (tmp_path / "r").iterdir() if p.is_dir() and p.name.endswith("-relative")]
    meta = json.loads((run / "meta.json").read_text())
    cal = meta["calibration"]
    assert cal["mode"] == "rest" and cal["ops_per_s"] > 0 and cal["batch_size"] == 50
    assert cal["timeout_fill_clients"] == pytest.approx(cal["ops_per_s"] * 1.0)
    want = [max(1, round(x * cal["timeout_fill_clients"])) for x in (0.2, 0.6)]
    assert [s["clients"] for s in cal["steps"]] == want
    # what ran is the resolved scenario: absolute clients, the relative one kept beside it
    assert meta["scenario"]["arrival"]["closed"]["unit"] == "clients"
    assert [n for _, n in meta["scenario"]["arrival"]["closed"]["clients"]] == want
    assert cal["relative_scenario"]["arrival"]["closed"]["unit"] == "timeout_fill"
    assert (run / "scenario.yaml").is_file() and (run / "calibration" / "requests.parquet").is_file()
    assert meta["complete"] is True
    assert "Load: load relative to rest's capacity" in (run / "summary.md").read_text()
