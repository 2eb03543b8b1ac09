"""The model contract (services/model/contract.py, plugin.py): what a model must declare, how a
misbehaving one is named, and that the loader holds a user's model to its max_batch."""

from __future__ import annotations

import sys
import textwrap

import orjson
import pytest

from fixtures.stack import needs_model
from services.model import ModelError, load_model
from services.model.contract import (LEGACY_FIELDS, Contract, ContractError, ModelFault, call,
                                     contract_of)

GOOD_INFO = {"name": "echo", "version": "2.1", "max_batch": 4, "batch_wait_ms": 3}


def test_a_full_declaration_is_read_typed():
    c = Contract.declared({**GOOD_INFO, "input": "json", "answer_fields": ["a", "b"]})
    assert c == Contract("echo", "2.1", 4, 3.0, "json", ("a", "b"))
    assert c.label == "'echo' 2.1"
    assert Contract.declared(GOOD_INFO).answer_fields is None


@pytest.mark.parametrize("change,key", [
    ({"name": ""}, "name"), ({"version": 2}, "version"), ({"version": None}, "version"),
    ({"max_batch": 0}, "max_batch"), ({"max_batch": True}, "max_batch"),
    ({"max_batch": 2.5}, "max_batch"), ({"batch_wait_ms": -1}, "batch_wait_ms"),
    ({"batch_wait_ms": float("nan")}, "batch_wait_ms"), ({"input": "image"}, "input"),
    ({"answer_fields": ["id", "x"]}, "answer_fields"), ({"answer_fields": "label"}, "answer_fields"),
    ({"answer_fields": ["a", "a"]}, "answer_fields"), ({"answer_fields": []}, "answer_fields"),
])
def test_a_missing_or_wrong_declaration_is_one_line_naming_the_key(change, key):
    with pytest.raises(ContractError) as e:
        Contract.declared({**GOOD_INFO, **change}, "model 'x:y'")
    msg = str(e.value)
    assert "\n" not in msg and f"info[{key!r}]" in msg and "model 'x:y'" in msg


def test_info_must_be_json_since_it_goes_into_meta():
    with pytest.raises(ContractError, match="JSON"):
        Contract.declared({**GOOD_INFO, "weights": object()})


def test_a_predictor_that_declares_nothing_is_read_as_label_score():
    assert Contract.of_info({"name": "fake"}).answer_fields == LEGACY_FIELDS
    assert Contract.of_info(None, "Thing").name == "Thing"
    assert Contract.of_info({"answer_fields": None}).answer_fields is None


def test_call_names_what_the_model_did():
    c = Contract("m", "1")

    def raising(xs):
        raise KeyError("vocab")

    with pytest.raises(ModelFault) as e:
        call(raising, c, ["a"])
    assert e.value.problem == "raised" and str(e.value) == "model 'm' 1 raised KeyError: 'vocab'"
    with pytest.raises(ModelFault, match="returned 1 answer for 2 inputs") as e:
        call(lambda xs: [0], c, ["a", "b"])
    assert e.value.problem == "wrong_length"
    with pytest.raises(ModelFault, match="returned dict, not a list") as e:
        call(lambda xs: {"a": 1}, c, ["a"])
    assert e.value.problem == "not_a_list"
    assert call(lambda xs: (1, 2), c, ["a", "b"]) == (1, 2)


def test_a_huge_exception_message_stays_one_short_line():
    def raising(xs):
        raise ValueError("x\n" * 10_000)

    with pytest.raises(ModelFault) as e:
        call(raising, Contract("m"), ["a"])
    assert "\n" not in str(e.value) and len(str(e.value)) < 400


def test_answers_render_as_declared_fields_or_whole():
    ids = ["a", "b"]
    assert Contract("m", answer_fields=("label", "score")).render(ids, [(1, 0.9), [0, 0.1]]) == [
        {"id": "a", "label": 1, "score": 0.9}, {"id": "b", "label": 0, "score": 0.1}]
    assert Contract("m").render(ids, [{"lang": "fr"}, 3]) == [
        {"id": "a", "answer": {"lang": "fr"}}, {"id": "b", "answer": 3}]
    three = Contract("m", answer_fields=("x", "y", "z"))
    assert three.render(["a"], [(1, 2, 3)]) == [{"id": "a", "x": 1, "y": 2, "z": 3}]
    with pytest.raises(ModelFault, match="not the 2 parts") as e:
        Contract("m", answer_fields=("label", "score")).render(ids, [(1, 0.9), "oops"])
    assert e.value.problem == "wrong_shape"


def test_a_non_json_answer_is_found_and_named():
    c = Contract("m", "1")
    answers = [1, {2, 3}]
    try:
        orjson.dumps(answers)
    except orjson.JSONEncodeError as err:
        f = c.not_json(answers, err)
    assert f.problem == "not_json" and "set for input 1" in str(f)


def test_contract_of_reads_a_bound_method_and_caches():
    class M:
        info = {"name": "bound", "version": "3", "answer_fields": None}

        def predict_batch(self, xs):
            return xs

    p = M().predict_batch
    assert contract_of(p) is contract_of(p)
    assert contract_of(p).label == "'bound' 3" and contract_of(p).answer_fields is None

    def bare(xs):
        return xs

    assert contract_of(bare).name == "bare" and contract_of(bare).answer_fields == LEGACY_FIELDS


# -- the loader ----------------------------------------------------------------------------------
@pytest.fixture()
def plug(tmp_path, monkeypatch):
    """A module ``plug_models`` on sys.path with a few factories."""
    (tmp_path / "plug_models.py").write_text(textwrap.dedent("""
        class Echo:
            def __init__(self, info):
                self.info, self.calls = info, []
            def predict_batch(self, xs):
                self.calls.append(len(xs))
                return [{"echo": x} for x in xs]

        def good():
            return Echo({"name": "echo", "version": "2.1", "max_batch": 4, "batch_wait_ms": 3})
        def undeclared():
            return Echo({"name": "echo"})
        def exploding():
            raise RuntimeError("no weights file")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("plug_models", None)


def test_a_user_model_is_split_into_calls_of_at_most_max_batch(plug):
    m = load_model("plug_models:good")
    out = m.predict_batch([str(i) for i in range(10)])
    assert [a["echo"] for a in out] == [str(i) for i in range(10)]
    assert m.model.calls == [4, 4, 2]
    assert m.info["name"] == "echo" and m.info["spec"] == "plug_models:good"
    assert m.info["answer_fields"] is None and m.info["input"] == "text"
    assert contract_of(m.predict_batch).answer_fields is None


def test_a_user_model_that_declares_nothing_is_refused_in_one_line(plug):
    with pytest.raises(ModelError) as e:
        load_model("plug_models:undeclared")
    assert "\n" not in str(e.value) and "info['version']" in str(e.value)
    assert "docs/CONTRACTS.md" in str(e.value)


def test_a_factory_that_raises_is_one_line(plug):
    with pytest.raises(ModelError, match=r"exploding\(\) raised RuntimeError: no weights file"):
        load_model("plug_models:exploding")


@needs_model
def test_the_imdb_model_declares_the_contract():
    m = load_model("imdb-tfidf")
    c = Contract.declared(m.info, "imdb")
    assert c.answer_fields == ("label", "score") and c.max_batch == 2000 and c.input == "text"
    assert m.info["version"].endswith(m.info["artifact"]["weights_sha256"][:12])
