"""Loads relative to a calibrated capacity: parsing, resolution, and the driver's refusal."""

import pytest

from loadgen import relative as rel
from loadgen.scenario import ScenarioError, parse_scenario


def closed_relative(**over):
    d = {"name": "rel", "modes": ["rest", "stream"], "workload": {"batch_size": 1000},
         "client": {"timeout_s": 5},
         "arrival": {"closed": {"unit": "timeout_fill",
                                "clients": [[0, 0.1], [25, 0.5], [50, 1.5], [75, 3.0]]}}}
    d.update(over)
    return parse_scenario(d)


def test_timeout_fill_clients_follow_the_measured_capacity():
    sc = closed_relative()
    assert sc.is_relative and sc.calibration.mode == "rest"    # first mode by default
    # 5 batches/s and a 5 s deadline: 25 clients fill it
    slow = rel.resolve(sc, rel.Capacity("rest", ops_per_s=5.0, batch_size=1000, timeout_s=5))
    assert [n for _, n in slow.arrival.clients] == [2, 12, 38, 75]   # round(x * 25), >= 1
    # a machine twice as fast gets twice the clients: pushed as far past its capacity
    fast = rel.resolve(sc, rel.Capacity("rest", ops_per_s=10.0, batch_size=1000, timeout_s=5))
    assert [n for _, n in fast.arrival.clients] == [5, 25, 75, 150]
    assert not fast.is_relative and fast.calibration is None
    # the resolved scenario is an ordinary one: it round-trips through the parser
    assert parse_scenario(fast.to_dict()) == fast
    meta = rel.describe(sc, fast, rel.Capacity("rest", 10.0, 1000, 5))
    assert meta["timeout_fill_clients"] == 50 and meta["reviews_per_s"] == 10_000
    assert meta["steps"][2] == {"at_s": 50.0, "multiple": 1.5, "clients": 75}


def test_a_tiny_multiple_still_gets_one_client():
    sc = closed_relative(arrival={"closed": {"unit": "timeout_fill", "clients": 0.01}})
    got = rel.resolve(sc, rel.Capacity("rest", ops_per_s=2.0, batch_size=1, timeout_s=5))
    assert got.arrival.clients == ((0.0, 1),)


def test_open_rates_are_fractions_of_capacity():
    sc = parse_scenario({"name": "o", "calibration": {"mode": "stream", "duration_s": 5},
                         "arrival": {"open": {"unit": "capacity", "rate": {
                             "shape": "steps", "steps": [[0, 0.25], [10, 0.5], [20, 1.5]]}}}})
    assert sc.calibration.mode == "stream" and sc.calibration.duration_s == 5
    got = rel.resolve(sc, rel.Capacity("stream", ops_per_s=800.0, batch_size=1, timeout_s=5))
    assert got.arrival.rate.steps == ((0.0, 200.0), (10.0, 400.0), (20.0, 1200.0))
    assert got.arrival.unit == "ops_per_s"
    ramp = parse_scenario({"name": "r", "arrival": {"open": {"unit": "capacity", "rate": {
        "shape": "ramp", "from_ops_per_s": 0.5, "to_ops_per_s": 2}}}})
    r = rel.resolve(ramp, rel.Capacity("rest", 100.0, 1, 5)).arrival.rate
    assert (r.from_ops_per_s, r.to_ops_per_s) == (50.0, 200.0)


def test_absolute_scenarios_are_untouched_and_need_no_calibration():
    sc = parse_scenario({"name": "a", "arrival": {"closed": {"clients": 4}}})
    assert not sc.is_relative and sc.calibration is None and "calibration" not in sc.to_dict()
    assert rel.resolve(sc, rel.Capacity("rest", 1.0, 1, 5)) is sc
    with pytest.raises(ScenarioError, match="only a relative load needs one"):
        parse_scenario({"name": "a", "calibration": {"mode": "rest"},
                        "arrival": {"closed": {"clients": 4}}})


@pytest.mark.parametrize("bad, match", [
    ({"arrival": {"closed": {"unit": "bogus", "clients": 1}}}, "unit"),
    ({"arrival": {"closed": {"unit": "timeout_fill", "clients": [[0, 0]]}}}, "must be > 0"),
    ({"arrival": {"closed": {"clients": 1.5}}}, "integer"),
    ({"modes": ["stream"], "calibration": {"mode": "rest"},
      "arrival": {"closed": {"unit": "timeout_fill", "clients": 1}}}, "not one of the scenario"),
    ({"calibration": {"mode": "rest", "bogus": 1},
      "arrival": {"closed": {"unit": "timeout_fill", "clients": 1}}}, "unknown key 'bogus'"),
])
def test_bad_relative_scenarios_say_what_is_wrong(bad, match):
    with pytest.raises(ScenarioError, match=match):
        parse_scenario({"name": "b", **bad})


def test_a_capacity_of_nothing_cannot_resolve():
    with pytest.raises(ValueError, match="served nothing"):
        rel.resolve(closed_relative(), rel.Capacity("rest", 0.0, 1000, 5))


def test_the_driver_refuses_an_unresolved_scenario(tmp_path, capsys):
    import yaml

    from loadgen.__main__ import main
    path = tmp_path / "rel.yaml"
    path.write_text(yaml.safe_dump(closed_relative().to_dict()))
    code = main(["drive", "stream", "--scenario", str(path), "--out", str(tmp_path / "o"),
                 "--run-id", "r", "--bootstrap", "127.0.0.1:9"])
    assert code == 2
    assert "relative to a capacity" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()      # nothing was driven


def test_the_calibration_phase_runs_the_scenarios_own_work_on_the_reference_mode():
    from bench.calibrate import CALIBRATION_TIMEOUT_S, calibration_doc, reference_timeout_s
    sc = closed_relative(calibration={"mode": "stream", "clients": 3, "duration_s": 6},
                         client={"timeout_s": 5, "stream_timeout_s": 60},
                         payload={"source": "synthetic", "sample": 50, "seed": 4},
                         service={"stream": {"take_max": 64}})
    doc = calibration_doc(sc)
    phase = parse_scenario(doc)                    # a valid, absolute scenario
    assert phase.modes == ("stream",) and not phase.is_relative
    assert phase.arrival.clients == ((0.0, 3),) and phase.arrival.think_s == 0
    assert phase.workload.batch_size == 1000 and phase.payload == sc.payload
    assert phase.service["stream"] == {"take_max": 64}
    assert phase.timing.duration_s == 6 and phase.client.retry.policy == "none"
    assert phase.client.timeout_s == CALIBRATION_TIMEOUT_S
    # the deadline the stream's queueing must fill is its own, not REST's
    assert reference_timeout_s(sc) == 60
    assert reference_timeout_s(closed_relative()) == 5


def test_the_report_says_how_a_relative_load_was_set():
    from analysis.summary import load_line
    assert load_line({"calibration": None}) is None
    line = load_line({"calibration": {
        "mode": "rest", "ops_per_s": 5.0, "reviews_per_s": 5000.0, "timeout_s": 5.0,
        "timeout_fill_clients": 25.0, "steps": [{"at_s": 0, "multiple": 0.1, "clients": 2},
                                                {"at_s": 25, "multiple": 2.0, "clients": 50}]}})
    assert line == ("load relative to rest's capacity, measured first in this run: 5.00 ops/s "
                    "(5,000 reviews/s); 25.0 clients fill its 5 s deadline; clients per step: "
                    "0.1x = 2, 2x = 50")
