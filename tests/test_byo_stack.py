"""Bring your own model and payload, on the real stack: the example language identifier, with a
fault planted on some inputs (tests/fixtures/langid_faulty.py), behind nginx -> uWSGI and a Faust
worker on the embedded broker, driven by the real drivers from a payload file. Every request is
accounted for once: the planted ones fail (REST: a 500 naming the model; stream: dead-lettered
with the problem and the model), the others are answered with the model's own JSON answers, and
each service log names the model in one line."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest
import yaml

from examples.langid.fit import CORPUS

sys.path.insert(0, str(Path(__file__).parent))
from fixtures.langid_faulty import MARK  # noqa: E402
from fixtures.stack import REPO  # noqa: E402

pytestmark = pytest.mark.stack

MODEL = "fixtures.langid_faulty:build"
NAME = "'langid-with-faults'"


def payload_file(tmp_path: Path) -> Path:
    rows = [json.loads(x) for x in CORPUS.read_text("utf-8").splitlines() if x.strip()]
    rows = rows[::4] + [{"text": f"{MARK} number {i}", "lang": "??"} for i in range(3)]
    p = tmp_path / "payload.jsonl"
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return p


def scenario(tmp_path: Path, payload: Path) -> Path:
    doc = {"name": "byo", "description": "bring your own model and payload",
           "payload": {"source": "file", "path": str(payload), "column": "text", "sample": 1000,
                       "seed": 5},
           "workload": {"batch_size": 1},
           "arrival": {"open": {"process": "constant",
                                "rate": {"shape": "constant", "ops_per_s": 30}}},
           "timing": {"warmup_s": 0.2, "duration_s": 1.5, "drain_s": 1.7},
           "client": {"timeout_s": 1.5, "retry": {"policy": "none"}}}
    p = tmp_path / "byo.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def drive(mode: str, scen: Path, out: Path, target: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "loadgen", "drive", mode, "--scenario",
                             str(scen), "--out", str(out), "--run-id", f"byo-{mode}", "--quiet",
                             *target], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_the_example_model_and_a_payload_file_through_both_deployments(tmp_path, monkeypatch):
    from loadgen import record
    from loadgen.payloads import Payloads, load_texts
    from loadgen.scenario import load_scenario
    from services import procs
    from services.broker import start_broker
    from services.rest import launch as rest_launch
    from services.rest.settings import RestSettings
    from services.stream import launch as stream_launch
    from services.stream.client import StreamClient
    from services.stream.settings import StreamSettings, broker_defaults

    t0 = time.monotonic()
    monkeypatch.setenv("RVS_MODEL", MODEL)
    monkeypatch.setenv("PYTHONPATH", f"{REPO / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.delenv("RVS_PAYLOAD", raising=False)
    monkeypatch.delenv("RVS_COST_US", raising=False)
    payload = payload_file(tmp_path)
    scen = scenario(tmp_path, payload)
    cpus = sorted(os.sched_getaffinity(0))
    svc, other = ([cpus[0]], [cpus[-1]]) if len(cpus) > 1 else (None, None)
    with procs.Supervisor(tmp_path / "logs") as sup:
        with ThreadPoolExecutor(1) as pool:   # REST comes up while the broker does
            rest_up = pool.submit(rest_launch.start, sup, RestSettings(processes=1),
                                  tmp_path / "rest", cpus=svc)
            broker = start_broker(sup, tmp_path / "broker", cpus=other)
            rest = rest_up.result()
        s = StreamSettings(shape="batch", workers=1, **broker_defaults(broker.name))
        stream_launch.start(sup, s, tmp_path / "stream", bootstrap=broker.bootstrap, cpus=svc,
                            timeout_s=60)
        started = time.monotonic() - t0
        runs = {"rest": drive("rest", scen, tmp_path / "rest-run", ["--url", rest.url]),
                "stream": drive("stream", scen, tmp_path / "stream-run",
                                ["--bootstrap", broker.bootstrap])}
        for mode, p in runs.items():
            _out, err = p.communicate(timeout=60)
            assert p.returncode == 0, (mode, err[-3000:])
        # a good answer is the example's own JSON object, on both sides
        req = urllib.request.Request(f"{rest.url}/predict", method="POST",
                                     data=orjson.dumps({"id": "fr-1", "text": "Il fait beau."}),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert orjson.loads(r.read())["predictions"][0]["answer"]["lang"] == "fr"
        with StreamClient(broker.bootstrap) as client:
            client.roundtrip("fr-2", "Het regent vandaag in de stad.")
            assert client.predictions["fr-2"]["answer"]["lang"] == "nl"
            client.poll(0.5)
            dlq = {d["id"]: d for d in client.dlq if d.get("id")}
        logs = {p.name: Path(p.log_path).read_text(errors="replace") for p in sup.procs}

    # what each mode sent: the file's rows, sampled with the scenario's seed, cycled
    texts = load_texts(load_scenario(scen).payload)
    failed_ids = {}
    for mode in ("rest", "stream"):
        out = tmp_path / f"{mode}-run"
        driver = json.loads((out / "driver.json").read_text())
        src = driver["payload"]["source"]
        assert src["sha256"] == hashlib.sha256(payload.read_bytes()).hexdigest()
        assert src["rows"] == len(texts) and driver["payload"]["inputs"] == "text"
        df = record.read(out / "requests.parquet")
        p = Payloads(texts, 1, f"byo-{mode}")
        planted = {p.op_id(n) for n in range(len(df)) if MARK in texts[n % len(texts)]}
        by_id = df.groupby("request_id")
        assert by_id.size().max() == 1 and len(df) >= len(texts)  # one row each: no retries
        failed = set(df.loc[df["outcome"] != "ok", "request_id"])
        assert planted and failed == planted, mode               # exactly the planted ones
        failed_ids[mode] = failed
        kinds = set(df.loc[df["outcome"] != "ok", "error_kind"])
        assert kinds == ({"http_5xx"} if mode == "rest" else {"no_prediction"}), kinds
        assert int(df["duplicates"].sum()) == 0
    # the stream dead-lettered exactly the planted events, naming the model and the problem
    got = {i for i in dlq if i.startswith("byo-stream-")}
    assert got == failed_ids["stream"]
    assert all(dlq[i]["reason"] == "model_error" and dlq[i]["problem"] == "raised"
               and dlq[i]["model"].startswith(NAME) for i in got)
    # one clear line in each service's log
    rest_log = next(v for k, v in logs.items() if "uwsgi" in k)
    line = next(x for x in rest_log.splitlines() if "model call failed" in x)
    assert NAME in line and "raised ValueError: planted fault" in line
    stream_log = next(v for k, v in logs.items() if k.startswith("stream-worker"))
    line = next(x for x in stream_log.splitlines() if "dead-lettered as model_error" in x)
    assert NAME in line and "planted fault" in line
    print(f"stack ready in {started:.1f} s, test {time.monotonic() - t0:.1f} s")
