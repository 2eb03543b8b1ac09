"""The model artifact: ``model.json`` + ``weights.npz``, safe to load (no pickle, no code).

``model.json`` holds the format tag, the vectorizer and classifier settings, the vocabulary (the
list of terms in feature order) and ``info`` (name, accuracy, data hashes, measured cost, ...).
``weights.npz`` holds three float64 arrays: ``idf`` (n,), ``coef`` (n,), ``intercept`` (1,).
``model.json`` records the sha256 of ``weights.npz``, so a weights file from another training run
or a modified one is rejected. Loading parses JSON, reads the arrays with ``allow_pickle=False``
and checks every field, type and shape: nothing in the files is ever executed.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .data import REPO_ROOT
from .tfidf import TERM_PART, VECTORIZER_PARAMS, TfidfLogisticModel

FORMAT = "rvs-tfidf-logreg"
FORMAT_VERSION = 1
JSON_NAME = "model.json"
WEIGHTS_NAME = "weights.npz"
WEIGHT_KEYS = ("idf", "coef", "intercept")
MAX_JSON_BYTES = 256 << 20

REQUIRED_INFO: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "test_accuracy": float,
    "train_sha256": str,
    "test_sha256": str,
    "n_features": int,
    "train_seconds": float,
    "created_utc": str,
    "sklearn_version": str,
    "cost_us_per_prediction": dict,
}
REQUIRED_COST = ("batch1_median", "batched_median")
#: What the IMDB model declares under the model contract (services/model/contract.py): the
#: largest batch the harness sends (REST's max_batch), Faust's batch timer, (label, score) answers.
#: Its version is the training time and the weights' hash, set when it is loaded.
CONTRACT: dict[str, Any] = {"max_batch": 2000, "batch_wait_ms": 5.0, "input": "text",
                            "answer_fields": ["label", "score"]}


class ModelError(RuntimeError):
    """The model cannot be loaded; the message says what to do."""


class ModelNotFoundError(ModelError):
    pass


class ArtifactError(ModelError):
    """The artifact exists but is malformed, tampered with, or from another format."""


def model_dir() -> Path:
    """Where the artifact lives: ``$RVS_MODEL_DIR`` if set, else ``<repo root>/var/model``."""
    env = os.environ.get("RVS_MODEL_DIR", "").strip()
    return Path(env).expanduser() if env else REPO_ROOT / "var" / "model"


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; the artifact is read by every service
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_artifact(
    out_dir: str | os.PathLike,
    *,
    terms: list[str],
    idf: np.ndarray,
    coef: np.ndarray,
    intercept: float,
    classifier: dict[str, Any],
    info: dict[str, Any],
) -> Path:
    """Write ``weights.npz`` then ``model.json`` (which names the weights' sha256) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    buf = io.BytesIO()
    np.savez(
        buf,
        idf=np.asarray(idf, dtype=np.float64),
        coef=np.asarray(coef, dtype=np.float64).reshape(-1),
        intercept=np.asarray([intercept], dtype=np.float64),
    )
    weights = buf.getvalue()
    _atomic_write(out / WEIGHTS_NAME, weights)
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "info": info,
        "vectorizer": VECTORIZER_PARAMS,
        "classifier": classifier,
        "weights": {"file": WEIGHTS_NAME, "sha256": _sha256_bytes(weights)},
        "vocabulary": list(terms),
    }
    text = json.dumps(doc, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))
    _atomic_write(out / JSON_NAME, text.encode("utf-8"))
    return out


def read_info(art_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Only the ``info`` of an artifact (validated), without building the model."""
    doc, _ = _read_json(Path(art_dir) if art_dir is not None else model_dir())
    return doc["info"]


def load_artifact(art_dir: str | os.PathLike | None = None) -> TfidfLogisticModel:
    """Load and validate the artifact in ``art_dir`` (default: ``model_dir()``)."""
    folder = Path(art_dir) if art_dir is not None else model_dir()
    doc, json_path = _read_json(folder)
    weights_path = folder / WEIGHTS_NAME
    if not weights_path.is_file():
        raise ModelNotFoundError(
            f"{weights_path} is missing (model.json is there): run `make model` to rebuild the artifact"
        )
    bad = _bad(folder)
    data = weights_path.read_bytes()
    if _sha256_bytes(data) != doc["weights"]["sha256"]:
        raise bad(f"{WEIGHTS_NAME} does not match the sha256 recorded in {JSON_NAME} (mixed or modified files)")
    arrays = _read_weights(data, bad)
    terms = doc["vocabulary"]
    n = len(terms)
    for key, shape in (("idf", (n,)), ("coef", (n,)), ("intercept", (1,))):
        a = arrays[key]
        if a.shape != shape:
            raise bad(f"{WEIGHTS_NAME}:{key} has shape {a.shape}, expected {shape} for {n} terms")
        if not np.isfinite(a).all():
            raise bad(f"{WEIGHTS_NAME}:{key} holds non-finite values")
    if (arrays["idf"] < 1.0).any():
        raise bad(f"{WEIGHTS_NAME}:idf has values below 1 (smooth idf is always >= 1)")
    info = dict(doc["info"])
    info["artifact"] = {"dir": str(folder.resolve()), "weights_sha256": doc["weights"]["sha256"]}
    info["classifier"] = doc["classifier"]
    info["transform"] = "lean (same results as sklearn TfidfVectorizer + LogisticRegression)"
    info.update(CONTRACT, version=f"{info['created_utc']} {doc['weights']['sha256'][:12]}")
    return TfidfLogisticModel(
        terms, arrays["idf"], arrays["coef"], float(arrays["intercept"][0]), info=info
    )


def _bad(folder: Path):
    def make(reason: str) -> ArtifactError:
        return ArtifactError(
            f"model artifact in {folder} is invalid: {reason}; rebuild it with `make model`"
        )

    return make


def _read_json(folder: Path) -> tuple[dict[str, Any], Path]:
    path = folder / JSON_NAME
    if not path.is_file():
        raise ModelNotFoundError(
            f"no model artifact at {path}: run `make model` (or set RVS_MODEL_DIR to a folder holding {JSON_NAME} and {WEIGHTS_NAME})"
        )
    bad = _bad(folder)
    if path.stat().st_size > MAX_JSON_BYTES:
        raise bad(f"{JSON_NAME} is larger than {MAX_JSON_BYTES} bytes")

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not allowed")

    try:
        doc = json.loads(path.read_bytes().decode("utf-8"), parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad(f"{JSON_NAME} is not valid UTF-8 JSON ({exc})") from None
    _validate_doc(doc, bad)
    return doc, path


def _is(value: Any, typ: type | tuple[type, ...]) -> bool:
    if typ is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typ)


def _validate_doc(doc: Any, bad) -> None:
    if not isinstance(doc, dict):
        raise bad(f"{JSON_NAME} must hold a JSON object")
    if doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION:
        raise bad(
            f"format is {doc.get('format')!r} v{doc.get('format_version')!r}, expected {FORMAT!r} v{FORMAT_VERSION}"
        )
    for key, typ in (("info", dict), ("vectorizer", dict), ("classifier", dict), ("weights", dict), ("vocabulary", list)):
        if not isinstance(doc.get(key), typ):
            raise bad(f"{JSON_NAME}: '{key}' must be a JSON {typ.__name__.replace('dict', 'object').replace('list', 'array')}")
    if doc["vectorizer"] != VECTORIZER_PARAMS:
        diff = sorted(k for k in set(doc["vectorizer"]) | set(VECTORIZER_PARAMS)
                      if doc["vectorizer"].get(k, "<missing>") != VECTORIZER_PARAMS.get(k, "<missing>"))
        raise bad(f"unsupported vectorizer settings {diff} (this loader implements {VECTORIZER_PARAMS})")
    if doc["classifier"].get("kind") != "logistic_regression" or doc["classifier"].get("classes") != [0, 1]:
        raise bad("classifier must be kind 'logistic_regression' with classes [0, 1]")
    w = doc["weights"]
    if w.get("file") != WEIGHTS_NAME or not (isinstance(w.get("sha256"), str) and len(w["sha256"]) == 64):
        raise bad(f"'weights' must be {{'file': '{WEIGHTS_NAME}', 'sha256': <64 hex chars>}}")
    info = doc["info"]
    for key, typ in REQUIRED_INFO.items():
        if not _is(info.get(key), typ):
            raise bad(f"info.{key} is missing or not a {getattr(typ, '__name__', typ)}")
    cost = info["cost_us_per_prediction"]
    for key in REQUIRED_COST:
        if not (_is(cost.get(key), float) and cost[key] > 0):
            raise bad(f"info.cost_us_per_prediction.{key} is missing or not a positive number")
    terms = doc["vocabulary"]
    if not terms:
        raise bad("the vocabulary is empty")
    if info["n_features"] != len(terms):
        raise bad(f"info.n_features={info['n_features']} but the vocabulary has {len(terms)} terms")
    if not all(type(t) is str for t in terms):
        raise bad("the vocabulary must be a list of strings")
    if len(set(terms)) != len(terms):
        raise bad("the vocabulary has duplicate terms")
    fullmatch = TERM_PART.fullmatch
    for t in terms:
        parts = t.split(" ")
        if len(parts) > 2 or not all(fullmatch(p) for p in parts):
            raise bad(f"vocabulary term {t[:40]!r} is not one or two word tokens")


def _read_weights(data: bytes, bad) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            keys = set(npz.files)
            if keys != set(WEIGHT_KEYS):
                raise bad(f"{WEIGHTS_NAME} holds {sorted(keys)}, expected exactly {list(WEIGHT_KEYS)}")
            arrays = {}
            for key in WEIGHT_KEYS:
                a = npz[key]
                if a.dtype != np.float64:
                    raise bad(f"{WEIGHTS_NAME}:{key} has dtype {a.dtype}, expected float64")
                arrays[key] = a
    except ArtifactError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        # allow_pickle=False makes object arrays raise ValueError here instead of unpickling.
        raise bad(f"{WEIGHTS_NAME} cannot be read as plain numeric arrays ({exc})") from None
    return arrays
