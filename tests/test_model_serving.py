"""Any model behind both deployments, in process: any JSON answer goes out, JSON inputs come in
when the model declares them, and a model that raises, answers the wrong number of inputs or
answers something that is not JSON is named, with the problem, in one line on both sides."""

from __future__ import annotations

import logging

import orjson
import pytest

from services.model.contract import ModelFault
from services.model.plugin import Contracted
from services.model.contract import Contract
from services.rest.app import ERROR_HEADER, create_app
from services.rest.settings import RestSettings
from services.stream.app import REASONS, Limits, Record, process_records

SMALL = RestSettings(max_batch=8, max_text_chars=1000, client_max_body_size="64k")


class Model:
    """A declared model whose answer per input is ``answer(x)``."""

    def __init__(self, answer=lambda x: {"len": len(x)}, *, name="toy", input="text",
                 fields=None, broken=None):
        self.answer, self.broken = answer, broken
        self.info = {"name": name, "version": "0.3", "max_batch": 8, "batch_wait_ms": 1,
                     "input": input, "answer_fields": fields}
        self.calls = 0

    def predict_batch(self, xs):
        self.calls += 1
        if self.broken == "raises" and any(x == "boom" for x in xs):
            raise ZeroDivisionError("division by zero in layer 3")
        out = [self.answer(x) for x in xs]
        if self.broken == "short":
            return out[:-1]
        return out


def rest(model):
    return create_app(model, SMALL).test_client()


def post(c, body):
    return c.post("/predict", data=orjson.dumps(body), content_type="application/json")


def rec(value: dict | bytes, offset: int = 0) -> Record:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return Record(raw, str(offset).encode(), "requests", 0, offset)


# -- answers of any shape --------------------------------------------------------------------------
def test_rest_sends_any_json_answer_under_answer():
    r = post(rest(Model()), {"instances": [{"id": "a", "text": "xy"}, {"id": "b", "text": "xyz"}]})
    assert r.status_code == 200
    assert orjson.loads(r.data) == {"predictions": [{"id": "a", "answer": {"len": 2}},
                                                    {"id": "b", "answer": {"len": 3}}]}


def test_stream_sends_any_json_answer_under_answer():
    m = Model(lambda x: [x, None, 1.5])
    preds, dlq = process_records([rec({"id": "a", "text": "xy", "sent_at": 1.0})],
                                 m.predict_batch, clock=lambda: 2.0)
    assert dlq == []
    assert orjson.loads(preds[0][1]) == {"id": "a", "answer": ["xy", None, 1.5], "sent_at": 1.0,
                                         "served_at": 2.0}


def test_declared_answer_fields_travel_as_fields_on_both_sides():
    m = Model(lambda x: (x.upper(), len(x)), fields=["shout", "n"])
    r = post(rest(m), {"id": "a", "text": "hi"})
    assert orjson.loads(r.data) == {"predictions": [{"id": "a", "shout": "HI", "n": 2}]}
    preds, _ = process_records([rec({"id": "a", "text": "hi"})], m.predict_batch, clock=lambda: 2.0)
    assert orjson.loads(preds[0][1]) == {"id": "a", "shout": "HI", "n": 2, "sent_at": None,
                                         "served_at": 2.0}


def test_a_json_input_model_takes_input_on_both_sides():
    m = Model(lambda x: sum(x["v"]), input="json")
    r = post(rest(m), {"instances": [{"id": "a", "input": {"v": [1, 2]}},
                                     {"id": "b", "text": "not a dict"}]})
    assert r.status_code == 500          # the model got the text too: its failure, named
    r = post(rest(m), {"id": "a", "input": {"v": [1, 2]}})
    assert orjson.loads(r.data) == {"predictions": [{"id": "a", "answer": 3}]}
    for body, what in (({"id": "a", "input": None}, "null"),
                       ({"id": "a", "input": 1, "text": "x"}, "not both")):
        r = post(rest(m), body)
        assert r.status_code == 400 and what in orjson.loads(r.data)["error"]
    preds, dlq = process_records(
        [rec({"id": "a", "input": {"v": [4]}}), rec({"id": "b", "input": None}, 1),
         rec({"id": "c"}, 2), rec({"id": "d", "input": 1, "text": "x"}, 3)], m.predict_batch)
    assert [orjson.loads(v)["answer"] for _k, v in preds] == [4]
    assert [orjson.loads(v)["reason"] for _k, v in dlq] == ["missing_input", "missing_input",
                                                            "bad_input"]
    assert all(orjson.loads(v)["reason"] in REASONS for _k, v in dlq)


def test_a_text_model_keeps_refusing_input_before_the_model():
    m = Model()
    r = post(rest(m), {"id": "a", "input": "x"})
    assert r.status_code == 400 and "'text' is missing" in orjson.loads(r.data)["error"]
    _, dlq = process_records([rec({"id": "a", "input": "x"})], m.predict_batch)
    assert orjson.loads(dlq[0][1])["reason"] == "missing_text" and m.calls == 0


# -- a model that breaks the contract --------------------------------------------------------------
BROKEN = [
    ("raises", Model(broken="raises"), "raised", "raised ZeroDivisionError: division by zero"),
    ("short", Model(broken="short"), "wrong_length", "returned 1 answer for 2 inputs"),
    ("not json", Model(lambda x: {1, 2} if x == "boom" else 1), "not_json",
     "answered set for input 1, which is not JSON"),
    ("numpy", Model(lambda x: __import__("numpy").float32(0.5) if x == "boom" else 1), "not_json",
     "answered float32"),
    ("wrong shape", Model(lambda x: (1, 2, 3) if x == "boom" else (1, 2), fields=["a", "b"]),
     "wrong_shape", "not the 2 parts"),
]


@pytest.mark.parametrize("case,model,problem,says", BROKEN, ids=[b[0] for b in BROKEN])
def test_rest_names_the_model_and_the_problem_in_a_500_and_one_log_line(case, model, problem,
                                                                         says, caplog):
    c = rest(model)
    with caplog.at_level(logging.INFO, logger="services.rest"):
        r = post(c, {"instances": [{"id": "a", "text": "fine"}, {"id": "b", "text": "boom"}]})
    assert r.status_code == 500 and r.headers[ERROR_HEADER] == f"model_error/{problem}"
    doc = orjson.loads(r.data)
    assert set(doc) == {"error"} and "'toy' 0.3" in doc["error"] and says in doc["error"]
    lines = [x.getMessage() for x in caplog.records if x.name == "services.rest"]
    assert len(lines) == 1 and "\n" not in lines[0] and "'toy' 0.3" in lines[0] \
        and says in lines[0]
    assert c.get("/healthz").status_code == 200


@pytest.mark.parametrize("case,model,problem,says", BROKEN, ids=[b[0] for b in BROKEN])
def test_stream_dead_letters_only_the_failed_inputs_naming_model_and_problem(case, model, problem,
                                                                             says, caplog):
    records = [rec({"id": "a", "text": "fine"}, 0), rec({"id": "b", "text": "boom"}, 1)]
    with caplog.at_level(logging.INFO, logger="services.stream"):
        preds, dlq = process_records(records, model.predict_batch, Limits())
    answered = {k for k, _ in preds}
    failed = [orjson.loads(v) for _k, v in dlq]
    # every input accounted for exactly once: answered, or dead-lettered with the reason
    assert len(answered) + len(failed) == 2 and not answered & {f["id"].encode() for f in failed}
    assert failed and all(f["reason"] == "model_error" and f["problem"] in (problem, "wrong_length")
                          and f["model"] == "'toy' 0.3" for f in failed)
    if problem != "wrong_length":      # one input is bad: the other one is answered
        assert answered == {b"a"} and [f["id"] for f in failed] == ["b"]
        assert says in failed[0]["detail"]
    lines = [x.getMessage() for x in caplog.records if x.name == "services.stream"]
    assert len(lines) == 1 and "'toy' 0.3" in lines[0] and "dead-lettered" in lines[0]


def test_a_contracted_user_model_is_named_the_same_way():
    inner = Model(broken="short")
    m = Contracted(inner, Contract.declared(inner.info), {**inner.info})
    with pytest.raises(ModelFault, match="'toy' 0.3 returned 1 answer for 2 inputs"):
        m.predict_batch(["x", "y"])
    r = post(rest(m), {"instances": [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}]})
    assert "'toy' 0.3 returned 1 answer for 2 inputs" in orjson.loads(r.data)["error"]
