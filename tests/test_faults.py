"""Fault injection (bench/faults.py) and its analysis: recovery, lost / retried / duplicated.

Unit tests use hand-made request tables and fake processes. The ``stack`` tests run each shipped
fault scenario in a SHORT form on the real local stack (nginx + uWSGI, the embedded broker + Faust,
the real model) through ``bench.run.run_scenario``, into a temporary results root, and check what
each fault must produce (nothing answered while the service is down, nothing lost where nothing
may be, re-deliveries counted as duplicates), the accounting and the report's fault markers.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from fixtures.tables import att, table  # noqa: E402

from analysis import metrics as mx  # noqa: E402
from analysis.summary import recovery_table, summary_markdown  # noqa: E402
from bench import faults as fx  # noqa: E402
from loadgen.scenario import ScenarioError, load_scenario, parse_scenario  # noqa: E402
from services.procs import Supervisor  # noqa: E402


# ------------------------------------------------------------------------------- metrics (pure)
def _outage_table(*, lost=(), retried=(), dup=()):
    """10 req/s for 40 s; nothing is answered in [20, 24), the backlog comes out at 24.05."""
    rows = []
    for i in range(400):
        t = i / 10 + 0.001
        rid = f"r{i}"
        if i in lost:
            rows.append(att(rid, t, ok=False, kind="no_prediction", done=t + 15))
        elif i in retried:
            rows.append(att(rid, t, ok=False, kind="http_5xx", done=t + 0.01))
            rows.append(att(rid, t, attempt=2, intended=t + 0.3, done=24.05))
        elif 20 <= t < 24:
            rows.append(att(rid, t, done=24.05, dup=1 if i in dup else 0))
        else:
            rows.append(att(rid, t, lat=0.01, dup=1 if i in dup else 0))
    return table(*rows)


def test_fault_impact_counts_lost_retried_duplicated_around_the_fault():
    t = _outage_table(lost={205, 210}, retried={199, 215}, dup={201, 202, 203, 195, 300})
    f = mx.Fault(20.0, "kill_worker", "stream-worker-0", pid=1, duration_s=0.0, ended_t_s=23.5)
    m = mx.mode_metrics(t, mx.Window(0, 40), faults=(f,))
    rec, imp = m.recoveries[0], m.fault_impacts[0]
    assert rec.recovered_at_s == 24.0 and rec.recovery_s == 4.0
    # span: from the fault to the end of the 3-s recovery run (27 s)
    assert imp.span_start_s == 20.0 and imp.span_end_s == 27.0
    # due before 27 and settled at or after 20: #199 (in flight at the fault) .. #269
    assert imp.requests == 71 and imp.ok == 69
    assert imp.lost == 2 and imp.lost_by_kind == {"no_prediction": 2}
    assert imp.retried == 2 and imp.extra_attempts == 2
    # duplicates: re-deliveries of what was answered before the fault (#195) count; #300 is
    # due after the span
    assert imp.duplicated == 4 and imp.duplicates == 4 and imp.dup_from_s is None
    assert imp.requests == imp.ok + imp.lost


def test_fault_span_never_recovered_runs_to_the_end_and_stops_at_the_next_fault():
    rec_never = mx.Recovery(10.0, "pause", None, 5.0, None, None)
    assert mx.fault_span(mx.Fault(10.0, "pause"), rec_never) == (10.0, None)
    assert mx.fault_span(mx.Fault(10.0, "pause"), rec_never, next_t_s=30.0) == (10.0, 30.0)
    rec = mx.Recovery(10.0, "pause", None, 5.0, 12.0, 2.0)
    # the span lasts at least until the fault was over (here a long pause)
    assert mx.fault_span(mx.Fault(10.0, "pause", ended_t_s=20.0), rec) == (10.0, 20.0)
    assert mx.fault_span(mx.Fault(10.0, "pause", ended_t_s=11.0), rec) == (10.0, 15.0)


def test_two_faults_split_the_requests_between_them():
    rows = [att(f"r{i}", i / 10 + 0.001, lat=0.01) for i in range(400)]
    faults = (mx.Fault(30.0, "pause"), mx.Fault(10.0, "kill_worker"))
    m = mx.mode_metrics(table(*rows), mx.Window(0, 40), faults=faults)
    a, b = m.fault_impacts
    assert (a.t_s, b.t_s) == (10.0, 30.0)                  # sorted
    assert a.span_end_s <= b.span_start_s
    assert a.requests + b.requests <= 300 and a.lost == b.lost == 0
    assert a.dup_from_s is None and b.dup_from_s == 10.0


def test_duplicates_before_a_second_fault_belong_to_it():
    rows = [att(f"r{i}", i / 10 + 0.001, lat=0.01, dup=1 if i in (50, 280) else 0)
            for i in range(400)]
    m = mx.mode_metrics(table(*rows), mx.Window(0, 40),
                        faults=(mx.Fault(10.0, "kill_worker"), mx.Fault(30.0, "kill_worker")))
    a, b = m.fault_impacts
    assert (a.duplicated, b.duplicated) == (1, 1)           # #50 -> first, #280 -> second


def test_fault_impact_of_an_empty_table_is_zero():
    imp = mx.fault_impacts(table(), [mx.Fault(1.0, "pause")], [])[0]
    assert (imp.requests, imp.lost, imp.retried, imp.duplicated) == (0, 0, 0, 0)


def test_faults_from_meta_keeps_the_injector_fields():
    f = mx.faults_from_meta([{"t_s": 20.004, "kind": "pause", "target": "rest-uwsgi+rest-nginx",
                              "pid": 42, "duration_s": 5.0, "ended_t_s": 25.01, "pgids": [42, 43]},
                             {"t_s": None, "kind": "error", "error": "no start line"}])
    assert f == (mx.Fault(20.004, "pause", "rest-uwsgi+rest-nginx", 42, 5.0, 25.01),)


def test_summary_tables_show_recovery_and_losses():
    s = {"modes": {"rest": {"faults": [{
        "t_s": 20.0, "kind": "kill_worker", "target": "uwsgi-worker", "ended_t_s": 23.7,
        "baseline_per_s": 50.0, "recovery_s": 4.0, "requests": 300, "lost": 1,
        "lost_by_kind": {"http_5xx": 1}, "retried": 3, "duplicated": 0}]}, "stream": None}}
    t = recovery_table(s)
    row = t.iloc[0]
    assert row["recovery (s)"] == "4" and row["lost"] == "1 (http_5xx 1)" and row["retried"] == "3"
    md = summary_markdown({**s, "scenario": "x"})
    assert "Faults" in md and "kill_worker" in md and "| 4 |" in md


# ------------------------------------------------------------------------------- scenarios
def test_pause_needs_a_duration():
    base = {"name": "t", "arrival": {"open": {"rate": {"shape": "constant", "ops_per_s": 1}}},
            "timing": {"warmup_s": 1, "duration_s": 10, "drain_s": 1}}
    with pytest.raises(ScenarioError, match="a pause needs duration_s > 0"):
        parse_scenario({**base, "faults": [{"at_s": 2, "kind": "pause"}]})
    parse_scenario({**base, "faults": [{"at_s": 2, "kind": "pause", "duration_s": 1}]})


@pytest.mark.parametrize("name,kind", [("fault-kill", "kill_worker"), ("fault-pause", "pause"),
                                       ("fault-restart", "restart")])
def test_shipped_fault_scenarios(name, kind):
    sc = load_scenario(name)
    assert sc.description and "\n" not in sc.description
    assert sc.timing.end_s <= 60 and [f.kind for f in sc.faults] == [kind]
    assert set(sc.faults[0].modes) == {"rest", "stream"}
    assert sc.faults[0].at_s > sc.timing.warmup_s                   # a baseline before it
    # drain long enough for a stream backlog to be answered within the client timeout
    assert sc.timing.drain_s >= sc.client.timeout_s
    assert parse_scenario(sc.to_dict()) == sc


@pytest.mark.parametrize("name,kind", [("fault-broker-kill", "kill_broker"),
                                       ("fault-broker-pause", "pause_broker")])
def test_shipped_broker_fault_scenarios_are_stream_only(name, kind):
    sc = load_scenario(name)
    assert sc.modes == ("stream",) and [f.kind for f in sc.faults] == [kind]
    assert sc.faults[0].modes == ("stream",) and sc.faults[0].at_s > sc.timing.warmup_s
    assert sc.timing.drain_s >= sc.client.timeout_s
    assert parse_scenario(sc.to_dict()) == sc


def test_broker_faults_default_to_the_stream_and_refuse_rest():
    base = {"name": "t", "arrival": {"open": {"rate": {"shape": "constant", "ops_per_s": 1}}},
            "timing": {"warmup_s": 1, "duration_s": 10, "drain_s": 1}}
    sc = parse_scenario({**base, "faults": [{"at_s": 2, "kind": "kill_broker"}]})
    assert sc.modes == ("rest", "stream") and sc.faults[0].modes == ("stream",)
    with pytest.raises(ScenarioError, match="only to a deployment with a broker"):
        parse_scenario({**base, "faults": [{"at_s": 2, "kind": "kill_broker",
                                            "modes": ["rest", "stream"]}]})
    with pytest.raises(ScenarioError, match="scenario has none"):
        parse_scenario({**base, "modes": ["rest"],
                        "faults": [{"at_s": 2, "kind": "pause_broker", "duration_s": 1}]})
    with pytest.raises(ScenarioError, match="a pause needs duration_s > 0"):
        parse_scenario({**base, "faults": [{"at_s": 2, "kind": "pause_broker"}]})


# ------------------------------------------------------------------------------- injector (fakes)
def test_driver_t0_reads_the_start_line(tmp_path):
    log = tmp_path / "driver.log"
    assert fx.driver_t0(log) is None
    log.write_text("noise\n{\"t\": 1}\n")
    assert fx.driver_t0(log) is None
    log.write_text('some warning\n{"event":"start","mode":"rest","t0_epoch":1234.5}\n{"t":1}\n')
    assert fx.driver_t0(log) == 1234.5


class _Dep:
    def __init__(self, pids, settings=None, broker=None):
        self.service_pids, self.settings = pids, settings or {}
        self.broker, self.bootstrap = broker or {}, None


def _sleeper(sup, name):
    return sup.start(name, [sys.executable, "-c", "import time; time.sleep(60)"])


def _scenario(kind, at_s, duration_s, modes=("stream",)):
    return parse_scenario({"name": "t", "modes": list(modes),
                           "arrival": {"open": {"rate": {"shape": "constant", "ops_per_s": 1}}},
                           "timing": {"warmup_s": 0, "duration_s": 30, "drain_s": 0},
                           "faults": [{"at_s": at_s, "kind": kind, "duration_s": duration_s}]})


def test_pause_broker_stops_the_broker_not_the_service(tmp_path):
    sup = Supervisor(tmp_path / "logs")
    try:
        svc, brk = _sleeper(sup, "stream-worker-0"), _sleeper(sup, "kafka")
        log = tmp_path / "driver.log"
        log.write_text(json.dumps({"event": "start", "t0_epoch": time.time()}) + "\n")
        inj = fx.FaultInjector.for_mode("stream", _scenario("pause_broker", 0.1, 30), sup=sup,
                                        dep=_Dep([svc.pid], broker={"pid": brk.pid}),
                                        driver_log=log, say=lambda *_: None).start()
        deadline = time.time() + 3
        while time.time() < deadline and _state(brk.pid) != "T":
            time.sleep(0.02)
        assert _state(brk.pid) == "T" and _state(svc.pid) in ("S", "R")
        assert inj.broker_planned.is_set()            # the broker watch must not cry crash
        recs = inj.stop()
        assert _state(brk.pid) in ("S", "R")
        assert recs[0]["kind"] == "pause_broker" and recs[0]["pid"] == brk.pid
        assert recs[0]["target"] == "kafka" and recs[0]["ended_t_s"] is not None
    finally:
        sup.stop_all()


def test_kill_broker_refuses_tansu_and_rest(tmp_path):
    sup = Supervisor(tmp_path / "logs")
    try:
        brk = _sleeper(sup, "tansu")
        log = tmp_path / "driver.log"
        log.write_text(json.dumps({"event": "start", "t0_epoch": time.time()}) + "\n")
        dep = _Dep([], broker={"pid": brk.pid, "name": "tansu"})
        inj = fx.FaultInjector.for_mode("stream", _scenario("kill_broker", 0.0, 0), sup=sup,
                                        dep=dep, driver_log=log, say=lambda *_: None).start()
        deadline = time.time() + 3
        while time.time() < deadline and not inj.records:
            time.sleep(0.02)
        rec = inj.stop()[0]
        assert "Tansu keeps its log in memory" in rec["error"] and brk.alive()
        assert not inj.broker_planned.is_set()
    finally:
        sup.stop_all()


def test_broker_watch_reports_an_unplanned_death_once(tmp_path):
    from bench.brokerwatch import BrokerWatch

    sup = Supervisor(tmp_path / "logs")
    try:
        brk = _sleeper(sup, "kafka")
        seen, planned = [], threading.Event()
        watch = BrokerWatch(sup, _Dep([], broker={"pid": brk.pid}), on_death=seen.append,
                            planned=planned, interval_s=0.02).start()
        planned.set()                                 # a planned kill is not a death
        os.kill(brk.pid, signal.SIGKILL)
        brk.popen.wait(5)
        time.sleep(0.2)
        assert seen == [] and watch.death is None
        planned.clear()
        deadline = time.time() + 3
        while time.time() < deadline and not seen:
            time.sleep(0.02)
        death = watch.stop()
        assert seen == [death] and death.pid == brk.pid and death.returncode == -9
        line = death.line()
        assert "died during the drive" in line and "SIGKILL" in line and str(death.log) in line
        assert "\n" not in line
    finally:
        sup.stop_all()


def test_broker_watch_without_a_broker_does_nothing(tmp_path):
    from bench.brokerwatch import BrokerWatch

    watch = BrokerWatch(Supervisor(tmp_path), _Dep([]), on_death=lambda _: None).start()
    assert watch.stop() is None


def test_pause_stops_and_continues_the_service_group_and_records_it(tmp_path):
    """SIGSTOP/SIGCONT of a real (sleeping) process group, timed from the driver's t0."""
    sup = Supervisor(tmp_path / "logs")
    try:
        svc = sup.start("stream-worker-0", [sys.executable, "-c", "import time; time.sleep(60)"])
        log = tmp_path / "driver.log"
        t0 = time.time()
        log.write_text(json.dumps({"event": "start", "t0_epoch": t0}) + "\n")
        sc = parse_scenario({"name": "t", "arrival": {"open": {"rate": {"shape": "constant",
                                                                       "ops_per_s": 1}}},
                             "timing": {"warmup_s": 0, "duration_s": 5, "drain_s": 0},
                             "faults": [{"at_s": 0.3, "kind": "pause", "duration_s": 0.6}]})
        dep = _Dep([svc.pid])
        inj = fx.FaultInjector.for_mode("stream", sc, sup=sup, dep=dep, driver_log=log,
                                        say=lambda *_: None).start()
        stopped = False
        deadline = time.time() + 3
        while time.time() < deadline and not stopped:
            stopped = _state(svc.pid) == "T"
            time.sleep(0.02)
        assert stopped, "the service was never SIGSTOPped"
        time.sleep(1.0)
        assert _state(svc.pid) in ("S", "R"), "the service was not continued"
        recs = inj.stop()
        assert len(recs) == 1
        r = recs[0]
        assert r["kind"] == "pause" and r["pid"] == svc.pid and r["duration_s"] == 0.6
        assert 0.25 <= r["t_s"] <= 0.8 and r["ended_t_s"] - r["t_s"] == pytest.approx(0.6, abs=0.2)
        assert svc.alive()
    finally:
        sup.stop_all()


def test_stop_continues_a_paused_group_at_once(tmp_path):
    sup = Supervisor(tmp_path / "logs")
    try:
        svc = sup.start("stream-worker-0", [sys.executable, "-c", "import time; time.sleep(60)"])
        log = tmp_path / "driver.log"
        log.write_text(json.dumps({"event": "start", "t0_epoch": time.time()}) + "\n")
        sc = parse_scenario({"name": "t", "arrival": {"open": {"rate": {"shape": "constant",
                                                                       "ops_per_s": 1}}},
                             "timing": {"warmup_s": 0, "duration_s": 100, "drain_s": 0},
                             "faults": [{"at_s": 0.0, "kind": "pause", "duration_s": 60}]})
        inj = fx.FaultInjector.for_mode("stream", sc, sup=sup, dep=_Dep([svc.pid]), driver_log=log,
                                        say=lambda *_: None).start()
        deadline = time.time() + 3
        while time.time() < deadline and _state(svc.pid) != "T":
            time.sleep(0.02)
        t = time.time()
        recs = inj.stop()
        assert time.time() - t < 2 and _state(svc.pid) in ("S", "R")
        assert recs[0]["ended_t_s"] is not None
    finally:
        sup.stop_all()


def test_faults_of_other_modes_are_ignored_and_no_thread_starts(tmp_path):
    sc = parse_scenario({"name": "t", "arrival": {"open": {"rate": {"shape": "constant",
                                                                   "ops_per_s": 1}}},
                         "faults": [{"at_s": 1, "kind": "kill_worker", "modes": ["rest"]}]})
    inj = fx.FaultInjector.for_mode("stream", sc, sup=Supervisor(tmp_path), dep=_Dep([]),
                                    driver_log=tmp_path / "x.log")
    assert inj.faults == [] and inj.start().stop() == []


def test_a_missing_start_line_is_recorded_not_raised(tmp_path):
    sc = parse_scenario({"name": "t", "arrival": {"open": {"rate": {"shape": "constant",
                                                                   "ops_per_s": 1}}},
                         "faults": [{"at_s": 1, "kind": "kill_worker"}]})
    inj = fx.FaultInjector.for_mode("rest", sc, sup=Supervisor(tmp_path), dep=_Dep([]),
                                    driver_log=tmp_path / "none.log", t0_timeout_s=0.3,
                                    say=lambda *_: None).start()
    time.sleep(0.6)
    recs = inj.stop()
    assert recs and recs[0]["kind"] == "error" and "no start line" in recs[0]["error"]
    assert mx.faults_from_meta(recs) == ()


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


# ------------------------------------------------------------------------------- the real stack
def _short(name: str, folder: Path, stream: dict | None = None, drain_s: float = 12.0,
           duration_s: float = 12.0):
    """The shipped scenario, shortened: fault at 5 s, in a window of 2-14 s (a killed Faust
    worker is back in ~9 s: the group waits for the dead member's session to time out), then up
    to 12 s of drain (the driver stops as soon as everything is answered). ``stream``: settings
    laid over the scenario's stream service. Written to a file: the driver subprocess reads the
    scenario from ``scenario.source``."""
    sc = load_scenario(name)
    sc = sc.for_test(warmup_s=2.0, duration_s=duration_s, drain_s=drain_s)
    sc = replace(sc, faults=tuple(replace(f, at_s=5.0) for f in sc.faults))
    if stream:
        sc = replace(sc, service={**sc.service, "stream": {**sc.service.get("stream", {}),
                                                           **stream}})
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sc.to_dict(), sort_keys=False))
    return load_scenario(path)


@pytest.fixture(scope="module")
def results_root(tmp_path_factory):
    return tmp_path_factory.mktemp("fault-results")


def _run(name: str, root: Path, stream: dict | None = None, drain_s: float = 12.0,
         duration_s: float = 12.0):
    from bench.run import Placement, RunOptions, run_scenario

    opts = RunOptions(placement=Placement.default(), results=root, measure_ceiling=False,
                      report=True, quiet=True)
    run_dir = run_scenario(_short(name, root, stream, drain_s, duration_s), opts)
    meta = json.loads((run_dir / "meta.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    return run_dir, meta, summary


def _check_common(run_dir: Path, meta: dict, summary: dict, kind: str,
                  modes: tuple[str, ...] = ("rest", "stream")) -> None:
    html = (run_dir / "report.html").read_text()
    timing = meta["scenario"]["timing"]
    assert timing["warmup_s"] == 2.0 and timing["duration_s"] <= 16.0     # the shortened one
    for mode in modes:
        m = summary["modes"][mode]
        assert m["sent"] == m["ok"] + m["failed"], mode
        assert m["sent"] > 0
        stop_s = meta["modes"][mode]["driver"]["stop_s"]
        assert stop_s < timing["warmup_s"] + timing["duration_s"] + 1 + timing["drain_s"], \
            "it ran another schedule"
        faults = meta["modes"][mode]["faults"]
        assert len(faults) == 1, (mode, faults)
        f = faults[0]
        assert f["kind"] == kind and not f.get("error"), (mode, f)
        assert {"t_s", "kind", "target", "pid", "duration_s", "ended_t_s"} <= set(f)
        assert 4.9 <= f["t_s"] <= 6.5 and f["ended_t_s"] is not None, (mode, f)
        sf = summary["modes"][mode]["faults"][0]
        assert sf["kind"] == kind and "recovery_s" in sf
        assert {"lost", "retried", "duplicated", "requests"} <= set(sf)
        assert sf["requests"] == sf["ok"] + sf["lost"]
        rec = f"{sf['recovery_s']:,.0f}" if sf["recovery_s"] is not None else "never"
        assert f"<td>{rec}</td>" in html, (mode, rec)           # the recovery table's cell
        label = _chart_labels(summary, mode, kind)
        assert label.startswith(f"{'REST' if mode == 'rest' else 'stream'} {kind}"), label
    # the report: fault markers in the charts (labels are drawn, so check the table + legend
    # text) and the recovery table with the time to recover
    assert "Recovery after faults" in html and kind in html and "recovery (s)" in html
    assert "no fault was injected" not in html
    for chart in ("throughput", "latency", "errors", "in_flight"):
        assert (run_dir / "charts" / f"{chart}.png").exists()


def _chart_labels(summary, mode, kind):
    from analysis.charts import fault_label
    f = summary["modes"][mode]["faults"][0]
    rec = mx.Recovery(f["t_s"], f["kind"], f["target"], f["baseline_per_s"], f["recovered_at_s"],
                      f["recovery_s"])
    return fault_label(mode, mx.Fault(f["t_s"], kind), rec)


def _table(run_dir: Path, mode: str):
    from loadgen import record
    return record.read(run_dir / mode / "requests.parquet")


def _check_all_answered(run_dir: Path, summary: dict, mode: str) -> None:
    """Every request sent got exactly one success: nothing lost, no duplicate counted as a second
    success, and the fault's own figures say 0 lost."""
    m = summary["modes"][mode]
    assert m["failed"] == 0 and m["ok"] == m["sent"], (mode, m["error_kinds"])
    df = _table(run_dir, mode)
    oks = df[df["outcome"] == "ok"]
    assert oks["request_id"].is_unique, mode
    assert set(oks["request_id"]) == set(df["request_id"]), mode
    assert all(f["lost"] == 0 for f in m["faults"]), (mode, m["faults"])


def _check_silent_between(run_dir: Path, mode: str, start_s: float, end_s: float) -> None:
    """Nothing was answered in [start_s, end_s]: the service really was down or frozen (the
    times are on the driver's axis, like the injector's)."""
    assert end_s > start_s, (start_s, end_s)
    df = _table(run_dir, mode)
    inside = df[(df["outcome"] == "ok") & (df["done_s"] > start_s) & (df["done_s"] < end_s)]
    assert inside.empty, (mode, start_s, end_s, inside[["request_id", "done_s"]].head())
    due = df[(df["request_intended_s"] > start_s) & (df["request_intended_s"] < end_s)]
    assert len(due) > 0, "no request was due while the service was down: the check is void"


def _check_redelivered(run_dir: Path, meta: dict, summary: dict) -> None:
    """At-least-once after a SIGKILL: no offset was committed since the worker started (the
    test sets a commit interval longer than the run), so every answer produced before the kill
    is produced again by the restarted worker, and the driver counts it as a duplicate, never as
    a second success."""
    df = _table(run_dir, "stream")
    f = meta["modes"]["stream"]["faults"][0]
    before = df[(df["outcome"] == "ok") & (df["done_s"] < f["t_s"])]
    assert len(before) > 50, len(before)            # ~3 s at 50 req/s were answered before
    not_again = before[before["duplicates"] < 1]
    assert not_again.empty, ("answered before the kill, not re-delivered",
                             not_again[["request_id", "done_s"]].head())
    dup_ids = set(df.loc[df["duplicates"] > 0, "request_id"])
    oks = df[df["request_id"].isin(dup_ids) & (df["outcome"] == "ok")]
    assert len(oks) == len(dup_ids) and oks["request_id"].is_unique
    counted = meta["modes"]["stream"]["driver"]["counts"]["duplicates"]
    assert counted == int(df["duplicates"].sum()) >= len(before)
    # the report (inside the measurement window) shows them too
    s = summary["modes"]["stream"]
    assert s["duplicates"] > 0 and s["faults"][0]["duplicated"] > 0


#: Faust commits offsets every 2.8 s: a kill right after a commit re-delivers nothing. With a
#: commit interval longer than the run, every answer before the kill is uncommitted.
NO_COMMIT = {"broker_commit_interval_s": 600.0}


@pytest.mark.stack
def test_stack_fault_kill(results_root):
    run_dir, meta, summary = _run("fault-kill", results_root, stream=NO_COMMIT)
    _check_common(run_dir, meta, summary, "kill_worker")
    rest_f, stream_f = meta["modes"]["rest"]["faults"][0], meta["modes"]["stream"]["faults"][0]
    assert meta["modes"]["stream"]["settings"]["broker_commit_interval_s"] == 600.0
    assert rest_f["target"] == "uwsgi-worker" and rest_f["new_pid"] != rest_f["pid"]
    assert stream_f["new_pid"] != stream_f["pid"] and stream_f["restarted_by"] == "bench"
    # REST: a request on the killed worker gets a 502 and is retried on the other one
    _check_all_answered(run_dir, summary, "rest")
    # stream: the restarted worker answers everything, and re-delivers what was not committed
    _check_all_answered(run_dir, summary, "stream")
    _check_redelivered(run_dir, meta, summary)
    assert not _alive(stream_f["new_pid"]) and not _alive(rest_f["new_pid"])


@pytest.mark.stack
def test_stack_fault_pause(results_root):
    run_dir, meta, summary = _run("fault-pause", results_root)
    _check_common(run_dir, meta, summary, "pause")
    for mode in ("rest", "stream"):
        f = meta["modes"][mode]["faults"][0]
        assert f["ended_t_s"] - f["t_s"] == pytest.approx(f["duration_s"], abs=0.5)
        # frozen, not failed: nothing answered in the middle of the pause (the first second
        # leaves answers already on their way), everything answered after it
        _check_silent_between(run_dir, mode, f["t_s"] + 1.0, f["ended_t_s"] - 0.5)
        _check_all_answered(run_dir, summary, mode)


@pytest.mark.stack
def test_stack_fault_restart(results_root):
    run_dir, meta, summary = _run("fault-restart", results_root)
    _check_common(run_dir, meta, summary, "restart")
    for mode in ("rest", "stream"):
        f = meta["modes"][mode]["faults"][0]
        assert f["new_pid"] != f["pid"] and not _alive(f["new_pid"])
        assert f["t_s"] <= f["down_t_s"] < f["restarted_t_s"] <= f["ended_t_s"]
        _check_silent_between(run_dir, mode, f["down_t_s"] + 0.5, f["restarted_t_s"])
    # stream: the requests wait in the broker while no worker runs; all answered after
    _check_all_answered(run_dir, summary, "stream")
    # REST: nginx answers 502 while uWSGI is down (2 s, longer than the retry's 0.25 s backoff):
    # some requests fail twice and are lost, and every failure falls inside the outage
    rest = summary["modes"]["rest"]
    rf = meta["modes"]["rest"]["faults"][0]
    assert rest["failed"] > 0 and rest["faults"][0]["lost"] > 0, rest["error_kinds"]
    df = _table(run_dir, "rest")
    errors = df[df["outcome"] == "error"]
    outside = errors[(errors["done_s"] < rf["t_s"]) | (errors["done_s"] > rf["ended_t_s"] + 1.0)]
    assert outside.empty, outside[["request_id", "attempt", "error_kind", "done_s"]].head()


def _check_no_acknowledged_loss(run_dir: Path, summary: dict) -> None:
    """A request without a delivery error was acknowledged by the broker (acks=all): it must be
    answered. Only a produce the driver saw fail may fail, and the fault's figures say 0 lost."""
    df = _table(run_dir, "stream")
    unanswered = df[df["error_kind"].isin(["no_prediction", "in_flight"])]
    assert unanswered.empty, unanswered[["request_id", "sent_s", "done_s"]].head()
    oks = df[df["outcome"] == "ok"]
    assert oks["request_id"].is_unique
    _check_all_answered(run_dir, summary, "stream")


@pytest.mark.stack
def test_stack_fault_broker_kill(results_root):
    # the broker's restart took up to 25 s here: drain long enough to see its backlog answered
    run_dir, meta, summary = _run("fault-broker-kill", results_root, drain_s=45.0,
                                  duration_s=16.0)
    assert list(meta["modes"]) == ["stream"]
    _check_common(run_dir, meta, summary, "kill_broker", modes=("stream",))
    m = meta["modes"]["stream"]
    f = m["faults"][0]
    assert f["target"] == "kafka" and f["signal"] == "SIGKILL" and f["restarted_by"] == "bench"
    assert f["new_pid"] != f["pid"] and not _alive(f["pid"]) and not _alive(f["new_pid"])
    assert f["t_s"] <= f["restarted_t_s"] <= f["broker_ready_t_s"] <= f["ended_t_s"]
    assert m["driver"]["settings"]["producer_idempotent"] is True
    assert m["driver"]["settings"]["producer"]["acks"] == "all"
    assert m["driver"]["counts"]["broker_down_at_s"], "the driver never saw the broker go"
    # the broker was really gone: nothing answered until it was back
    _check_silent_between(run_dir, "stream", f["t_s"] + 1.0, f["broker_ready_t_s"])
    _check_no_acknowledged_loss(run_dir, summary)


@pytest.mark.stack
def test_stack_fault_broker_pause(results_root):
    run_dir, meta, summary = _run("fault-broker-pause", results_root)
    _check_common(run_dir, meta, summary, "pause_broker", modes=("stream",))
    f = meta["modes"]["stream"]["faults"][0]
    assert f["target"] == "kafka" and f["signal"] == "SIGSTOP"
    assert f["ended_t_s"] - f["t_s"] == pytest.approx(f["duration_s"], abs=0.5)
    _check_silent_between(run_dir, "stream", f["t_s"] + 1.0, f["ended_t_s"] - 0.5)
    _check_no_acknowledged_loss(run_dir, summary)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (not reaped yet) is not alive either
        return _state(pid) != "Z"
    except OSError:
        return False



@pytest.mark.stack
def test_stack_a_broker_that_dies_unplanned_stops_the_run_with_one_line(tmp_path):
    """Not a planned fault: the broker is SIGKILLed from outside mid-drive. The bench stops the
    driver at once, fails the phase with one line naming the cause and the broker's log, keeps
    the request table and the driver's record, marks the run incomplete, leaves no process."""
    import psutil

    from bench.run import PhaseFailed, Placement, RunOptions, run_scenario
    from loadgen import record

    sc = load_scenario("smoke")
    sc = replace(sc.for_test(warmup_s=2.0, duration_s=60.0, drain_s=5.0), name="broker-dies",
                 modes=("stream",))
    path = tmp_path / "broker-dies.yaml"
    path.write_text(yaml.safe_dump(sc.to_dict(), sort_keys=False))
    root = tmp_path / "results"
    root.mkdir()
    killed: list[int] = []
    seen: list[int] = []

    def kill_the_broker_once_driving():
        deadline = time.time() + 180
        while time.time() < deadline and not killed:
            logs = list(root.rglob("driver-stream.log"))
            if logs and fx.driver_t0(logs[0]) is not None:
                time.sleep(3)                                  # a few seconds recorded
                kids = psutil.Process().children(recursive=True)
                seen.extend(p.pid for p in kids)
                java = [p for p in kids if p.name() == "java"]
                os.killpg(java[0].pid, signal.SIGKILL)
                killed.append(java[0].pid)
                return
            time.sleep(0.2)

    t = threading.Thread(target=kill_the_broker_once_driving, daemon=True)
    t.start()
    opts = RunOptions(placement=Placement.default(), results=root, measure_ceiling=False,
                      report=True, quiet=True)
    with pytest.raises(PhaseFailed) as err:
        run_scenario(load_scenario(path), opts)
    t.join(5)
    assert killed, "the broker was never killed"
    line = str(err.value)
    assert "\n" not in line and f"(pid {killed[0]}) died during the drive" in line
    assert "killed by signal SIGKILL" in line and "kafka.log" in line
    run_dir = next(d for d in root.iterdir() if d.is_dir() and d.name.endswith("-broker-dies"))
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["complete"] is False and meta["failed_phase"] == "stream: broker"
    assert "died during the drive" in meta["error"]
    m = meta["modes"]["stream"]
    assert m["complete"] is False and m["driver"]["interrupted"] is True
    assert m["driver"]["stop_s"] < 40, "the driver ran on after the broker died"
    c = m["driver"]["counts"]
    assert c["requests"] == c["ok"] + c["failed"] and c["ok"] > 0
    df = record.read(run_dir / "stream" / "requests.parquet")
    assert len(df) == c["attempts"]
    assert (run_dir / "summary.json").is_file()                # the report ran on what was kept
    assert not [p for p in seen if _alive(p)], "a process outlived the run"


def test_a_mode_the_scenario_did_not_ask_for_is_not_missing():
    """A stream-only broker fault run is complete without a REST folder."""
    from analysis.rundir import MODES, _scenario_modes

    assert _scenario_modes({"scenario": {"modes": ["stream"]}}) == ("stream",)
    assert _scenario_modes({"scenario": "old-run-name"}) == MODES
    assert _scenario_modes({}) == MODES
