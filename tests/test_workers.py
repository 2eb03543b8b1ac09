"""Who answered: the worker stamp on REST answers, the stream driver's count per worker, and the
report's "workers that answered" (unit; the stamp on stream answers is in test_stream.py and a
real two-worker run in test_launcher.py)."""

from __future__ import annotations

import json
import os
import queue
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from analysis.workers import Workers, workers_from_meta, workers_line
from loadgen import ledger as L
from loadgen import workers
from services.worker_id import REST_HEADER, worker_id

sys.path.insert(0, str(Path(__file__).parent))
from fixtures.fake_run import make_run  # noqa: E402


def test_worker_id_is_host_and_pid_and_follows_a_fork(monkeypatch):
    me = f"{socket.gethostname()}/{os.getpid()}"
    assert worker_id() == me and worker_id() is worker_id()   # computed once per process
    monkeypatch.setattr(os, "getpid", lambda: 424242)         # as in a forked uWSGI worker
    assert worker_id() == f"{socket.gethostname()}/424242"


def test_rest_answers_name_the_worker():
    from services.rest.app import create_app

    model = SimpleNamespace(info={"name": "fake"}, predict_batch=lambda ts: [(1, 0.9)] * len(ts))
    client = create_app(predictor=model).test_client()
    r = client.post("/predict", json={"id": "a", "text": "fine"})
    assert r.status_code == 200 and r.headers[REST_HEADER] == worker_id()


def test_stream_worker_header_and_answered_counts():
    assert workers.stream_worker([("x", b"1"), ("rvs-worker", b"h/7")]) == b"h/7"
    assert workers.stream_worker(None) is None and workers.stream_worker([("x", b"1")]) is None
    assert workers.answered({b"h/7": 3, None: 2, b"a/1": 1}) == {"a/1": 1, "h/7": 3, "unknown": 2}
    assert workers.answered({"h/7": 3, None: 1}) == {"h/7": 3, "unknown": 1}   # REST: str keys


def test_stream_driver_counts_this_runs_answers_per_worker(monkeypatch):
    """The consumer thread's real loop over fake messages: answers of this run are counted per
    rvs-worker (no header -> "unknown"); probes and other runs' answers are not."""
    from loadgen import stream_driver as sd

    def msg(key, headers):
        return SimpleNamespace(error=lambda: None, key=lambda: key, value=lambda: b"{}",
                               headers=lambda: headers)

    msgs = [msg(b"run1-0", [("rvs-worker", b"h/1")]), msg(b"run1-1", [("rvs-worker", b"h/2")]),
            msg(b"run1-2", [("rvs-worker", b"h/1")]), msg(b"run1-3", None),
            msg(b"__probe__-0", [("rvs-worker", b"h/3")]), msg(b"run0-9", [("rvs-worker", b"h/9")])]

    class FakeConsumer:
        def __init__(self, conf):
            self.polls = 0

        def assign(self, tps):
            pass

        def poll(self, timeout):
            self.polls += 1
            if self.polls == 1:
                return msgs[0]
            answers.stop_evt.set()
            return None

        def consume(self, num_messages, timeout):
            return msgs[1:]

        def close(self):
            pass

    monkeypatch.setattr(sd, "Consumer", FakeConsumer)
    out: queue.SimpleQueue = queue.SimpleQueue()
    answers = sd._Answers({}, "predictions", [0], L.Clock(), False, out, b"run1-")
    answers.run()
    assert answers.workers_answered() == {"h/1": 2, "h/2": 1, "unknown": 1}
    assert answers.messages == 6 and len(out.get_nowait()[1]) == 6   # every answer still handed on


def test_driver_record_carries_workers_answered():
    common = dict(mode="stream", run_id="r", scenario="s", clock=L.Clock(), stop_s=1.0,
                  interrupted=[], lateness=L.dist([0.001]), saturated=0, p99_bound_s=0.02,
                  max_lateness_s=1.0, settings={})
    assert L.driver_record(**common, workers_answered={"h/1": 5})["workers_answered"] == {"h/1": 5}
    assert L.driver_record(**common)["workers_answered"] == {}


def test_workers_from_meta_configured_answered_and_spread():
    w = workers_from_meta({"workers": 3, "driver": {"workers_answered": {
        "a/1": 30, "b/1": 50, "c/1": 20, "unknown": 4}}})
    assert w == Workers(3, 3, 104, 4, pytest.approx(0.2), pytest.approx(0.5),
                        {"a/1": 30, "b/1": 50, "c/1": 20, "unknown": 4})
    attached = workers_from_meta({"workers": None, "driver": {"workers_answered": {"x/7": 9}}})
    assert attached.configured is None and attached.answered == 1 and attached.max_share == 1.0
    old = workers_from_meta({"workers": 2, "driver": {"kind": "synthetic"}})
    assert old.answered is None and old.min_share is None


def test_workers_line_says_how_many_answered_and_how_evenly():
    line = workers_line("stream", {"configured": None, "answered": 3, "unnamed": 0,
                                   "min_share": 0.2, "max_share": 0.5})
    assert line.startswith("stream: workers that answered: 3 (configured: unknown, the bench "
                           "attached")
    assert "min 20.0%, max 50.0%" in line
    fewer = workers_line("rest", {"configured": 2, "answered": 1, "unnamed": 5,
                                  "min_share": 1.0, "max_share": 1.0})
    assert "answered: 1 (configured: 2; fewer answered" in fewer
    assert "5 answers named no worker" in fewer
    assert "not recorded" in workers_line("rest", {"configured": 1, "answered": None})
    assert "a restarted worker answers under a new pid" in workers_line(
        "stream", {"configured": 1, "answered": 2, "min_share": 0.1, "max_share": 0.9})


def test_summary_and_report_show_the_workers(tmp_path):
    from analysis.report import render_html
    from analysis.rundir import load_run
    from analysis.summary import analyse, build_summary, summary_markdown

    d = make_run(tmp_path / "20250101T000000Z-w", duration_s=10, warmup_s=1, rate=10)
    meta = json.loads((d / "meta.json").read_text())
    meta["modes"]["rest"].update(workers=2, driver={"workers_answered": {"h/1": 60, "h/2": 40}})
    meta["modes"]["stream"].update(workers=None, driver={"workers_answered": {
        "c1/7": 30, "c2/7": 30, "c3/7": 40}})
    (d / "meta.json").write_text(json.dumps(meta))
    ra = analyse(load_run(d))
    s = build_summary(ra)
    assert s["modes"]["stream"]["workers"]["answered"] == 3
    assert s["modes"]["rest"]["workers"] == {"configured": 2, "answered": 2, "answers": 100,
                                             "unnamed": 0, "min_share": 0.4, "max_share": 0.6,
                                             "by_worker": {"h/1": 60, "h/2": 40}}
    md = summary_markdown(s)
    assert "- rest: workers that answered: 2 (configured: 2); share of answers per worker: " \
           "min 40.0%, max 60.0%" in md
    assert "- stream: workers that answered: 3 (configured: unknown" in md
    html = render_html(ra, s, {})
    assert "<h2>Workers</h2>" in html and "stream: workers that answered: 3" in html
