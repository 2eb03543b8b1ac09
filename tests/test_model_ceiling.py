"""The per-mode model ceiling: best of tries, their noise, the record the bench writes in
meta.json, and the batch size each mode is measured at."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest

from bench import model_ceiling as mc
from loadgen.scenario import load_scenario


# --------------------------------------------------------------------------------------------
# best, noise, the record


def test_best_is_the_fastest_try_and_noise_its_spread_over_it():
    # the user's four back-to-back measurements
    rates = [7600.0, 8251.0, 6700.0, 8000.0]
    assert mc.best(rates) == 8251.0
    assert mc.noise(rates) == pytest.approx((8251 - 6700) / 8251)
    assert mc.noise([5000.0, 5000.0]) == 0.0
    assert mc.best([]) is None and mc.noise([]) is None
    assert mc.noise([8000.0]) is None          # one try has no spread to speak of


def test_ceiling_record_keeps_every_try_and_the_best_and_noise_over_all_of_them():
    tries = [mc.Try("before", 900.0, 1000.0, 1.0), mc.Try("before", 1000.0, 1010.0, 2.0),
             mc.Try("after", 800.0, 1005.0, 3.0)]
    r = mc.ceiling_record(tries, batch=256, cpus=[0], try_s=0.5)
    assert r["best"] == 1000.0 and r["noise"] == pytest.approx(0.2)
    assert r["batch"] == 256 and r["cpus"] == [0]
    assert [t["when"] for t in r["tries"]] == ["before", "before", "after"]
    assert [mc.Try(**t) for t in r["tries"]] == tries   # round-trips (after() rebuilds them)
    json.dumps(r)


def test_mode_batch_is_what_the_deployment_calls_the_model_with():
    seed = load_scenario("seed")
    assert mc.mode_batch("rest", seed) == 1000                      # one POST = 1,000 reviews
    assert mc.mode_batch("stream", seed) == 256                     # take_max default
    sc = SimpleNamespace(workload=SimpleNamespace(batch_size=1),
                         service={"stream": {"shape": "batch", "take_max": 64}})
    assert mc.mode_batch("rest", sc) == 1 and mc.mode_batch("stream", sc) == 64
    sc.service = {"stream": {"shape": "event", "take_max": 64}}
    assert mc.mode_batch("stream", sc) == 1                         # one model call per event


class _CountingModel:
    def __init__(self):
        self.calls: list[int] = []

    def predict_batch(self, texts):
        self.calls.append(len(texts))
        return [(1, 0.9)] * len(texts)


def test_measure_tries_makes_n_tries_at_the_batch_after_one_warm_up():
    m = _CountingModel()
    got = mc.measure_tries(m, ["a", "b", "c"], [sorted(os.sched_getaffinity(0))[0]],
                           7, n=3, seconds=0.01, when="before")
    assert len(got) == 3 and all(t.when == "before" and t.reviews_per_s > 0 for t in got)
    assert set(m.calls) == {7}           # every call, the warm-up too, at the batch asked for
    assert len(m.calls) >= 1 + 3         # a warm-up, then at least one whole call per try
    with pytest.raises(ValueError):
        mc.measure_tries(m, [], [0], 7)


def test_mode_ceiling_after_adds_its_tries_to_the_before_ones(monkeypatch):
    import services.model.data as data

    monkeypatch.setattr(data, "sample_reviews", lambda n, seed, split: (["x", "y"], None))
    said: list[str] = []
    core = sorted(os.sched_getaffinity(0))[0]
    sc = SimpleNamespace(payload=load_scenario("smoke").payload,
                         workload=SimpleNamespace(batch_size=5), service={})
    probe = mc.ModeCeiling(_CountingModel(), sc, [core], said.append, tries=2, try_s=0.01)
    before = probe.before("rest")
    assert before["batch"] == 5 and len(before["tries"]) == 2
    after = probe.after("rest", before)
    assert [t["when"] for t in after["tries"]] == ["before", "before", "after", "after"]
    assert after["best"] == max(t["reviews_per_s"] for t in after["tries"])
    assert any("before the run" in s for s in said) and any("best of 4" in s for s in said)


def test_make_ceilings_yardstick_is_the_best_try_per_batch_size():
    core = sorted(os.sched_getaffinity(0))[0]
    c = mc.measure_batched(_CountingModel(), ["a", "b"], [core], (16, 64), tries=3, seconds=0.01)
    assert set(c["tries_by_batch"]) == {"1", "16", "64"}
    for b, tries in c["tries_by_batch"].items():
        assert len(tries) == 3 and c["reviews_per_s_by_batch"][b] == max(tries)
        assert c["noise_by_batch"][b] == pytest.approx((max(tries) - min(tries)) / max(tries),
                                                       abs=1e-4)
    assert c["best_batch"] in (16, 64)
    assert c["batched_reviews_per_s"] == c["reviews_per_s_by_batch"][str(c["best_batch"])]
    assert c["batch1_reviews_per_s"] == c["reviews_per_s_by_batch"]["1"]


def test_on_each_cpu_pins_one_child_per_core_and_reports_a_failing_one():
    import os

    import pytest

    from services.model.bench import on_each_cpu
    cpus = sorted(os.sched_getaffinity(0))[:2]
    got = on_each_cpu(lambda: sorted(os.sched_getaffinity(0)), cpus, timeout=30)
    assert sorted(got) == [[c] for c in cpus]          # each child ran on its own core only
    with pytest.raises(RuntimeError, match="probe failed in a worker: cpu .*ZeroDivisionError"):
        on_each_cpu(lambda: 1 / 0, cpus, timeout=30, what="probe")
