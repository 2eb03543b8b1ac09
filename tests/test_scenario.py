"""Scenario files: validation messages, arrival models, defaults, the shipped scenarios."""

from __future__ import annotations

import copy

import pytest
import yaml

from loadgen.scenario import (
    ClosedArrival,
    OpenArrival,
    RateBurst,
    RateConstant,
    RateRamp,
    RateSteps,
    ScenarioError,
    available,
    load_scenario,
    parse_scenario,
)
from loadgen.schedule import plan_open

BASE = {
    "name": "t",
    "description": "a test",
    "payload": {"source": "synthetic", "sample": 10},
    "arrival": {"open": {"rate": {"shape": "constant", "ops_per_s": 10}}},
    "timing": {"warmup_s": 1, "duration_s": 5, "drain_s": 1},
}


def with_(path: str, value):
    d = copy.deepcopy(BASE)
    keys = path.split(".")
    cur = d
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
    cur[keys[-1]] = value
    return d


def err(d) -> str:
    with pytest.raises(ScenarioError) as e:
        parse_scenario(d, "x.yaml")
    return str(e.value)


def test_minimal_open_defaults():
    sc = parse_scenario(BASE, "x.yaml")
    assert sc.modes == ("rest", "stream")
    assert isinstance(sc.arrival, OpenArrival) and sc.arrival.process == "poisson"
    assert sc.workload.batch_size == 1
    assert sc.client.retry.policy == "none" and sc.client.retry.max_attempts == 1
    assert sc.timing.horizon_s == 6 and sc.timing.end_s == 7


@pytest.mark.parametrize("path,key,where", [
    ("rat", "rat", "(top level)"),
    ("timing.durations", "durations", "timing"),
    ("arrival.open.rte", "rte", "arrival.open"),
    ("arrival.open.rate.ops", "ops", "arrival.open.rate (shape constant)"),
    ("client.retry.tries", "tries", "client.retry"),
    ("payload.n", "n", "payload"),
])
def test_unknown_key_names_key_place_and_valid_keys(path, key, where):
    msg = err(with_(path, 1))
    assert msg.startswith("x.yaml: ")
    assert f"unknown key {key!r}" in msg
    assert where in msg
    assert "valid keys here:" in msg


def test_unknown_key_lists_the_valid_ones():
    msg = err(with_("timing.durations", 1))
    for k in ("warmup_s", "duration_s", "drain_s", "max_requests"):
        assert k in msg


@pytest.mark.parametrize("path,value,needle", [
    ("timing.duration_s", -1, "timing.duration_s: must be > 0"),
    ("timing.duration_s", "ten", "timing.duration_s: must be a number"),
    ("workload.batch_size", 0, "workload.batch_size: must be >= 1"),
    ("workload.batch_size", 2.5, "must be an integer"),
    ("payload.split", "dev", "payload.split: must be one of test, train"),
    ("modes", ["rest", "grpc"], "unknown mode 'grpc'"),
    ("modes", [], "non-empty"),
    ("arrival.open.process", "bursty", "must be one of constant, poisson"),
    ("arrival.open.rate", {"shape": "sine"}, "must be one of constant, steps, ramp, burst"),
    ("arrival.open.rate", {"shape": "constant", "ops_per_s": 0}, "must be > 0"),
    ("arrival.open.rate", {"shape": "steps", "steps": [[1, 5]]}, "first step must start at 0"),
    ("arrival.open.rate", {"shape": "steps", "steps": [[0, 5], [0, 6]]}, "strictly increasing"),
    ("arrival.open.rate", {"shape": "ramp", "from_ops_per_s": 1, "to_ops_per_s": 5,
                           "start_s": 3, "end_s": 2}, "must be > start_s"),
    ("arrival.open.rate", {"shape": "burst", "base_ops_per_s": 1, "peak_ops_per_s": 5,
                           "at_s": 1, "length_s": 3, "every_s": 2}, "must be <= every_s"),
    ("client.retry", {"policy": "none", "max_attempts": 3}, "must be 1 with policy none"),
    ("client.retry", {"policy": "exponential", "backoff_s": 2, "cap_s": 1},
     "must be >= backoff_s"),
    ("client.timeout_s", 0, "client.timeout_s: must be > 0"),
    ("slo.max_error_rate", 2, "must be <= 1"),
    ("description", "two\nlines", "one line"),
    ("faults", [{"at_s": 1, "kind": "meteor"}], "faults[0].kind: must be one of"),
    ("faults", [{"at_s": 99, "kind": "pause"}], "after the run ends"),
    ("faults", [{"at_s": 1, "kind": "pause", "modes": ["soap"]}], "unknown mode 'soap'"),
    ("service", {"grpc": {}}, "unknown key 'grpc'"),
])
def test_bad_values_say_what_is_expected(path, value, needle):
    assert needle in err(with_(path, value))


def test_arrival_needs_exactly_one_model():
    d = with_("arrival", {"open": BASE["arrival"]["open"], "closed": {"clients": 2}})
    assert "exactly one of 'open'" in err(d)
    assert "exactly one" in err(with_("arrival", {}))


def test_missing_required():
    d = copy.deepcopy(BASE)
    del d["name"]
    assert "missing required key 'name'" in err(d)
    assert "missing required key 'rate'" in err(with_("arrival", {"open": {"seed": 1}}))


@pytest.mark.parametrize("rate,cls", [
    ({"shape": "constant", "ops_per_s": 5}, RateConstant),
    (7, RateConstant),
    ({"shape": "steps", "steps": [[0, 5], [2, 10]]}, RateSteps),
    ({"shape": "ramp", "from_ops_per_s": 0, "to_ops_per_s": 50}, RateRamp),
    ({"shape": "burst", "base_ops_per_s": 5, "peak_ops_per_s": 50, "at_s": 1, "length_s": 0.5,
      "every_s": 2}, RateBurst),
])
def test_each_open_rate_shape(rate, cls):
    sc = parse_scenario(with_("arrival.open.rate", rate))
    assert isinstance(sc.arrival.rate, cls)
    again = parse_scenario(sc.to_dict())
    assert again == sc


def test_closed_loop_forms():
    sc = parse_scenario(with_("arrival", {"closed": {"clients": 4, "think_s": 0.5}}))
    assert isinstance(sc.arrival, ClosedArrival)
    assert sc.arrival.clients == ((0.0, 4),) and sc.arrival.think_s == 0.5
    sc = parse_scenario(with_("arrival", {"closed": {"clients": [[0, 1], [10, 8]]}}))
    assert sc.arrival.clients == ((0.0, 1), (10.0, 8)) and sc.arrival.max_clients == 8
    assert "clients: must be >= 1" in err(with_("arrival", {"closed": {"clients": 0}}))
    assert "must be an integer" in err(with_("arrival", {"closed": {"clients": [[0, 1.5]]}}))
    assert parse_scenario(sc.to_dict()) == sc


def test_service_overrides_pass_through_untouched():
    svc = {"rest": {"workers": 3, "anything": {"nested": [1, 2]}}, "stream": {"take": 64}}
    sc = parse_scenario(with_("service", svc))
    assert sc.service == svc
    d = sc.to_dict()
    d["service"]["rest"]["workers"] = 99        # to_dict hands out a copy
    assert sc.service["rest"]["workers"] == 3


def test_retry_jitter_bool_and_defaults():
    sc = parse_scenario(with_("client", {"timeout_s": 2, "retry": {"policy": "exponential",
                                                                   "jitter": True}}))
    r = sc.client.retry
    assert r.jitter == 1.0 and r.max_attempts == 3


def test_to_dict_is_json_plain_and_round_trips():
    import json
    sc = parse_scenario(with_("faults", [{"at_s": 2, "kind": "kill_worker", "modes": ["rest"]}]))
    d = sc.to_dict()
    json.dumps(d)
    assert d["faults"][0] == {"at_s": 2.0, "kind": "kill_worker", "duration_s": 0.0,
                              "modes": ["rest"]}
    assert parse_scenario(d) == sc


def test_load_by_name_and_path(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text(yaml.safe_dump(BASE))
    assert load_scenario(p).name == "t"
    with pytest.raises(ScenarioError, match="not found"):
        load_scenario("no-such-scenario")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(bad)


@pytest.mark.parametrize("name", ["smoke", "steady", "seed", "sweep"])
def test_shipped_scenarios_load(name):
    assert name in available()
    sc = load_scenario(name)
    assert sc.name == name and sc.description and "\n" not in sc.description
    assert parse_scenario(sc.to_dict()) == sc


def test_shipped_scenario_bounds():
    smoke = load_scenario("smoke")
    assert smoke.timing.duration_s >= 10 and 2 * smoke.timing.end_s <= 60
    seed = load_scenario("seed")
    assert isinstance(seed.arrival, ClosedArrival) and seed.workload.batch_size == 1000
    assert seed.client.retry.policy == "exponential"
    assert seed.arrival.clients[0][1] < seed.arrival.max_clients
    # the article's shape on any machine: clients are multiples of REST's timeout-filling count,
    # from well below it to well past it, calibrated on REST first
    assert seed.is_relative and seed.arrival.unit == "timeout_fill"
    assert seed.calibration.mode == "rest"
    assert seed.arrival.clients[0][1] < 0.5 and seed.arrival.max_clients >= 2
    sweep = load_scenario("sweep")
    assert isinstance(sweep.arrival.rate, RateSteps) and sweep.slo.p99_ms
    steady = load_scenario("steady")
    plan = plan_open(steady.arrival, steady.timing.horizon_s, steady.timing.max_requests)
    assert abs(len(plan) / steady.timing.horizon_s - 100) < 5


def test_stream_timeout_defaults_to_the_rest_timeout_and_can_differ():
    from loadgen.stream_driver import StreamRun

    same = parse_scenario(with_("client", {"timeout_s": 3}))
    assert same.client.stream_timeout_s is None and same.client.stream_deadline_s == 3
    apart = parse_scenario(with_("client", {"timeout_s": 3, "stream_timeout_s": 60}))
    assert apart.client.timeout_s == 3 and apart.client.stream_deadline_s == 60
    assert parse_scenario(apart.to_dict()) == apart
    assert "stream_timeout_s" in err(with_("client", {"stream_timeout_s": 0}))
    assert "stream_timeout_s" in err(with_("client", {"stream_timeout_s": "long"}))
    # the stream driver's deadline (and its producer's delivery timeout) follow it
    run = StreamRun(apart, "127.0.0.1:9", "r", payloads=None)
    assert run.T == 60 and run.pconf["message.timeout.ms"] == 60_000
