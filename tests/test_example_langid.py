"""The example model that is not the IMDB one (examples/langid): reproducible from its corpus,
accurate on its held-out sentences, held to the contract, served by both deployments in process."""

from __future__ import annotations

import json

import orjson

from examples.langid import PARAMS, build
from examples.langid.fit import CORPUS, dumps, fit
from loadgen.payload_file import read_inputs
from services.model import Contract, load_model
from services.rest.app import create_app
from services.stream.app import Record, process_records

SPEC = "examples.langid:build"


def corpus(split: str) -> list[dict]:
    rows = [json.loads(x) for x in CORPUS.read_text("utf-8").splitlines() if x.strip()]
    return [r for r in rows if r["split"] == split]


def test_the_shipped_parameters_are_what_the_corpus_fits_to():
    assert dumps(fit()) == PARAMS.read_bytes()


def test_it_names_the_language_of_held_out_sentences():
    m = load_model(SPEC)
    test = corpus("test")
    answers = m.predict_batch([r["text"] for r in test])
    hits = sum(a["lang"] == r["lang"] for a, r in zip(answers, test))
    assert hits / len(test) >= 0.9 and len(test) == 35
    assert m.info["test_accuracy"] == round(hits / len(test), 4)
    assert all(0 < a["p"] <= 1 for a in answers)


def test_it_declares_the_contract_and_answers_json_objects():
    m = load_model(SPEC)
    c = Contract.declared(m.info, SPEC)
    assert (c.name, c.max_batch, c.input, c.answer_fields) == ("langid-trigram-nb", 512, "text",
                                                                None)
    assert c.version.endswith(m.info["params_sha256"][:12])
    out = m.predict_batch(["Das ist ein kleiner Test.", "Ceci est un petit essai."] * 300)
    assert len(out) == 600 and out[:2] == [{"lang": "de", "p": out[0]["p"]},
                                           {"lang": "fr", "p": out[1]["p"]}]
    orjson.dumps(out)
    assert build().info["name"] == c.name


def test_both_deployments_serve_it_with_its_corpus_as_the_payload():
    m = load_model(SPEC)
    texts, src = read_inputs(CORPUS)
    assert src.rows == 147 and src.inputs == "text"
    c = create_app(m).test_client()
    r = c.post("/predict", data=orjson.dumps({"instances": [{"id": "a", "text": texts[0]},
                                                            {"id": "b", "text": texts[-1]}]}),
               content_type="application/json")
    assert r.status_code == 200
    preds = orjson.loads(r.data)["predictions"]
    assert [p["answer"]["lang"] for p in preds] == ["en", "pt"]
    recs = [Record(orjson.dumps({"id": f"e{i}", "text": t}), None, "requests", 0, i)
            for i, t in enumerate(texts[:25])]
    answers, dlq = process_records(recs, m.predict_batch)
    assert dlq == [] and len(answers) == 25
    assert {orjson.loads(v)["answer"]["lang"] for _k, v in answers} == {"en", "fr"}
