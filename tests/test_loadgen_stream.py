"""Stream driver against a real Tansu broker with an echo "service" thread (loadgen.noop.StreamEcho):
one row per event, every event accounted for, duplicates counted once, late and missing answers,
closed-loop batches, a broker that dies, SIGTERM.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from loadgen import record
from loadgen.noop import StreamEcho
from services import procs

sys.path.insert(0, str(Path(__file__).parent))
from fixtures.stack import REPO, write_scenario  # noqa: E402

pytestmark = pytest.mark.stack


def scenario(tmp_path: Path, name: str, **kw) -> Path:
    return write_scenario(tmp_path, name, **{"ops_per_s": 200, "text_bytes": 300, **kw})


def argv(scen, bootstrap, out, run_id, topics, *extra):
    return [sys.executable, "-m", "loadgen", "drive", "stream", "--scenario", str(scen),
            "--bootstrap", bootstrap, "--out", str(out), "--run-id", run_id,
            "--topics", ",".join(topics), *extra]


def drive(scen, bootstrap, out, run_id, topics, *extra, timeout=60):
    r = subprocess.run(argv(scen, bootstrap, out, run_id, topics, *extra), cwd=REPO,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    return (json.loads((out / "driver.json").read_text()), record.read(out / "requests.parquet"),
            lines)


def per_request(df):
    ok = df.groupby("request_id")["outcome"].apply(lambda s: (s == "ok").any())
    return int(len(ok)), int(ok.sum()), int((~ok).sum())


@pytest.fixture(scope="module")
def sup(tmp_path_factory):
    with procs.Supervisor(tmp_path_factory.mktemp("logs")) as s:
        yield s


@pytest.fixture(scope="module")
def broker(sup, tmp_path_factory):
    from services.broker import start_broker
    return start_broker(sup, tmp_path_factory.mktemp("broker"))


def topics(bootstrap: str, partitions: int = 2) -> tuple[str, str]:
    from services.broker import create_topics
    tag = uuid.uuid4().hex[:8]
    t = (f"req-{tag}", f"pred-{tag}")
    create_topics(bootstrap, {t[0]: partitions, t[1]: partitions})
    return t


def echo(bootstrap, t, **kw) -> StreamEcho:
    e = StreamEcho(bootstrap, t[0], t[1], **kw)
    e.start()
    assert e.ready.wait(15)
    return e


def test_open_loop_every_event_answered(tmp_path, broker):
    t = topics(broker.bootstrap)
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": broker.bootstrap})
    p.produce(t[1], b'{"id":"__probe__","label":1,"score":0.5}', b"__probe__")  # not ours
    p.flush(5)
    e = echo(broker.bootstrap, t)
    try:
        d, df, lines = drive(scenario(tmp_path, "acc"), broker.bootstrap, tmp_path / "out",
                             "acc", t)
    finally:
        e.stop()
    n, ok, failed = per_request(df)
    planned = d["settings"]["plan"]["planned"]
    assert n == planned == d["counts"]["requests"] and ok == n and failed == 0
    assert d["valid"], d["invalid_reasons"]
    assert d["counts"]["foreign_answers"] >= 1 and d["counts"]["duplicates"] == 0
    assert (df["batch_size"] == 1).all() and df["http_status"].isna().all()
    assert list(df.columns) == record.COLUMNS and (df["mode"] == "stream").all()
    prog = [x for x in lines if "phase" in x]
    assert lines[0]["event"] == "start" and lines[-1]["event"] == "final"
    assert prog[-1]["phase"] == "done" and prog[-1]["sent"] == n
    assert {"linger.ms", "acks", "batch.num.messages"} <= set(d["settings"]["producer"])
    assert d["settings"]["consumer"]["fetch.wait.max.ms"] <= 10
    lat = (df["done_s"] - df["request_intended_s"]).to_numpy()
    assert (lat > 0).all() and np.median(lat) < 0.5


def test_duplicates_counted_never_a_second_success(tmp_path, broker):
    t = topics(broker.bootstrap)
    e = echo(broker.bootstrap, t, duplicate_every=4)
    try:
        d, df, _ = drive(scenario(tmp_path, "dup"), broker.bootstrap, tmp_path / "out", "dup", t)
    finally:
        e.stop()
    n, ok, _ = per_request(df)
    assert ok == n == len(df)                      # one row, one success per event
    assert d["counts"]["duplicates"] == int(df["duplicates"].sum()) == n // 4
    assert set(df["duplicates"].unique()) <= {0, 1}


def test_late_and_missing_answers(tmp_path, broker):
    t = topics(broker.bootstrap)
    e = echo(broker.bootstrap, t, drop_every=5, delay_s=0.5)
    scen = scenario(tmp_path, "late", client={"timeout_s": 0.25, "retry": {"policy": "none"}},
                    timing={"warmup_s": 0, "duration_s": 1.5, "drain_s": 1.5})
    try:
        d, df, _ = drive(scen, broker.bootstrap, tmp_path / "out", "late", t)
    finally:
        e.stop()
    n, ok, failed = per_request(df)
    assert ok == 0 and failed == n == d["settings"]["plan"]["planned"]
    late = df[df["error_kind"] == "timeout"]
    missing = df[df["error_kind"] == "no_prediction"]
    assert len(late) + len(missing) == n
    assert len(missing) == pytest.approx(n / 5, abs=2)
    # a late answer is recorded when it arrived; a missing one at its deadline
    assert ((late["done_s"] - late["request_intended_s"]) >= 0.45).all()
    assert np.allclose(missing["done_s"] - missing["request_intended_s"], 0.25)
    assert d["counts"]["late_answers"] == len(late)


def test_closed_loop_clients_wait_for_their_batch(tmp_path, broker):
    t = topics(broker.bootstrap)
    e = echo(broker.bootstrap, t)
    scen = scenario(tmp_path, "cl", batch_size=20,
                    arrival={"closed": {"clients": [[0, 1], [1, 3]], "think_s": 0.0}},
                    timing={"warmup_s": 0, "duration_s": 2.5, "drain_s": 2})
    try:
        d, df, _ = drive(scen, broker.bootstrap, tmp_path / "out", "cl", t)
    finally:
        e.stop()
    n, ok, _ = per_request(df)
    ops = d["counts"]["operations"]
    assert ok == n == 20 * ops and ops >= 6
    df["op"] = df["request_id"].str.rsplit(".", n=1).str[0]
    g = df.groupby("op")
    assert (g.size() == 20).all() and (g["request_intended_s"].nunique() == 1).all()
    # a client starts its next batch only after the previous one is fully answered:
    # with 1 client before t=1 s, batches never overlap there
    early = g.agg(start=("request_intended_s", "first"), end=("done_s", "max"))
    early = early[early["start"] < 0.9].sort_values("start")
    assert len(early) >= 2
    assert (early["start"].to_numpy()[1:] >= early["end"].to_numpy()[:-1] - 1e-6).all()


def test_broker_killed_mid_run_loses_no_rows(tmp_path, sup):
    from services.broker import start_broker
    b = start_broker(sup, tmp_path, name="broker-doomed")
    t = topics(b.bootstrap)
    e = echo(b.bootstrap, t)
    scen = scenario(tmp_path, "kill", timing={"warmup_s": 0, "duration_s": 3, "drain_s": 2},
                    client={"timeout_s": 1.0, "retry": {"policy": "fixed", "max_attempts": 2,
                                                        "backoff_s": 0.1}})
    out = tmp_path / "out"
    p = subprocess.Popen(argv(scen, b.bootstrap, out, "kill", t), cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)
    for proc in list(sup.procs):
        if proc.pid == b.pid:
            sup.stop(proc, sig=signal.SIGKILL)   # a crash, not a clean shutdown
    _, err = p.communicate(timeout=60)
    e.stop()
    assert p.returncode == 0, err[-2000:]
    d = json.loads((out / "driver.json").read_text())
    df = record.read(out / "requests.parquet")
    n, ok, failed = per_request(df)
    assert n == d["settings"]["plan"]["planned"] and ok + failed == n
    assert ok > 20 and failed > 20
    kinds = set(df.loc[df["outcome"] == "error", "error_kind"])
    assert kinds <= {"produce_error", "no_prediction", "timeout"}, kinds


def test_sigterm_writes_the_table(tmp_path, broker):
    t = topics(broker.bootstrap)
    e = echo(broker.bootstrap, t, delay_s=3.0)       # answers come too late to arrive
    scen = scenario(tmp_path, "term", timing={"warmup_s": 0, "duration_s": 30, "drain_s": 5},
                    client={"timeout_s": 10, "retry": {"policy": "none"}})
    out = tmp_path / "out"
    p = subprocess.Popen(argv(scen, broker.bootstrap, out, "term", t), cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.5)
    p.send_signal(signal.SIGTERM)
    stdout, err = p.communicate(timeout=30)
    e.stop()
    assert p.returncode == 0, err[-2000:]
    d = json.loads((out / "driver.json").read_text())
    df = record.read(out / "requests.parquet")
    assert d["interrupted"] and not d["valid"] and d["stop_s"] < 10
    assert (df["error_kind"] == "in_flight").sum() > 50
    n, ok, failed = per_request(df)
    assert ok + failed == n == d["counts"]["requests"]
    assert json.loads(stdout.splitlines()[-1])["event"] == "final"
