"""REST driver against real tiny targets: every request accounted for, whatever the target does.

Targets: a real nginx with canned locations (200 JSON, 503, 400, junk) and a single-threaded
Python echo server (concurrency 1, fixed service time, valid answers) from loadgen.noop. The
driver always runs as the CLI child process the bench uses (Locust monkey-patches its process).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from loadgen import record
from loadgen.noop import start_echo_http, start_noop_nginx
from services import procs

sys.path.insert(0, str(Path(__file__).parent))
from fixtures.stack import REPO, write_scenario  # noqa: E402

pytestmark = pytest.mark.stack


def scenario(tmp_path: Path, name: str, **kw) -> Path:
    return write_scenario(tmp_path, name, **{"ops_per_s": 100, "text_bytes": 200, **kw})


def argv(scen: Path, url: str, out: Path, run_id: str, *extra: str, shards: int = 1) -> list[str]:
    """The driver's command line; one process unless ``shards`` says otherwise (its default,
    one shard per core, would make these tests depend on the machine)."""
    return [sys.executable, "-m", "loadgen", "drive", "rest", "--scenario", str(scen),
            "--url", url, "--out", str(out), "--run-id", run_id, "--shards", str(shards), *extra]


def drive(scen: Path, url: str, out: Path, run_id: str, *extra: str, timeout: float = 60,
          shards: int = 1):
    r = subprocess.run(argv(scen, url, out, run_id, *extra, shards=shards), cwd=REPO,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    d = json.loads((out / "driver.json").read_text())
    df = record.read(out / "requests.parquet")
    return d, df, lines


def per_request(df):
    g = df.groupby("request_id")
    ok = g["outcome"].apply(lambda s: (s == "ok").any())
    return int(len(ok)), int(ok.sum()), int((~ok).sum())


@pytest.fixture(scope="module")
def sup(tmp_path_factory):
    with procs.Supervisor(tmp_path_factory.mktemp("logs")) as s:
        yield s


@pytest.fixture(scope="module")
def nginx(sup, tmp_path_factory):
    return start_noop_nginx(sup, tmp_path_factory.mktemp("nginx"))


def test_open_loop_accounting_and_outputs(tmp_path, nginx):
    scen = scenario(tmp_path, "acc")
    d, df, lines = drive(scen, nginx.url, tmp_path / "out", "acc", "--no-validate")
    n, ok, failed = per_request(df)
    planned = d["settings"]["plan"]["planned"]
    assert n == planned == d["counts"]["requests"] and ok + failed == n
    assert ok == n and d["valid"], d["invalid_reasons"]
    assert list(df.columns) == record.COLUMNS and (df["mode"] == "rest").all()
    assert (df["http_status"] == 200).all()
    assert d["crosscheck"]["match"] and d["crosscheck"]["wire"]["exchanges"] == n
    assert d["crosscheck"]["wire"]["answered"] == {"2xx": n}
    assert d["settings"]["shards"] == 1 and d["connections"]["created"] >= 1
    # progress lines: one per second + start + final
    prog = [x for x in lines if "phase" in x]
    assert lines[0]["event"] == "start" and lines[-1]["event"] == "final"
    assert {"t", "phase", "sent", "ok", "failed", "in_flight"} <= set(prog[0])
    assert prog[-1]["phase"] == "done" and prog[-1]["sent"] == n and prog[-1]["in_flight"] == 0
    assert len(prog) >= 3
    for k in ("p50", "p99", "max"):
        assert d["lateness_s"][k] is not None
    assert d["cpu"]["percent_mean"] is not None and "t0_epoch" in d
    # ids are the run's, intended times are the plan's, latency view columns are consistent
    assert df["request_id"].str.startswith("acc-").all()
    assert (df["sent_s"] >= df["intended_s"] - 1e-9).all()
    assert (df["done_s"] >= df["sent_s"]).all()


def test_bad_body_and_4xx_are_not_retried(tmp_path, nginx):
    retry = {"timeout_s": 1, "retry": {"policy": "exponential", "max_attempts": 3,
                                       "backoff_s": 0.01}}
    timing = {"warmup_s": 0, "duration_s": 1, "drain_s": 1}
    scen = scenario(tmp_path, "junk", client=retry, timing=timing)
    d, df, _ = drive(scen, nginx.url, tmp_path / "junk", "junk", "--path", "/junk")
    assert (df["error_kind"] == "bad_response").all() and (df["attempt"] == 1).all()
    assert d["counts"]["failed_by_kind"] == {"bad_response": d["counts"]["requests"]}
    d, df, _ = drive(scen, nginx.url, tmp_path / "400", "c400", "--path", "/status400")
    assert (df["error_kind"] == "http_4xx").all() and (df["http_status"] == 400).all()
    assert (df["attempt"] == 1).all()
    assert d["crosscheck"]["match"] and d["crosscheck"]["wire"]["answered"] == {"4xx": len(df)}


def test_503_is_retried_per_policy(tmp_path, nginx):
    client = {"timeout_s": 1, "retry": {"policy": "exponential", "max_attempts": 3,
                                        "backoff_s": 0.02, "cap_s": 0.05}}
    scen = scenario(tmp_path, "r503", client=client,
                    timing={"warmup_s": 0, "duration_s": 1, "drain_s": 2})
    d, df, _ = drive(scen, nginx.url, tmp_path / "out", "r503", "--path", "/status503")
    n, ok, failed = per_request(df)
    assert ok == 0 and failed == n
    assert len(df) == 3 * n > n                      # attempts > requests
    assert d["counts"]["attempts"] == 3 * n and d["counts"]["retried_requests"] == n
    assert (df["error_kind"] == "http_5xx").all()
    for _, g in df.groupby("request_id"):
        g = g.sort_values("attempt")
        assert list(g["attempt"]) == [1, 2, 3]
        assert g["request_intended_s"].nunique() == 1       # latency truth kept on every try
        assert (g["intended_s"].to_numpy()[1:] >= g["done_s"].to_numpy()[:-1] + 0.0099).all()
    assert d["crosscheck"]["match"] and d["crosscheck"]["wire"]["exchanges"] == 3 * n


def test_retries_recover_after_503_burst(tmp_path, sup):
    echo = start_echo_http(sup, service_ms=0, fail_first=6)
    client = {"timeout_s": 2, "retry": {"policy": "fixed", "max_attempts": 5, "backoff_s": 0.05}}
    scen = scenario(tmp_path, "rec", client=client,
                    arrival={"open": {"process": "constant",
                                      "rate": {"shape": "constant", "ops_per_s": 20}}},
                    timing={"warmup_s": 0, "duration_s": 1, "drain_s": 2})
    d, df, _ = drive(scen, echo.url, tmp_path / "out", "rec")
    n, ok, failed = per_request(df)
    assert ok == n == 20 and len(df) == n + 6          # the six 503s were retried
    assert (df.loc[df["outcome"] == "error", "http_status"] == 503).all()
    sup.stop(echo.proc)


def test_open_loop_latency_counts_from_intended_send(tmp_path, sup):
    """A target with a fixed 20 ms service time and concurrency 1, driven at 100/s with at most
    one request in flight: sends are late and later (the generator waits for its one slot),
    so latency from the *intended* time grows with time while the actual-send view does not."""
    echo = start_echo_http(sup, service_ms=20)
    scen = scenario(tmp_path, "co", arrival={"open": {
        "process": "constant", "rate": {"shape": "constant", "ops_per_s": 100},
        "max_in_flight": 1, "max_lateness_s": 60}},
        timing={"warmup_s": 0, "duration_s": 2, "drain_s": 8},
        client={"timeout_s": 10, "retry": {"policy": "none"}})
    d, df, _ = drive(scen, echo.url, tmp_path / "out", "co")
    sup.stop(echo.proc)
    assert (df["outcome"] == "ok").all() and len(df) == 200
    df = df.sort_values("request_intended_s")
    from_intended = (df["done_s"] - df["request_intended_s"]).to_numpy()
    from_sent = (df["done_s"] - df["sent_s"]).to_numpy()
    t = df["request_intended_s"].to_numpy()
    slope_intended = np.polyfit(t, from_intended, 1)[0]
    slope_sent = np.polyfit(t, from_sent, 1)[0]
    assert slope_intended > 0.3            # capacity ~45/s vs 100/s offered: ~0.55 s per s
    assert abs(slope_sent) < 0.02          # the service view stays flat
    assert np.median(from_sent) < 0.06
    assert from_intended[-20:].mean() > 0.5 > from_intended[:20].mean()
    assert not d["valid"] and any("lateness" in r for r in d["invalid_reasons"])
    assert d["cap_waits"] > 0


def test_target_killed_mid_run_loses_no_rows(tmp_path, sup):
    echo = start_echo_http(sup, service_ms=1)
    scen = scenario(tmp_path, "kill", timing={"warmup_s": 0, "duration_s": 3, "drain_s": 1.5},
                    client={"timeout_s": 0.5, "retry": {"policy": "none"}})
    out = tmp_path / "out"
    p = subprocess.Popen(argv(scen, echo.url, out, "kill"), cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert json.loads(p.stdout.readline())["event"] == "start"   # start-up varies with load
    time.sleep(1.5)  # ~1.5 s of load
    sup.stop(echo.proc)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err[-2000:]
    d = json.loads((out / "driver.json").read_text())
    df = record.read(out / "requests.parquet")
    n, ok, failed = per_request(df)
    assert n == d["settings"]["plan"]["planned"] and ok + failed == n
    assert ok > 20 and failed > 20
    kinds = set(df.loc[df["outcome"] == "error", "error_kind"])
    assert kinds <= {"refused", "timeout"}, kinds
    assert d["crosscheck"]["match"] and d["crosscheck"]["wire"]["no_answer"] == failed


def test_sigterm_marks_outstanding_rows_in_flight(tmp_path, sup):
    echo = start_echo_http(sup, service_ms=400)
    scen = scenario(tmp_path, "term", arrival={"closed": {"clients": 3, "think_s": 0}},
                    timing={"warmup_s": 0, "duration_s": 20, "drain_s": 5},
                    client={"timeout_s": 10, "retry": {"policy": "none"}})
    out = tmp_path / "out"
    p = subprocess.Popen(argv(scen, echo.url, out, "term"), cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert json.loads(p.stdout.readline())["event"] == "start"   # start-up varies with load
    time.sleep(2.0)
    p.send_signal(signal.SIGTERM)
    stdout, err = p.communicate(timeout=30)
    sup.stop(echo.proc)
    assert p.returncode == 0, err[-2000:]
    d = json.loads((out / "driver.json").read_text())
    df = record.read(out / "requests.parquet")
    assert d["interrupted"] and not d["complete"] and not d["valid"]
    infl = df[df["error_kind"] == "in_flight"]
    assert len(infl) >= 1 and np.allclose(infl["done_s"], d["stop_s"])
    n, ok, failed = per_request(df)
    assert ok + failed == n == d["counts"]["requests"] and ok >= 1
    assert json.loads(stdout.splitlines()[-1])["event"] == "final"


def test_closed_loop_client_steps(tmp_path, nginx):
    scen = scenario(tmp_path, "cl", batch_size=5,
                    arrival={"closed": {"clients": [[0, 1], [1.0, 4]], "think_s": 0.01}},
                    timing={"warmup_s": 0, "duration_s": 2, "drain_s": 1})
    d, df, _ = drive(scen, nginx.url, tmp_path / "out", "cl", "--no-validate")
    n, ok, _ = per_request(df)
    assert ok == n > 50 and (df["batch_size"] == 5).all()
    assert d["counts"]["reviews_ok"] == 5 * n
    # closed loop: at most one request in flight per client -> overlap <= clients
    ev = sorted([(s, 1) for s in df["sent_s"]] + [(e, -1) for e in df["done_s"]])
    depth = np.cumsum([x for _, x in ev])
    first = df[df["sent_s"] < 0.9]
    assert depth.max() <= 4
    assert len(first) > 0 and (first["request_intended_s"] < 1.0).all()
    assert (df["request_intended_s"] < 2.0).all()          # nothing new after the window


def test_locustfile_headless(tmp_path, nginx):
    scen = scenario(tmp_path, "lf", timing={"warmup_s": 0, "duration_s": 1.5, "drain_s": 1})
    env = {"RVS_SCENARIO": str(scen), "RVS_OUT": str(tmp_path / "lf"), "RVS_RUN_ID": "lf",
           "RVS_VALIDATE": "0", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([str(Path(sys.executable).parent / "locust"), "-f", "loadgen/locustfile.py",
                        "--headless", "-H", nginx.url, "-u", "1", "-r", "1", "-t", "20s",
                        "--only-summary"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads((tmp_path / "lf" / "driver.json").read_text())
    df = record.read(tmp_path / "lf" / "requests.parquet")
    assert d["counts"]["requests"] == d["settings"]["plan"]["planned"] == len(df)
    assert d["locust_local_stats"]["requests"] == len(df) and (df["outcome"] == "ok").all()


def test_sharded_driver_writes_one_table(tmp_path, nginx):
    """Two shard processes share one plan and one t0; the parent writes the one table and
    driver.json that a single process would have written, and no table of its own shards."""
    scen = scenario(tmp_path, "shd", ops_per_s=400,
                    timing={"warmup_s": 0.5, "duration_s": 1.5, "drain_s": 1})
    out = tmp_path / "out"
    d, df, lines = drive(scen, nginx.url, out, "shd", "--no-validate", shards=2)
    planned = d["settings"]["plan"]["planned"]
    assert planned > 500
    assert sorted(df["request_id"]) == sorted(f"shd-{i}" for i in range(planned))
    assert len(df) == planned and (df["outcome"] == "ok").all()
    assert d["counts"]["requests"] == d["counts"]["ok"] == planned
    assert d["valid"] and d["complete"], d["invalid_reasons"]
    assert d["settings"]["shards"] == 2 and d["settings"]["part"] == [0, 1]
    assert d["crosscheck"]["match"] and d["crosscheck"]["wire"]["exchanges"] == planned
    assert [s["requests"] for s in d["shards"]] == [(planned + 1) // 2, planned // 2]
    assert len(set(d["process"]["shard_pids"])) == 2
    assert d["lateness_s"]["n"] == planned and d["cpu"]["percent_mean"] is not None
    starts = [x for x in lines if x.get("event") == "start"]
    assert len(starts) == 1 and starts[0]["t0_epoch"] == d["t0_epoch"]
    prog = [x for x in lines if "phase" in x]
    assert len(prog) >= 2 and prog[-1]["phase"] == "done" and prog[-1]["sent"] == planned
    assert lines[-1]["event"] == "final" and lines[-1]["sent"] == planned
    assert not list(out.glob("shards/*/requests.parquet"))


def test_sigterm_stops_every_shard_and_keeps_their_rows(tmp_path, sup):
    echo = start_echo_http(sup, service_ms=200)           # one at a time: requests queue up
    scen = scenario(tmp_path, "shterm", ops_per_s=20,
                    timing={"warmup_s": 0, "duration_s": 30, "drain_s": 5},
                    client={"timeout_s": 20, "retry": {"policy": "none"}})
    out = tmp_path / "out"
    p = subprocess.Popen(argv(scen, echo.url, out, "shterm", shards=2), cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = json.loads(p.stdout.readline())                # the start line: shards are running
    assert first["event"] == "start" and first["shards"] == 2
    time.sleep(1.5)
    p.send_signal(signal.SIGTERM)
    rest, err = p.communicate(timeout=30)
    sup.stop(echo.proc)
    assert p.returncode == 0, err[-2000:]
    d = json.loads((out / "driver.json").read_text())
    df = record.read(out / "requests.parquet")
    assert d["interrupted"] and not d["valid"] and d["settings"]["shards"] == 2
    assert all(s["requests"] > 0 for s in d["shards"])
    assert not any(psutil.pid_exists(pid) for pid in d["process"]["shard_pids"])
    n, ok, failed = per_request(df)
    assert ok + failed == n == d["counts"]["requests"] and ok >= 1
    assert (df["error_kind"] == "in_flight").sum() >= 1     # queued at the echo when stopped
    assert d["crosscheck"]["match"]
    assert json.loads(rest.splitlines()[-1])["event"] == "final"


def test_make_capacity_prints_headroom_and_what_limits_the_driver(tmp_path):
    """One rate the driver cannot sustain (drivers only, no service): the verdict names the
    step's invalid reasons, the driver's CPU and what else ran on its cores."""
    r = subprocess.run([sys.executable, "-m", "loadgen", "capacity", "--modes", "rest",
                        "--no-service", "--seconds", "1", "--max-steps", "1",
                        "--rate-rest", "40000", "--no-profile", "--out", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    step = json.loads(lines[0])
    assert step["phase"] == "driver_step" and step["rate"] == 40000 and not step["sustained"]
    text = "\n".join(lines)
    assert "no rate sustained" in text and "service peak not measured" in text
    assert "what limits the driver" in text and "driver CPU" in text
    assert "on the driver's cores meanwhile" in text
    final = json.loads(lines[-1])["verdicts"][0]
    assert final["best"] is None and final["limits"] and len(final["steps"]) == 1
