"""Train the IMDB sentiment model and write the artifact.

    python -m services.model.train [--data DIR] [--out DIR]

TF-IDF word 1-2-grams (200k features, sublinear tf) + logistic regression (liblinear), C chosen
by 3-fold cross-validation on the train split only; evaluated on the 25k test split with the
serving code (services/model/tfidf.py), checked against sklearn's own predictions, and its cost
per prediction measured on one core. Needs ~40 s and ~1.5 GB on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import data as data_mod
from .artifact import load_artifact, model_dir, save_artifact
from .bench import measure_cost
from .tfidf import TfidfLogisticModel

NAME = "imdb-tfidf"
MAX_FEATURES = 200_000
C_GRID = (3.0, 10.0, 30.0, 100.0)
SEED = 0


def log(msg: str) -> None:
    print(f"[train] {msg}", flush=True)


def fit_vectorizer(texts: list[str], max_features: int = MAX_FEATURES):
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(ngram_range=(1, 2), max_features=max_features, sublinear_tf=True, dtype=np.float64)
    return vec, vec.fit_transform(texts)


def make_classifier(C: float):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, solver="liblinear", max_iter=1000, random_state=SEED)


def choose_C(X, y: np.ndarray, grid=C_GRID, folds: int = 3) -> tuple[float, dict[str, float]]:
    """C with the best mean accuracy over stratified folds of the TRAIN split (test is never used)."""
    from sklearn.model_selection import StratifiedKFold

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=SEED)
    splits = list(cv.split(np.zeros(len(y)), y))
    scores = {}
    for C in grid:
        accs = [
            float((make_classifier(C).fit(X[tr], y[tr]).predict(X[va]) == y[va]).mean())
            for tr, va in splits
        ]
        scores[repr(C)] = round(float(np.mean(accs)), 5)
    best = max(grid, key=lambda c: scores[repr(c)])
    return best, scores


def to_model(vec, clf, info: dict[str, Any] | None = None) -> TfidfLogisticModel:
    terms = [None] * len(vec.vocabulary_)
    for term, j in vec.vocabulary_.items():
        terms[j] = term
    return TfidfLogisticModel(terms, vec.idf_, clf.coef_[0], float(clf.intercept_[0]), info=info)


def train(
    data_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    *,
    max_features: int = MAX_FEATURES,
    C: float | None = None,
    cost_core: int | None = None,
) -> dict[str, Any]:
    """Train, evaluate, measure, write the artifact; return its ``info``."""
    import sklearn

    out = Path(out_dir) if out_dir is not None else model_dir()
    t_all = time.perf_counter()
    train_path = data_mod.split_path("train", data_dir)
    test_path = data_mod.split_path("test", data_dir)
    log(f"loading {train_path} and {test_path}")
    x_train, y_train = data_mod.load_split("train", data_dir)
    x_test, y_test = data_mod.load_split("test", data_dir)
    train_sha, test_sha = data_mod.sha256_of(train_path), data_mod.sha256_of(test_path)
    log(f"  {len(x_train)} train / {len(x_test)} test reviews; train sha256 {train_sha[:12]}…")

    t0 = time.perf_counter()
    log(f"fitting TF-IDF (word 1-2-grams, max_features={max_features}, sublinear tf)")
    vec, X_train = fit_vectorizer(x_train, max_features)
    log(f"  {X_train.shape[1]} features in {time.perf_counter() - t0:.1f} s")
    cv_scores: dict[str, float] = {}
    if C is None:
        t1 = time.perf_counter()
        log(f"choosing C from {list(C_GRID)} by 3-fold CV on the train split")
        C, cv_scores = choose_C(X_train, y_train)
        log(f"  C={C} (cv accuracy {cv_scores}) in {time.perf_counter() - t1:.1f} s")
    log(f"fitting logistic regression (liblinear, C={C})")
    clf = make_classifier(C).fit(X_train, y_train)
    train_seconds = time.perf_counter() - t0
    log(f"  trained in {train_seconds:.1f} s")

    log("evaluating on the test split (serving code and sklearn)")
    t2 = time.perf_counter()
    model = to_model(vec, clf)
    ours = model.decision_function(x_test)
    ref = clf.decision_function(vec.transform(x_test))
    label_mismatch = int(((ours > 0) != (ref > 0)).sum())
    max_diff = float(np.abs(ours - ref).max())
    if label_mismatch or max_diff > 1e-9:
        raise RuntimeError(
            f"serving transform disagrees with sklearn: {label_mismatch} labels, max decision diff {max_diff:g}"
        )
    accuracy = float(((ours > 0).astype(np.int64) == y_test).mean())
    log(f"  test accuracy {accuracy:.4f} ({time.perf_counter() - t2:.1f} s); sklearn agrees "
        f"(0 label differences, max decision difference {max_diff:.1e})")

    core = cost_core if cost_core is not None else min(os.sched_getaffinity(0))
    log(f"measuring cost per prediction on core {core}")
    sample, _ = data_mod.sample_reviews(2000, seed=SEED, split="test", data_dir=data_dir)
    cost = measure_cost(model, sample, core=core)
    log(f"  CPU time: batch 1 {cost['batch1_median']:.1f} µs median; batched ({cost['batched_batch_size']}) "
        f"{cost['batched_median']:.1f} µs/review median (wall/cpu {cost['wall_over_cpu']})")
    if cost["wall_over_cpu"] > 1.2:
        log(f"  warning: core {core} was shared with other processes during the measurement "
            "(wall/cpu > 1.2), so these figures are high; rebuild on a quiet machine or pick "
            "another core with --cost-core for the reference figures")

    info = {
        "name": NAME,
        "test_accuracy": round(accuracy, 5),
        "train_sha256": train_sha,
        "test_sha256": test_sha,
        "n_train": len(x_train),
        "n_test": len(x_test),
        "n_features": int(X_train.shape[1]),
        "train_seconds": round(train_seconds, 2),
        "created_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sklearn_version": sklearn.__version__,
        "numpy_version": np.__version__,
        "python": sys.version.split()[0],
        "hyperparameters": {"max_features": max_features, "ngram_range": [1, 2], "sublinear_tf": True,
                            "C": C, "solver": "liblinear", "cv_accuracy_by_C": cv_scores},
        "sklearn_agreement": {"test_label_differences": label_mismatch, "max_abs_decision_diff": max_diff},
        "cost_us_per_prediction": cost,
    }
    save_artifact(
        out,
        terms=model.terms,
        idf=model.idf,
        coef=model.coef,
        intercept=model.intercept,
        classifier={"kind": "logistic_regression", "classes": [0, 1], "C": C, "solver": "liblinear"},
        info=info,
    )
    check = load_artifact(out)  # round trip through the safe loader
    probe = x_test[:200]
    if check.predict_batch(probe) != model.predict_batch(probe):
        raise RuntimeError(f"the artifact written to {out} does not reproduce the trained model")
    log(f"wrote {out}/model.json + weights.npz in {time.perf_counter() - t_all:.1f} s total")
    return info


def up_to_date(data_dir: str | os.PathLike | None, out_dir: str | os.PathLike | None) -> str | None:
    """Why the artifact in ``out_dir`` can be kept, or None when it must be (re)built.

    Kept only when it passes the safe loader's validation and its recorded train hash is the hash
    of the train split we would train on now: a different data source means a different model.
    """
    out = Path(out_dir) if out_dir is not None else model_dir()
    try:
        info = load_artifact(out).info
    except Exception:  # noqa: BLE001 - missing, partial or corrupt: rebuild
        return None
    train_sha = data_mod.sha256_of(data_mod.split_path("train", data_dir))
    if info.get("train_sha256") != train_sha:
        return None
    return f"{out}, test accuracy {info.get('test_accuracy')}, train sha256 {train_sha[:12]}…"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m services.model.train", description=__doc__.split("\n")[0])
    p.add_argument("--data", help="folder with train.csv.gz/test.csv.gz (default: $RVS_DATA_DIR or ../shared/data/imdb)")
    p.add_argument("--out", help="artifact folder (default: $RVS_MODEL_DIR or var/model)")
    p.add_argument("--C", type=float, default=None, help="fix C instead of choosing it by CV")
    p.add_argument("--max-features", type=int, default=MAX_FEATURES)
    p.add_argument("--cost-core", type=int, default=None, help="core for the cost measurement (default: lowest allowed)")
    p.add_argument("--if-stale", action="store_true",
                   help="do nothing when the artifact exists, loads and was trained on this train split")
    args = p.parse_args(argv)
    try:
        if args.if_stale and (reason := up_to_date(args.data, args.out)) is not None:
            log(f"artifact is up to date ({reason}); nothing to do")
            return 0
        info = train(args.data, args.out, max_features=args.max_features, C=args.C, cost_core=args.cost_core)
    except data_mod.DataSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    c = info["cost_us_per_prediction"]
    print(f"{info['name']}: test_accuracy={info['test_accuracy']:.4f} train_seconds={info['train_seconds']} "
          f"batch1_median_us={c['batch1_median']} batched_median_us={c['batched_median']} core={c['core']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
