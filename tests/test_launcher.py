"""The local launcher: both deployments through the one code path the bench uses.

Proves the twin-deployment promise (the same 200 IMDB test reviews give identical labels and
scores through nginx → uWSGI → Flask and through Kafka → Faust → Kafka), that each driver's
record counts answers from every worker launched (``workers_answered``), and that an exception in
the middle of a run leaves no broker, nginx, uWSGI or Faust process behind.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import psutil
import pytest

from services.broker import broker_kind

sys.path.insert(0, str(Path(__file__).parent))
from fixtures.stack import REPO, needs_model, write_scenario  # noqa: E402

pytestmark = [pytest.mark.stack, needs_model]


class Boom(RuntimeError):
    pass


def _tree(pids: list[int]) -> set[int]:
    """Every live process under the given roots (uWSGI workers, Faust's children, ...)."""
    out: set[int] = set()
    for pid in pids:
        try:
            root = psutil.Process(pid)
            out |= {root.pid, *(c.pid for c in root.children(recursive=True))}
        except psutil.NoSuchProcess:
            pass
    return out


def _gone(pids: set[int], timeout: float = 10.0) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = {p for p in pids if psutil.pid_exists(p)
                 and psutil.Process(p).status() != psutil.STATUS_ZOMBIE}
        if not alive:
            return set()
        time.sleep(0.1)
    return alive


def _drive_both(deps, tmp_path: Path) -> dict[str, dict]:
    """Both drivers at once, with the bench's own command line, on a short synthetic scenario:
    mode -> driver.json."""
    from bench.run import driver_argv

    scen = write_scenario(tmp_path, "workers", ops_per_s=100)
    runs = {d.mode: subprocess.Popen(driver_argv(d, scen, tmp_path / f"drive-{d.mode}", "wk"),
                                     cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True) for d in deps}
    try:
        for mode, proc in runs.items():
            err = proc.communicate(timeout=60)[1]
            assert proc.returncode == 0, f"{mode} driver: {err[-2000:]}"
    finally:
        for proc in runs.values():   # only on failure: a driver still running is ours to stop
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    return {mode: orjson.loads((tmp_path / f"drive-{mode}" / "driver.json").read_bytes())
            for mode in runs}


def test_same_reviews_same_answers_both_ways_and_no_orphans_after_an_exception(tmp_path):
    import socket

    from services.launcher import deploy
    from services.model import sample_reviews
    from services.procs import Supervisor
    from services.stream.client import StreamClient

    texts = list(sample_reviews(200, seed=3)[0])
    ids = [f"r{i}-{uuid.uuid4().hex[:6]}" for i in range(len(texts))]
    cpus = sorted(os.sched_getaffinity(0))
    svc, brk = ([cpus[0]], [cpus[-1]]) if len(cpus) > 1 else (None, None)
    started: set[int] = set()
    with pytest.raises(Boom):
        with Supervisor(tmp_path / "logs") as sup, \
                deploy("rest", tmp_path / "rest", sup=sup, service_cpus=svc,
                       overrides={"processes": 2}) as rest, \
                deploy("stream", tmp_path / "stream", sup=sup, service_cpus=svc,
                       broker_cpus=brk, overrides={"workers": 2}) as stream:
            started = _tree([p.pid for p in sup.procs])
            names = {p.name for p in sup.procs}
            assert {"rest-nginx", "rest-uwsgi", broker_kind(), "stream-worker-0"} <= names, names
            # REST: one batch request
            host, port = rest.url.removeprefix("http://").split(":")
            conn = http.client.HTTPConnection(host, int(port), timeout=60)
            body = orjson.dumps({"instances": [{"id": i, "text": t} for i, t in zip(ids, texts)]})
            conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            assert r.status == 200
            via_rest = {p["id"]: (p["label"], p["score"]) for p in orjson.loads(r.read())["predictions"]}
            conn.close()
            # stream: the same reviews as single events
            with StreamClient(stream.bootstrap, requests=stream.topics["requests"],
                              predictions=stream.topics["predictions"],
                              dlq=stream.topics["dlq"]) as c:
                c.send_many(zip(ids, texts))
                c.flush()
                missing = c.wait_for(ids, timeout=60)
                assert not missing, f"{len(missing)} of 200 unanswered by the stream"
                via_stream = {i: (c.predictions[i]["label"], c.predictions[i]["score"]) for i in ids}
            assert len(via_rest) == 200
            assert via_rest == via_stream  # identical labels AND scores (bit for bit)
            assert {lab for lab, _ in via_rest.values()} == {0, 1}
            # every worker launched answered a real driver run, and says who it is
            host = socket.gethostname()
            launched = {"rest": {f"{host}/{c.pid}" for c in psutil.Process(
                            rest.service_pids[0]).children()},   # the uWSGI master's workers
                        "stream": {f"{host}/{pid}" for pid in stream.service_pids}}
            for mode, d in _drive_both([rest, stream], tmp_path).items():
                assert len(launched[mode]) == 2, (mode, launched[mode])
                assert set(d["workers_answered"]) == launched[mode], (mode, d["workers_answered"])
                assert sum(d["workers_answered"].values()) >= d["counts"]["ok"] > 0, mode
            raise Boom("an exception in the middle of a run")
    assert started
    left = _gone(started)
    assert not left, f"processes outlived the launcher: {[psutil.Process(p).cmdline() for p in left]}"


def test_cli_up_all_stops_by_itself_and_leaves_nothing(tmp_path):
    """`python -m services up all --seconds N` starts both modes, says where, and cleans up."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "services", "up", "all", "--run-dir", str(tmp_path), "--seconds", "1"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: set[int] = set()
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        seen |= _tree([proc.pid]) - {proc.pid}
        time.sleep(0.2)
    out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out
    assert "rest: up at http://127.0.0.1:" in out and "stream: up at bootstrap 127.0.0.1:" in out
    assert "stopped." in out
    assert seen, "no child process was ever seen"
    assert not _gone(seen)


def test_cli_bad_setting_is_one_clear_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "services", "up", "rest", "--run-dir", str(tmp_path),
         "--seconds", "0", "--set", "rest.no_such_knob=1"],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "no_such_knob" in proc.stderr and "valid keys" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_attach_to_an_absent_rest_deployment_is_one_clear_line():
    import socket

    from services.launcher import attach
    from services.procs import LaunchError

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LaunchError) as e, attach("rest", url=f"http://127.0.0.1:{port}"):
        pass
    assert "healthz" in str(e.value) and "make up" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError), attach("stream"):
        pass


def test_driver_command_for_an_attached_deployment_allows_remote_addresses(tmp_path):
    from bench.run import driver_argv
    from services.launcher import Deployment

    local = Deployment(mode="rest", url="http://127.0.0.1:1", settings={"processes": 1})
    external = Deployment(mode="stream", bootstrap="kafka:9092",
                          topics={"requests": "requests", "predictions": "predictions"},
                          settings={"external": True})
    assert "--allow-remote" not in driver_argv(local, "s.yaml", tmp_path, "r")
    argv = driver_argv(external, "s.yaml", tmp_path, "r")
    assert "--allow-remote" in argv and argv[argv.index("--bootstrap") + 1] == "kafka:9092"
    assert argv[argv.index("--topics") + 1] == "requests,predictions"
