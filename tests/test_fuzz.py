"""Bad input, fuzzed (issue 7): no 500, no dead worker, no hang; each bad message dead-lettered.

- schemathesis against the OpenAPI description the app serves (``GET /openapi.json``): bodies the
  schema calls valid must get a 200 matching the schema, the others a 4xx, nothing a 5xx; first
  in-process (WSGI, the real model), then through the real nginx + uWSGI.
- hypothesis with the hostile payloads of ``fixtures/hostile.py`` (wrong types, deep nesting, huge
  strings, invalid UTF-8, empty and oversized batches, ...): the REST side answers each with a JSON
  4xx and never calls the model; the stream side dead-letters each one with a reason, keyed so it
  can be found, and keeps serving.

The apps run with small limits (a batch of 8, texts of 300 characters) so that the boundaries are
reachable within the budget; the schema is rendered from the same settings, so it says so too.
Budget: fixed example counts, 25-32 s together on 2 cores (printed at the end of a run); the
seed is in the header and on every failure (tests/conftest.py).
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import orjson
import pytest
from hypothesis import given, seed
from hypothesis import strategies as st

from services.rest.app import create_app
from services.rest.openapi import spec
from services.rest.settings import RestSettings

sys.path.insert(0, str(Path(__file__).parent))
from fixtures.hostile import FUZZ_SEED, Case, Limits, fuzz, hostile  # noqa: E402
from fixtures.stack import needs_model  # noqa: E402

pytestmark = pytest.mark.fuzz

REST = RestSettings(max_batch=8, max_text_chars=300, max_id_chars=32, client_max_body_size="64k",
                    processes=2)
REST_LIMITS = Limits(max_text_chars=REST.max_text_chars, max_batch=REST.max_batch)


class CountingPredictor:
    """Unit tests only: counts model calls, so a hostile body provably never reached the model."""

    info = {"name": "counting-test-predictor"}

    def __init__(self) -> None:
        self.calls = 0

    def predict_batch(self, texts):
        self.calls += 1
        return [(1, 0.5) for _ in texts]


def _error_json(status: int, data: bytes, ctype: str) -> str:
    assert ctype.startswith("application/json"), (status, ctype, data[:200])
    doc = orjson.loads(data)
    assert set(doc) == {"error"} and isinstance(doc["error"], str) and doc["error"], doc
    return doc["error"]


def _schemathesis_config():
    from schemathesis.config import SchemathesisConfig
    return SchemathesisConfig.from_dict({"seed": FUZZ_SEED})


def _run_schemathesis(schema, *, positive: int, negative: int, shrink: bool = True,
                      **call_kw) -> None:
    """Drive POST /predict with schema-valid and schema-invalid bodies; every default check
    (no 5xx, status/content-type/body conformance, valid accepted, invalid rejected) applies."""
    from schemathesis import GenerationMode

    op = schema["/predict"]["POST"]
    for mode, n in ((GenerationMode.POSITIVE, positive), (GenerationMode.NEGATIVE, negative)):
        @fuzz(n, shrink=shrink)
        @seed(FUZZ_SEED)
        @given(case=op.as_strategy(generation_mode=mode))
        def run(case):
            case.call_and_validate(**call_kw)
        run()


# -- the OpenAPI description ---------------------------------------------------------------------

def test_openapi_is_served_and_carries_the_apps_limits():
    app = create_app(CountingPredictor(), REST)
    r = app.test_client().get("/openapi.json")
    assert r.status_code == 200 and r.mimetype == "application/json"
    doc = orjson.loads(r.data)
    assert doc == orjson.loads(orjson.dumps(spec(REST)))
    review = doc["components"]["schemas"]["Review"]["properties"]
    assert review["text"]["maxLength"] == 300 and review["id"]["oneOf"][0]["maxLength"] == 32
    assert doc["components"]["schemas"]["Batch"]["properties"]["instances"]["maxItems"] == 8
    assert str(REST.max_body_bytes) in doc["paths"]["/predict"]["post"]["requestBody"][
        "description"]


def test_openapi_blank_text_pattern_agrees_with_the_app():
    """The schema's "non-blank" pattern is the app's str.isspace, character for character."""
    import re

    from services.rest.openapi import non_blank_pattern
    rx = re.compile(non_blank_pattern())
    for c in map(chr, range(0x3100)):
        assert bool(rx.fullmatch(c)) == (not c.isspace()), hex(ord(c))


@needs_model
def test_schemathesis_in_process_real_model():
    import schemathesis

    app = create_app(None, REST)
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app, config=_schemathesis_config())
    _run_schemathesis(schema, positive=40, negative=80)


# -- hostile payloads, REST in-process -----------------------------------------------------------

@fuzz(300)
@seed(FUZZ_SEED)
@given(case=hostile(REST_LIMITS))
def test_hostile_bodies_get_a_json_4xx_and_never_reach_the_model(case: Case):
    model = CountingPredictor()
    c = create_app(model, REST).test_client()
    r = c.post("/predict", data=case.raw, content_type="application/json")
    assert r.status_code in (400, 413), (r.status_code, r.data[:300])
    msg = _error_json(r.status_code, r.data, r.content_type)
    assert len(msg) < 1000  # a huge input is not echoed back
    assert model.calls == 0
    assert c.get("/healthz").status_code == 200


# -- the real stacks -----------------------------------------------------------------------------

@pytest.mark.stack
@needs_model
def test_stack_rest_fuzz_through_nginx_and_uwsgi(tmp_path):
    """schemathesis and the hostile payloads through nginx -> uWSGI: no 5xx, no hang (10 s per
    request), the same two workers alive before and after."""
    import http.client

    import schemathesis

    from services.procs import Supervisor
    from services.rest.launch import start

    cpus = sorted(os.sched_getaffinity(0))[:1]
    with Supervisor(tmp_path / "logs") as sup:
        ep = start(sup, REST, tmp_path / "run", cpus=cpus)
        workers = sorted(ep.worker_pids())
        assert len(workers) == 2
        schema = schemathesis.openapi.from_url(f"{ep.url}/openapi.json",
                                               config=_schemathesis_config())
        _run_schemathesis(schema, positive=25, negative=40, shrink=False, base_url=ep.url,
                          timeout=10)

        port = int(ep.url.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

        @fuzz(80, shrink=False)
        @seed(FUZZ_SEED)
        @given(case=hostile(REST_LIMITS))
        def through_nginx(case: Case) -> None:
            conn.request("POST", "/predict", body=case.raw,
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            assert r.status in (400, 413), (r.status, data[:300])
            _error_json(r.status, data, r.getheader("Content-Type", ""))
            if r.getheader("Connection", "").lower() == "close":
                conn.close()

        through_nginx()
        assert sorted(ep.worker_pids()) == workers, "a uWSGI worker died or was replaced"
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200


@pytest.mark.stack
@needs_model
def test_stack_stream_every_hostile_message_is_dead_lettered_with_a_reason(stream_stack):
    """The same hostile payloads as raw ``requests`` messages, 20 to 60 per example: each one
    is in ``requests.dlq`` (found by its key) with a known reason and its original bytes, and the
    worker still answers a good request afterwards."""
    import base64

    from services.stream.app import DLQ_ORIGINAL_MAX_BYTES, REASONS

    c, ep = stream_stack["client"], stream_stack["ep"]
    limits = Limits(max_text_chars=stream_stack["settings"].max_text_chars, max_batch=8)

    @fuzz(10, shrink=False)
    @seed(FUZZ_SEED)
    @given(cases=st.lists(hostile(limits), min_size=20, max_size=60))
    def dead_lettered(cases: list[Case]) -> None:
        tag = uuid.uuid4().hex[:8]
        keys = {f"fuzz-{tag}-{i}": case for i, case in enumerate(cases)}
        for k, case in keys.items():
            c.send_raw(case.raw, key=k.encode())
        good = f"fuzz-good-{tag}"
        c.send(good, "A wonderful, moving film with a great cast.")
        c.flush()
        assert not c.wait_for([good], timeout=15), "the worker stopped answering"
        got = c.wait_dlq_keys(keys, timeout=10)
        missing = set(keys) - set(got)
        assert not missing, [keys[k] for k in sorted(missing)]
        for k, d in got.items():
            assert d["reason"] in REASONS and d["reason"] != "model_error", (keys[k], d)
            raw = keys[k].raw
            assert base64.b64decode(d["original"]) == raw[:DLQ_ORIGINAL_MAX_BYTES]
            assert d["original_size"] == len(raw)
        assert good not in {d.get("key") for d in c.dlq}

    dead_lettered()
    assert all(p.alive() for p in ep.procs), "a Faust worker died"

