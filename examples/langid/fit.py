"""Fit the example language identifier: ``python -m examples.langid.fit`` rewrites params.json.

Multinomial naive Bayes over character trigrams (``examples.langid.trigrams``), add-``alpha``
smoothing over the trigrams seen in the training sentences, a uniform prior; only trigrams seen at
least ``MIN_COUNT`` times are kept (the rest score as unseen), which halves the file at no cost in
held-out accuracy, which is recorded. Deterministic: the same corpus gives the same file.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from examples.langid import FORMAT, HERE, PARAMS, LangId, trigrams

CORPUS = HERE / "corpus.jsonl"
ALPHA = 0.5
MIN_COUNT = 2
MAX_CHARS = 400
VERSION = "1"


def fit(corpus: Path = CORPUS, alpha: float = ALPHA) -> dict[str, Any]:
    raw = corpus.read_bytes()
    rows = [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    languages = sorted({r["lang"] for r in train})
    counts = {lang: Counter() for lang in languages}
    for r in train:
        counts[r["lang"]].update(trigrams(r["text"]))
    seen = Counter()
    for c in counts.values():
        seen.update(c)
    v = len(seen) + 1                       # + one slot for every unseen trigram
    vocab = sorted(t for t, n in seen.items() if n >= MIN_COUNT)
    log_prob, unseen = [], []
    totals = {lang: sum(counts[lang].values()) for lang in languages}
    for t in vocab:
        log_prob.append([round(math.log((counts[lang][t] + alpha) / (totals[lang] + alpha * v)), 4)
                         for lang in languages])
    for lang in languages:
        unseen.append(round(math.log(alpha / (totals[lang] + alpha * v)), 4))
    params = {
        "format": FORMAT, "version": VERSION, "languages": languages, "trigrams": vocab,
        "log_prob": log_prob, "unseen_log_prob": unseen,
        "log_prior": [round(-math.log(len(languages)), 4)] * len(languages),
        "alpha": alpha, "min_count": MIN_COUNT, "max_chars": MAX_CHARS, "n_train": len(train), "n_test": len(test),
        "corpus_sha256": hashlib.sha256(raw).hexdigest(), "test_accuracy": None,
    }
    model = LangId(params, "unsaved")
    answers = model.predict_batch([r["text"] for r in test])
    hits = sum(a["lang"] == r["lang"] for a, r in zip(answers, test))
    params["test_accuracy"] = round(hits / len(test), 4) if test else None
    return params


def dumps(params: dict[str, Any]) -> bytes:
    return (json.dumps(params, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def main() -> int:
    params = fit()
    PARAMS.write_bytes(dumps(params))
    print(f"{PARAMS}: {len(params['trigrams'])} trigrams, {len(params['languages'])} languages, "
          f"held-out accuracy {params['test_accuracy']} ({params['n_test']} sentences)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
