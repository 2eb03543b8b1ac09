"""services/model: data source, artifact safety, predict_batch contract, equality with sklearn.

The tests on the real model use the artifact in RVS_MODEL_DIR (default var/model) if its
train_sha256 matches the data, and train it once (~40 s) if it is missing. They are skipped when
the IMDB data is not there (RVS_DATA_DIR).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.model import (
    ArtifactError,
    DataSourceError,
    ModelError,
    ModelNotFoundError,
    data_dir,
    load_model,
    load_split,
    model_dir,
    sample_reviews,
    sha256_of,
)
from services.model import artifact as artifact_mod
from services.model import data as data_mod
from services.model.bench import measure_ceiling, measure_cost
from services.model.tfidf import TfidfLogisticModel

# --------------------------------------------------------------------------- helpers


def write_csv_gz(path: Path, rows: list[tuple[str, int]], header: str = "text,label") -> None:
    import csv

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    buf.write(header + "\n")
    for text, label in rows:
        w.writerow([text, label])
    path.write_bytes(gzip.compress(buf.getvalue().encode("utf-8")))


POS = ["great film, loved it", "a wonderful and moving story", "brilliant acting, great fun",
       "I loved the music", "superb direction and a great cast", "fun, moving and wonderful"]
NEG = ["terrible film, hated it", "a boring and dull story", "awful acting, no fun at all",
       "I hated the music", "poor direction and a bad cast", "dull, boring and awful"]


def tiny_corpus() -> tuple[list[str], np.ndarray]:
    texts, labels = [], []
    for i in range(8):
        for t in POS:
            texts.append(f"{t} {'very ' * (i % 3)}good x_y {i}")
            labels.append(1)
        for t in NEG:
            texts.append(f"{t} {'really ' * (i % 2)}bad é{i}")
            labels.append(0)
    return texts, np.array(labels)


def tiny_info(n_features: int) -> dict:
    return {
        "name": "imdb-tfidf",
        "test_accuracy": 1.0,
        "train_sha256": "0" * 64,
        "test_sha256": "1" * 64,
        "n_features": n_features,
        "train_seconds": 0.01,
        "created_utc": "2026-01-01T00:00:00Z",
        "sklearn_version": "test",
        "cost_us_per_prediction": {"batch1_median": 10.0, "batched_median": 5.0, "core": 0},
    }


@pytest.fixture(scope="module")
def tiny_fit():
    from services.model.train import fit_vectorizer, make_classifier, to_model

    texts, labels = tiny_corpus()
    vec, X = fit_vectorizer(texts, max_features=500)
    clf = make_classifier(1.0).fit(X, labels)
    return texts, vec, clf, to_model(vec, clf, info=tiny_info(len(vec.vocabulary_)))


@pytest.fixture
def tiny_artifact(tiny_fit, tmp_path) -> Path:
    _, _, _, m = tiny_fit
    out = tmp_path / "model"
    artifact_mod.save_artifact(
        out, terms=m.terms, idf=m.idf, coef=m.coef, intercept=m.intercept,
        classifier={"kind": "logistic_regression", "classes": [0, 1], "C": 1.0, "solver": "liblinear"},
        info=tiny_info(m.n_features),
    )
    return out


def rewrite_json(folder: Path, change) -> None:
    path = folder / "model.json"
    doc = json.loads(path.read_text("utf-8"))
    change(doc)
    path.write_text(json.dumps(doc), "utf-8")


def replace_weights(folder: Path, arrays: dict, *, allow_pickle_payload: bool = False) -> None:
    """Write new weights.npz and record its sha256 in model.json (a consistent but bad artifact)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    (folder / "weights.npz").write_bytes(data)
    import hashlib

    rewrite_json(folder, lambda d: d["weights"].__setitem__("sha256", hashlib.sha256(data).hexdigest()))


# --------------------------------------------------------------------------- data source


def test_data_dir_default_and_env(monkeypatch, tmp_path):
    monkeypatch.delenv("RVS_DATA_DIR", raising=False)
    assert (data_mod.REPO_ROOT / "pyproject.toml").is_file()
    assert data_dir() == data_mod.REPO_ROOT.parent / "shared" / "data" / "imdb"
    monkeypatch.setenv("RVS_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path


def test_missing_data_dir_names_the_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("RVS_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataSourceError) as exc:
        load_split("train")
    msg = str(exc.value)
    assert "\n" not in msg
    assert "RVS_DATA_DIR=" in msg and "make model DATA=" in msg
    assert "train.csv.gz" in msg and "test.csv.gz" in msg and str(tmp_path / "nowhere") in msg


def test_missing_file_and_bad_header(tmp_path):
    write_csv_gz(tmp_path / "train.csv.gz", [("good", 1)])
    with pytest.raises(DataSourceError, match=r"test\.csv\.gz is missing.*RVS_DATA_DIR"):
        load_split("test", tmp_path)
    write_csv_gz(tmp_path / "test.csv.gz", [("good", 1)], header="review,sentiment")
    with pytest.raises(DataSourceError, match="header"):
        load_split("test", tmp_path)
    write_csv_gz(tmp_path / "test.csv.gz", [("good", 7)])
    with pytest.raises(DataSourceError, match="label 0 or 1"):
        load_split("test", tmp_path)
    (tmp_path / "test.csv.gz").write_bytes(b"not gzip")
    with pytest.raises(DataSourceError, match="cannot be read"):
        load_split("test", tmp_path)
    with pytest.raises(ValueError):
        load_split("valid", tmp_path)


def test_load_split_sample_and_hash(tmp_path, monkeypatch):
    rows = [(f'review {i}, with "quotes", commas and <br /> é', i % 2) for i in range(50)]
    write_csv_gz(tmp_path / "test.csv.gz", rows)
    monkeypatch.setenv("RVS_DATA_DIR", str(tmp_path))
    texts, labels = load_split("test")
    assert texts == [r[0] for r in rows]
    assert labels.dtype == np.int64 and labels.tolist() == [r[1] for r in rows]
    a, la = sample_reviews(10, seed=3)
    b, lb = sample_reviews(10, seed=3)
    c, _ = sample_reviews(10, seed=4)
    assert a == b and la.tolist() == lb.tolist() and a != c
    assert len(set(a)) == 10 and all(t in texts for t in a)
    assert [texts.index(t) % 2 for t in a] == la.tolist()
    big, _ = sample_reviews(120, seed=0)  # more than the split: with replacement
    assert len(big) == 120
    import hashlib

    assert sha256_of(tmp_path / "test.csv.gz") == hashlib.sha256((tmp_path / "test.csv.gz").read_bytes()).hexdigest()


# --------------------------------------------------------------------------- artifact


def test_round_trip(tiny_fit, tiny_artifact):
    texts, _, _, m = tiny_fit
    loaded = load_model("imdb-tfidf", model_dir=tiny_artifact)
    assert loaded.predict_batch(texts) == m.predict_batch(texts)
    assert loaded.info["name"] == "imdb-tfidf"
    assert loaded.info["artifact"]["dir"] == str(tiny_artifact.resolve())
    assert set(os.listdir(tiny_artifact)) == {"model.json", "weights.npz"}  # no temp files left
    for name in ("model.json", "weights.npz"):
        assert (tiny_artifact / name).stat().st_mode & 0o044 == 0o044  # readable by service users


def test_default_spec_reads_env(tiny_artifact, monkeypatch):
    monkeypatch.setenv("RVS_MODEL_DIR", str(tiny_artifact))
    monkeypatch.delenv("RVS_MODEL", raising=False)
    assert model_dir() == tiny_artifact
    assert load_model().info["name"] == "imdb-tfidf"
    monkeypatch.setenv("RVS_MODEL", "imdb-tfidf")
    assert load_model().info["name"] == "imdb-tfidf"


def test_np_load_without_pickle(tiny_artifact, monkeypatch):
    calls = []
    real = np.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    load_model("imdb-tfidf", model_dir=tiny_artifact)
    assert calls and all(kw.get("allow_pickle") is False for kw in calls)


def test_missing_artifact_says_make_model(tmp_path):
    with pytest.raises(ModelNotFoundError, match="run `make model`"):
        load_model("imdb-tfidf", model_dir=tmp_path / "empty")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.json").write_text("{}")
    with pytest.raises(ModelError, match="make model"):
        load_model("imdb-tfidf", model_dir=tmp_path / "half")


TAMPERS = {
    "duplicate term": lambda d: d["vocabulary"].__setitem__(1, d["vocabulary"][0]),
    "term with 3 words": lambda d: d["vocabulary"].__setitem__(0, "a bb cc"),
    "term not a string": lambda d: d["vocabulary"].__setitem__(0, 7),
    "fewer terms": lambda d: d["vocabulary"].pop(),
    "accuracy as string": lambda d: d["info"].__setitem__("test_accuracy", "0.99"),
    "missing cost": lambda d: d["info"]["cost_us_per_prediction"].pop("batched_median"),
    "format version": lambda d: d.__setitem__("format_version", 2),
    "trigrams": lambda d: d["vectorizer"].__setitem__("ngram_range", [1, 3]),
    "other classes": lambda d: d["classifier"].__setitem__("classes", [0, 1, 2]),
    "weights file": lambda d: d["weights"].__setitem__("file", "../evil.npz"),
}


@pytest.mark.parametrize("tamper", list(TAMPERS), ids=list(TAMPERS))
def test_tampered_json_is_rejected(tiny_artifact, tamper):
    rewrite_json(tiny_artifact, TAMPERS[tamper])
    with pytest.raises(ArtifactError, match="invalid.*make model"):
        load_model("imdb-tfidf", model_dir=tiny_artifact)


def test_broken_json_is_rejected(tiny_artifact):
    p = tiny_artifact / "model.json"
    p.write_text(p.read_text("utf-8")[:-10], "utf-8")
    with pytest.raises(ArtifactError, match="not valid UTF-8 JSON"):
        load_model("imdb-tfidf", model_dir=tiny_artifact)
    p.write_text('{"format": NaN}', "utf-8")
    with pytest.raises(ArtifactError):
        load_model("imdb-tfidf", model_dir=tiny_artifact)


def test_modified_or_mismatched_weights_are_rejected(tiny_artifact, tiny_fit):
    w = tiny_artifact / "weights.npz"
    data = bytearray(w.read_bytes())
    data[-100] ^= 1
    w.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        load_model("imdb-tfidf", model_dir=tiny_artifact)

    m = tiny_fit[3]
    n = m.n_features
    good = {"idf": m.idf, "coef": m.coef, "intercept": np.array([m.intercept])}
    for bad, match in [
        ({**good, "coef": m.coef[:-1]}, "shape"),
        ({**good, "coef": m.coef.astype(np.float32)}, "dtype"),
        ({**good, "intercept": np.array([np.nan])}, "non-finite"),
        ({**good, "idf": np.zeros(n)}, "below 1"),
        ({**good, "extra": np.zeros(1)}, "expected exactly"),
    ]:
        replace_weights(tiny_artifact, bad)
        with pytest.raises(ArtifactError, match=match):
            load_model("imdb-tfidf", model_dir=tiny_artifact)
    replace_weights(tiny_artifact, good)
    assert load_model("imdb-tfidf", model_dir=tiny_artifact).predict_batch(["great"])


class _Payload:
    """Unpickling this would create a file: the loader must never do it."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_pickled_weights_are_never_executed(tiny_artifact, tiny_fit, tmp_path):
    marker = tmp_path / "pwned"
    m = tiny_fit[3]
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload(str(marker))
    replace_weights(tiny_artifact, {"idf": m.idf, "coef": evil, "intercept": np.array([m.intercept])})
    with zipfile.ZipFile(tiny_artifact / "weights.npz") as z:  # the payload really is in there
        assert b"pwned" in z.read("coef.npy")
    with pytest.raises(ArtifactError, match="plain numeric arrays"):
        load_model("imdb-tfidf", model_dir=tiny_artifact)
    assert not marker.exists()


# --------------------------------------------------------------------------- load_model specs


def test_factory_spec(tmp_path, monkeypatch):
    (tmp_path / "my_plug_model.py").write_text(
        "class M:\n"
        "    info = {'name': 'const', 'version': '1', 'max_batch': 8, 'batch_wait_ms': 0}\n"
        "    def predict_batch(self, texts):\n"
        "        return [(1, 0.75) for _ in texts]\n"
        "def make():\n    return M()\n"
        "def broken():\n    return object()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    m = load_model("my_plug_model:make")
    assert m.info["name"] == "const" and m.predict_batch(["x"]) == [(1, 0.75)]
    monkeypatch.setenv("RVS_MODEL", "my_plug_model:make")
    assert load_model().info["name"] == "const"
    with pytest.raises(ModelError, match="predict_batch"):
        load_model("my_plug_model:broken")
    with pytest.raises(ModelError, match="no callable"):
        load_model("my_plug_model:nothing")
    with pytest.raises(ModelError, match="cannot import"):
        load_model("no_such_module_xyz:make")
    with pytest.raises(ModelError, match="unknown model"):
        load_model("imdb-bert")
    sys.modules.pop("my_plug_model", None)


# --------------------------------------------------------------------------- predict_batch


def test_predict_batch_types(tiny_fit):
    texts, _, _, m = tiny_fit
    assert m.predict_batch([]) == []
    out = m.predict_batch(texts[:5] + ["", "!!!", "a b c"])
    assert isinstance(out, list) and len(out) == 8
    for label, score in out:
        assert type(label) is int and label in (0, 1)
        assert type(score) is float and 0.0 <= score <= 1.0
        assert label == int(score > 0.5)
    with pytest.raises(TypeError, match="item 1 is bytes"):
        m.predict_batch(["ok", b"bytes"])
    with pytest.raises(TypeError, match="item 0 is NoneType"):
        m.predict_batch([None])


def assert_same_as_sklearn(model: TfidfLogisticModel, texts: list[str], vec=None, clf=None) -> None:
    if vec is None:
        vec, clf = model.to_sklearn()
    ref = clf.predict_proba(vec.transform(texts))[:, 1]
    ref_label = clf.predict(vec.transform(texts))
    got = model.predict_batch(texts)
    assert [g[0] for g in got] == ref_label.tolist()
    diff = np.abs(np.array([g[1] for g in got]) - ref)
    assert diff.max(initial=0.0) <= 1e-12, (diff.max(), texts[int(diff.argmax())])


WORDS = ["great", "film", "loved", "it", "boring", "dull", "x_y", "a", "I", "é1", "GREAT", "Loved",
         "fun", "no", "at", "all", "ß", "İstanbul", "naïve", "2", "42", "_", "__", "über"]
SEPS = [" ", "  ", ", ", ".", "-", "'", "\t", "\n", "<br />", "!", "é", "\u00a0", "\u2019", "_"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(SEPS)), max_size=30), st.text(max_size=20))
def test_tokenizer_matches_sklearn_on_any_text(tiny_fit, parts, noise):
    _, vec, clf, m = tiny_fit
    text = "".join(w + s for w, s in parts) + noise
    assert_same_as_sklearn(m, [text], vec, clf)  # the one-review path
    assert_same_as_sklearn(m, [text, noise, text[::-1]], vec, clf)  # the batch path


def test_tiny_model_same_as_sklearn_and_batch_invariant(tiny_fit):
    texts, vec, clf, m = tiny_fit
    extra = ["", "   ", "a", "I I I", "GREAT great Great", "loved-it", "x_y x_y_z", "é1é1", "\u00e9\u00e9 film"]
    assert_same_as_sklearn(m, texts + extra, vec, clf)
    batched = m.predict_batch(texts + extra)
    assert batched == [m.predict_batch([t])[0] for t in texts + extra]


# --------------------------------------------------------------------------- bench


def test_measure_cost_and_ceiling(tiny_fit):
    texts, _, _, m = tiny_fit
    before = os.sched_getaffinity(0)
    core = min(before)
    cost = measure_cost(m, texts, core=core, n_single=50, batch_size=16, n_batches=4)
    assert cost["batch1_median"] > 0 and cost["batched_median"] > 0 and cost["core"] == core
    ceil = measure_ceiling(m, texts, [core], seconds=0.05, batch_sizes=(16, 64))
    assert ceil["batch1_reviews_per_s"] > 0 and ceil["batched_reviews_per_s"] > 0
    assert ceil["best_batch"] in (16, 64) and ceil["cpus"] == [core]
    assert os.sched_getaffinity(0) == before
    if len(before) >= 2:
        two = sorted(before)[:2]
        ceil2 = measure_ceiling(m, texts, two, seconds=0.05, batch_sizes=(16,))
        assert ceil2["processes"] == 2 and ceil2["batched_reviews_per_s"] > 0
        assert os.sched_getaffinity(0) == before


# --------------------------------------------------------------------------- the real model


def _have_data() -> bool:
    try:
        data_mod.split_path("train")
        data_mod.split_path("test")
    except DataSourceError:
        return False
    return True


needs_data = pytest.mark.skipif(not _have_data(), reason="IMDB data not found (set RVS_DATA_DIR)")


@pytest.fixture(scope="session")
def real_model():
    folder = model_dir()
    if not (folder / "model.json").is_file():
        from services.model.train import train

        train(out_dir=folder)  # ~40 s, once; later sessions reuse it
    return load_model("imdb-tfidf", model_dir=folder)


@needs_data
def test_real_artifact_metadata(real_model):
    info = real_model.info
    assert info["train_sha256"] == sha256_of(data_mod.split_path("train")), (
        "the artifact was trained on other data: rebuild it with `make model`"
    )
    assert info["test_sha256"] == sha256_of(data_mod.split_path("test"))
    assert info["test_accuracy"] >= 0.88
    assert info["n_features"] == real_model.n_features == 200_000
    cost = info["cost_us_per_prediction"]
    assert cost["batch1_median"] > 0 and cost["batched_median"] > 0 and isinstance(cost["core"], int)
    assert info["train_seconds"] < 180
    assert info["sklearn_agreement"]["test_label_differences"] == 0


@needs_data
def test_real_model_accuracy_on_test_split(real_model):
    texts, labels = load_split("test")
    got = real_model.predict_batch(texts)
    acc = float(np.mean(np.array([g[0] for g in got]) == labels))
    assert acc == pytest.approx(real_model.info["test_accuracy"], abs=1e-5)
    assert acc >= 0.88


@needs_data
def test_real_model_same_as_sklearn(real_model):
    texts, _ = sample_reviews(300, seed=11)
    texts += ["", "!!!", "Ünïcödé ÉLAN naïve café", "a " * 50, "the the the movie movie", "10/10 A+ _x_"]
    assert_same_as_sklearn(real_model, texts)


@needs_data
def test_real_model_batch_invariant(real_model):
    texts, _ = sample_reviews(200, seed=12)
    whole = real_model.predict_batch(texts)
    assert whole == [real_model.predict_batch([t])[0] for t in texts]
    assert whole == real_model.predict_batch(texts[:7]) + real_model.predict_batch(texts[7:])
