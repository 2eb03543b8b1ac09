"""Deployments are registered objects: the registry's rules, and a toy deployment (registered from
this suite alone, tests/toy_deployment.py) driven through the real bench."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from services import registry

REPO = Path(__file__).resolve().parent.parent
TOY = "toy=tests.toy_deployment:ToyKind"


def test_names_resolve_to_a_kind_and_its_settings():
    assert registry.resolve("rest") == registry.Spec("rest", "rest", {})
    lean = registry.resolve("stream-lean")
    assert (lean.kind, lean.settings) == ("stream", {"engine": "lean"})
    # the scenario's own settings go on top of the name's
    assert registry.settings_for("stream-lean", {"engine": "faust", "workers": 2}) == \
        {"engine": "faust", "workers": 2}
    assert registry.uses_broker("stream-lean") and not registry.uses_broker("rest")
    with pytest.raises(registry.UnknownDeployment, match="registered: rest, stream"):
        registry.resolve("grpc")


def test_every_kind_says_which_driver_speaks_its_protocol_and_what_serves_it():
    assert registry.impl("rest").driver == "rest" and registry.impl("stream").driver == "stream"
    assert registry.impl("stream-lean").engine(registry.settings_for("stream-lean", {})) == "lean"
    assert registry.impl("stream").engine({}) != registry.impl("rest").engine({})
    # reviews per model call as each deployment makes them
    assert registry.impl("rest").model_batch({}, 1000) == 1000
    assert registry.impl("stream").model_batch({"shape": "event"}, 1000) == 1


def test_a_plugin_named_in_the_environment_is_known_to_every_process(monkeypatch):
    monkeypatch.setenv(registry.ENV, TOY)
    assert "toy" in registry.names() and registry.resolve("toy").kind == "toy"
    out = subprocess.run(
        ["python", "-c", "from services import registry; print(registry.names())"],
        cwd=REPO, capture_output=True, text=True, timeout=60, env={**__import__("os").environ})
    assert "'toy'" in out.stdout
    monkeypatch.setenv(registry.ENV, "toy-without-target")
    with pytest.raises(registry.UnknownDeployment, match="name=module:attr"):
        registry.names()


def test_a_scenario_may_name_any_registered_deployment_and_nothing_else():
    from loadgen.scenario import ScenarioError, parse_scenario

    base = {"name": "x", "arrival": {"closed": {"clients": [[0, 1]]}}}
    sc = parse_scenario({**base, "modes": ["rest", "stream", "stream-lean"],
                         "service": {"stream-lean": {"take_max": 64}}})
    assert sc.modes == ("rest", "stream", "stream-lean")
    assert sc.service["stream-lean"] == {"take_max": 64} and sc.service["rest"] == {}
    with pytest.raises(ScenarioError, match="unknown mode 'grpc'.*stream-lean"):
        parse_scenario({**base, "modes": ["rest", "grpc"]})
    with pytest.raises(ScenarioError, match="unknown key 'grpc'"):
        parse_scenario({**base, "service": {"grpc": {}}})


@pytest.mark.stack
def test_a_toy_deployment_registered_here_runs_smoke_through_the_real_bench(tmp_path, monkeypatch):
    """Nothing outside tests/toy_deployment.py knows the toy: the bench deploys it, the REST
    driver drives it, the analysis reports it, each by name."""
    from bench.run import Placement, RunOptions, run_scenario
    from loadgen.scenario import load_scenario

    monkeypatch.setenv(registry.ENV, TOY)       # the driver subprocess learns it too
    doc = yaml.safe_load((REPO / "scenarios" / "smoke.yaml").read_text())
    doc.update(modes=["toy"], timing={"warmup_s": 1, "duration_s": 4, "drain_s": 2})
    path = tmp_path / "smoke-toy.yaml"
    path.write_text(yaml.safe_dump(doc))
    opts = RunOptions(placement=Placement.default(), results=tmp_path / "results",
                      measure_ceiling=False, report=True, quiet=True)
    run_dir = run_scenario(load_scenario(path), opts)
    meta = json.loads((run_dir / "meta.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    toy = meta["modes"]["toy"]
    assert meta["complete"] and (toy["kind"], toy["driver_name"], toy["engine"]) == \
        ("toy", "rest", "toy-http")
    m = summary["modes"]["toy"]
    assert list(summary["modes"]) == ["toy"] and summary["baseline"] == "toy"
    assert m["sent"] == m["ok"] + m["failed"] and m["ok"] > 0 and m["failed"] == 0
    assert (run_dir / "report.html").exists() and "toy" in (run_dir / "summary.md").read_text()


def test_protected_rest_sheds_on_its_server_and_brings_its_own_clients(tmp_path):
    """``rest-protected``: the preset's shedding sized for the service's cores, and a client
    block its driver (and no other mode's) runs with."""
    from bench.run import mode_scenario
    from loadgen.scenario import load_scenario
    from services.rest.deployment import expand_preset

    service, client = registry.split_client(registry.settings_for("rest-protected", {}))
    shed = expand_preset(service, (0,))
    assert shed["limit_conn_total"] >= 2 and shed["shed_status"] == 503 and "preset" not in shed
    assert expand_preset({**service, "limit_conn_total": 3}, (0,))["limit_conn_total"] == 3
    assert client["protection"]["breaker"] and client["protection"]["retry_budget"]
    sc = load_scenario("seed-protected")
    assert sc.modes == ("rest", "rest-protected", "stream")
    mine = mode_scenario(sc, "rest-protected", tmp_path / "rest-protected")
    assert mine.client.protection.breaker is not None and mine.client.timeout_s == 5
    assert mine.client.retry == sc.client.retry and mine.source.endswith("scenario.yaml")
    assert mode_scenario(sc, "rest", tmp_path / "rest") is sc
    assert sc.client.protection.breaker is None          # unprotected REST keeps plain clients
