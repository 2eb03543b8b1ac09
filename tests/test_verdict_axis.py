"""The model-cost axis of ``make verdict``: where the winner changes as a model gets costlier
(analysis/verdict.py), the axis options and phases (bench/verdict.py), and the axis folder's
summary, words and chart from sub-folder summaries alone (analysis/verdict_axis.py)."""

from __future__ import annotations

import json
import math

import pytest

from analysis import verdict as vd
from bench import verdict as bv


def reg(key, winner, *, clear=True, better="higher", values=None, ratio=2.0, ci=(1.5, 2.5),
        load=None):
    values = values or ({"rest": 100.0, "stream": 50.0} if winner == "rest"
                        else {"rest": 50.0, "stream": 100.0})
    return {"key": key, "load": load or key, "winner": winner, "clear": clear, "better": better,
            "values": values, "ratio": ratio, "ci95": list(ci), "unit": "reviews/s"}


def axis(*outs, key="saturated"):
    return [{"cost_us": c, "regimes": [reg(key, w, clear=cl)]} for c, w, cl in outs]


# --------------------------------------------------------------------------------------------
# where the winner changes


def test_a_winner_that_flips_says_between_which_costs():
    (r,) = vd.axis_regimes(axis((1000, "stream", True), (0, "rest", True), (250, "rest", True),
                                (4000, "stream", True)))
    assert [o for _, o in r.outcomes] == ["rest", "rest", "stream", "stream"]   # sorted by cost
    assert r.changes == ((250.0, 1000.0, "rest", "stream"),)
    assert r.sentence == ("saturated: REST wins up to 250 µs, stream wins from 1,000 µs "
                          "(synthetic cost per input; the winner changes between 250 µs and "
                          "1,000 µs).")


def test_one_winner_at_every_cost_is_said_once():
    (r,) = vd.axis_regimes(axis((0, "rest", True), (1000, "rest", True), (4000, "rest", True)))
    assert r.changes == ()
    assert r.sentence == "saturated: REST wins at every cost (0 µs–4,000 µs, synthetic)."


def test_an_unclear_cost_is_not_a_change_of_winner():
    (r,) = vd.axis_regimes(axis((0, "rest", True), (250, "stream", False),
                                (1000, "stream", True)))
    assert [o for _, o in r.outcomes] == ["rest", vd.TIED, "stream"]
    assert len(r.changes) == 2                     # rest -> tie -> stream: two steps
    assert "REST wins at 0 µs, no clear winner at 250 µs, stream wins at 1,000 µs" in r.sentence
    assert "the winner changes" not in r.sentence  # never REST directly next to the stream
    assert r.to_dict()["changes"][0] == {"between_us": [0.0, 250.0], "from": "rest",
                                         "to": vd.TIED}


def test_a_regime_missing_at_a_cost_is_not_measured_there():
    ax = axis((0, "rest", True), (1000, "rest", True))
    ax[1]["regimes"] = []
    (r,) = vd.axis_regimes(ax)
    assert r.outcomes == ((0.0, "rest"), (1000.0, None))
    assert "not measured at 1,000 µs" in r.sentence
    only_one = reg("saturated", "rest", values={"rest": 100.0, "stream": None})
    assert vd.outcome(only_one) is None


def test_the_advantage_points_the_same_way_for_throughput_and_latency():
    thr = reg("saturated", "rest", values={"rest": 300.0, "stream": 100.0}, ratio=3.0,
              ci=(2.0, 4.0))
    v, lo, hi = vd.advantage(thr, "stream", "rest")
    assert v == pytest.approx(1 / 3) and lo == pytest.approx(0.25) and hi == pytest.approx(0.5)
    assert vd.advantage(thr, "rest", "stream") == (pytest.approx(3.0), 2.0, 4.0)
    # latency: lower is better; the stream's p99 of 50 against REST's 200 is 4x better
    lat = reg("latency_¼", "stream", better="lower", values={"rest": 200.0, "stream": 50.0},
              ratio=4.0, ci=(3.0, 5.0))
    assert vd.advantage(lat, "stream", "rest") == (pytest.approx(4.0), 3.0, 5.0)
    # REST served nothing: the stream's advantage is unbounded, not a division by zero
    assert vd.advantage(reg("x", "stream", values={"rest": 0.0, "stream": 5.0}),
                        "stream", "rest")[0] == math.inf
    assert vd.advantage(reg("x", "rest", values={"rest": 5.0, "stream": None}),
                        "stream", "rest") == (None, None, None)


def test_the_pair_is_rest_and_the_stream_by_kind():
    assert vd.axis_pair(["stream", "rest"]) == ("rest", "stream")
    assert vd.axis_pair(["a", "b"], {"a": "stream", "b": "rest"}) == ("b", "a")
    assert vd.axis_pair(["a", "b", "c"]) == ("a", "b")
    assert vd.axis_pair(["rest"]) is None
