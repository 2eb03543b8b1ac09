"""Bring your own payloads (loadgen/payload_file.py, the payload: block, loadgen/payloads.py):
files read, sampled deterministically and hashed; bad files refused in one line; any JSON
answer accepted by the drivers' checks."""

from __future__ import annotations

import gzip
import hashlib
import json

import orjson
import pandas as pd
import pytest

from loadgen.payload_file import PayloadError, load, main, read_inputs
from loadgen.payloads import (Payloads, check_rest_answer, check_stream_answer, dlq_failure,
                              load_texts, rest_failure)
from loadgen.scenario import FilePayload, ScenarioError, parse_scenario

TEXTS = [f"review number {i}, rather {'good' if i % 2 else 'dull'}" for i in range(40)]


def jsonl(tmp_path, rows, name="p.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def one_line(e: pytest.ExceptionInfo, *words: str) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


# -- reading ---------------------------------------------------------------------------------------
def test_jsonl_text_field_is_read_and_hashed(tmp_path):
    p = jsonl(tmp_path, [{"text": t, "lang": "en"} for t in TEXTS])
    inputs, src = read_inputs(p)
    assert inputs == TEXTS and src.rows == 40 and src.format == "jsonl" and src.inputs == "text"
    assert src.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()


def test_sampling_is_deterministic_and_covers_a_small_file(tmp_path):
    p = jsonl(tmp_path, [{"text": t} for t in TEXTS])
    a, src = load(p, "text", 10, seed=3)
    assert a == load(p, "text", 10, seed=3)[0] and a != load(p, "text", 10, seed=4)[0]
    assert len(set(a)) == 10 and src.sampled == 10 and src.seed == 3
    everything, src = load(p, "text", 1000, seed=3)
    assert sorted(everything) == sorted(TEXTS) and src.sampled == 40   # each row once


def test_whole_rows_and_non_text_values_are_json_inputs(tmp_path):
    p = jsonl(tmp_path, [{"x": i, "tags": ["a"]} for i in range(5)])
    inputs, src = read_inputs(p, "*")
    assert inputs[2] == {"x": 2, "tags": ["a"]} and src.inputs == "json"
    q = jsonl(tmp_path, [{"v": [i, i]} for i in range(3)], "q.jsonl")
    assert read_inputs(q, "v")[0] == [[0, 0], [1, 1], [2, 2]]


def test_csv_with_a_named_column_gzipped_too(tmp_path):
    df = pd.DataFrame({"review": TEXTS, "stars": range(40)})
    p = tmp_path / "p.csv"
    df.to_csv(p, index=False)
    assert read_inputs(p, "review")[0] == TEXTS
    rows, src = read_inputs(p, "*")
    assert rows[0] == {"review": TEXTS[0], "stars": "0"} and src.inputs == "json"
    g = tmp_path / "p.csv.gz"
    g.write_bytes(gzip.compress(p.read_bytes()))
    inputs, src = read_inputs(g, "review")
    assert inputs == TEXTS and src.compressed


def test_parquet_text_and_numbers(tmp_path):
    p = tmp_path / "p.parquet"
    pd.DataFrame({"text": TEXTS, "n": range(40)}).to_parquet(p)
    assert read_inputs(p)[0] == TEXTS
    nums, src = read_inputs(p, "n")
    assert nums[:3] == [0, 1, 2] and src.inputs == "json" and src.format == "parquet"
    assert read_inputs(p, "*")[0][1] == {"text": TEXTS[1], "n": 1}


# -- bad files: one line each -----------------------------------------------------------------------
def test_a_missing_column_names_the_columns_there(tmp_path):
    p = tmp_path / "p.csv"
    pd.DataFrame({"review": TEXTS}).to_csv(p, index=False)
    with pytest.raises(PayloadError) as e:
        read_inputs(p)
    one_line(e, str(p), "no column 'text'", "review", "PAYLOAD_COLUMN")
    q = tmp_path / "p.parquet"
    pd.DataFrame({"review": TEXTS}).to_parquet(q)
    with pytest.raises(PayloadError) as e:
        read_inputs(q)
    one_line(e, "no column 'text'", "review")
    with pytest.raises(PayloadError) as e:
        read_inputs(jsonl(tmp_path, [{"body": "x"}]))
    one_line(e, "line 1 has no 'text'", "body")


@pytest.mark.parametrize("name,content,words", [
    ("empty.jsonl", b"", ["has no rows"]),
    ("blank.jsonl", b"\n\n  \n", ["has no rows"]),
    ("header.csv", b"text\n", ["has no rows"]),
    ("latin1.csv", "text\ncaf\u00e9 cr\u00e8me\n".encode("latin-1"), ["not UTF-8", "byte 0xe9",
                                                                  "line 2"]),
    ("p.txt", b"hello\n", ["unknown format '.txt'", ".jsonl"]),
    ("p.jsonl", b'{"text": "ok"}\n{"text": \n', ["line 2 is not JSON"]),
    ("p2.jsonl", b'{"text": "ok"}\n["text"]\n', ["line 2 is a JSON list"]),
    ("blanktext.jsonl", b'{"text": "ok"}\n{"text": "   "}\n', ["line 2", "'text' is empty"]),
    ("null.jsonl", b'{"text": null}\n', ["line 1", "'text' is null"]),
    ("ragged.csv", b"text,n\nok,1\nbad\n", ["line 3 has 1 fields"]),
    ("broken.parquet", b"PAR1 not really", ["not a readable parquet file"]),
])
def test_a_bad_file_is_one_clear_line(tmp_path, name, content, words):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(PayloadError) as e:
        read_inputs(p)
    one_line(e, str(p), *words)


def test_a_missing_file_and_the_check_command(tmp_path, capsys):
    with pytest.raises(PayloadError) as e:
        read_inputs(tmp_path / "nope.jsonl")
    one_line(e, "no such file")
    assert main(["check", str(tmp_path / "nope.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: payload file")
    p = jsonl(tmp_path, [{"text": t} for t in TEXTS])
    assert main(["check", str(p)]) == 0
    assert "40 rows of text input" in capsys.readouterr().out


# -- the payload: block and RVS_PAYLOAD ----------------------------------------------------------
def scenario(payload: dict | None = None) -> dict:
    return {"name": "t", "description": "t", **({"payload": payload} if payload else {}),
            "arrival": {"open": {"rate": {"shape": "constant", "ops_per_s": 5}}},
            "timing": {"warmup_s": 0, "duration_s": 1, "drain_s": 1}}


def test_a_scenario_names_a_file_and_the_run_records_it(tmp_path, monkeypatch):
    monkeypatch.delenv("RVS_PAYLOAD", raising=False)
    p = jsonl(tmp_path, [{"body": t} for t in TEXTS])
    monkeypatch.chdir(tmp_path)
    sc = parse_scenario(scenario({"source": "file", "path": "p.jsonl", "column": "body",
                                  "sample": 5, "seed": 2}))
    assert isinstance(sc.payload, FilePayload) and sc.payload.path == str(p)
    d = sc.to_dict()["payload"]
    assert d["source"] == "file" and d["path"] == str(p) and d["column"] == "body"
    assert parse_scenario(sc.to_dict()).payload == sc.payload          # the resolved copy
    texts = load_texts(sc.payload)
    assert len(texts) == 5 and set(texts) <= set(TEXTS)
    desc = Payloads(texts, 1, "run-1").describe()
    assert desc["source"]["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()
    assert desc["source"]["column"] == "body" and desc["source"]["sampled"] == 5


def test_rvs_payload_overrides_every_scenario_keeping_sample_and_seed(tmp_path, monkeypatch):
    p = jsonl(tmp_path, [{"body": t} for t in TEXTS])
    monkeypatch.setenv("RVS_PAYLOAD", str(p))
    monkeypatch.setenv("RVS_PAYLOAD_COLUMN", "body")
    sc = parse_scenario(scenario({"source": "imdb", "sample": 7, "seed": 9}))
    assert sc.payload == FilePayload(source="file", sample=7, seed=9, path=str(p), column="body")
    monkeypatch.delenv("RVS_PAYLOAD_COLUMN")
    assert parse_scenario(scenario()).payload.column == "text"


def test_the_payload_block_refuses_file_keys_elsewhere_and_a_file_without_path(monkeypatch):
    monkeypatch.delenv("RVS_PAYLOAD", raising=False)
    with pytest.raises(ScenarioError, match="payload.path.*source: file only"):
        parse_scenario(scenario({"source": "imdb", "path": "x.csv"}))
    with pytest.raises(ScenarioError, match="payload.path.*needs the path"):
        parse_scenario(scenario({"source": "file"}))


# -- what goes out, and the answer checks ------------------------------------------------------
def test_json_inputs_go_out_as_input_on_both_sides():
    p = Payloads([{"v": 1}, "a text"], 1, "run-1")
    assert orjson.loads(p.rest_body(0)) == {"id": "run-1-0", "input": {"v": 1}}
    assert orjson.loads(p.rest_body(1)) == {"id": "run-1-1", "text": "a text"}
    assert orjson.loads(p.event_value("run-1-0", 0, 1.5)) == {"id": "run-1-0", "input": {"v": 1},
                                                              "sent_at": 1.5}
    assert p.describe()["inputs"] == "mixed"
    b = Payloads([[1, 2], [3]], 2, "run-1")
    assert orjson.loads(b.rest_body(0))["instances"] == [{"id": "run-1-0.0", "input": [1, 2]},
                                                         {"id": "run-1-0.1", "input": [3]}]


def test_text_payloads_hash_as_before():
    texts = ["a", "b"]
    assert Payloads(texts, 1, "r").sha256 == hashlib.sha256(b"a\0b").hexdigest()


def test_any_json_answer_passes_the_checks_each_id_exactly_once():
    ids = ["a", "b"]
    body = orjson.dumps({"predictions": [{"id": "a", "answer": {"lang": "fr"}},
                                         {"id": "b", "answer": None}]})
    assert check_rest_answer(body, ids) is None
    dup = orjson.dumps({"predictions": [{"id": "a", "answer": 1}, {"id": "a", "answer": 1}]})
    assert "do not match" in check_rest_answer(dup, ids)
    bare = orjson.dumps({"predictions": [{"id": "a"}, {"id": "b", "answer": 1}]})
    assert "no answer" in check_rest_answer(bare, ids)
    err = orjson.dumps({"predictions": [{"id": "a", "error": "x"}, {"id": "b", "answer": 1}]})
    assert "error" in check_rest_answer(err, ids)
    assert check_stream_answer(b'{"id":"a","answer":"fr","sent_at":1,"served_at":2}')
    assert check_stream_answer(b'{"id":"a","answer":null,"served_at":2}')
    assert not check_stream_answer(b'{"id":"a","text":"x","sent_at":1}')   # an echo
    assert not check_stream_answer(b'{"id":"a","error":"model failed"}')
    assert not check_stream_answer(b'{"answer":1}')


def test_failure_reasons_a_driver_can_count():
    assert rest_failure(500, {"X-RVS-Error": "model_error/wrong_length"}) == \
        "model_error/wrong_length"
    assert rest_failure(502, {}) is None and rest_failure(200, {"X-RVS-Error": "x"}) is None
    rec = orjson.dumps({"reason": "model_error", "problem": "not_json", "id": "r-1"})
    assert dlq_failure(rec) == ("r-1", "model_error/not_json")
    assert dlq_failure(orjson.dumps({"reason": "empty_text", "id": "r-2"})) == ("r-2",
                                                                                "empty_text")
    assert dlq_failure(orjson.dumps({"reason": "not_json", "id": None})) is None
    assert dlq_failure(b"garbage") is None
