"""An example model that is not the IMDB one: which language a text is in.

``make bench MODEL=examples.langid:build`` serves it behind both deployments. A character-trigram
naive Bayes over seven languages (en, fr, de, es, it, nl, pt), numpy only; its fitted parameters,
``params.json``, come from ``corpus.jsonl`` (sentences written for this example, 16 per language
to fit and 5 held out) by ``python -m examples.langid.fit``, so nothing is downloaded. Each answer
is a JSON object, ``{"lang": "fr", "p": 0.97}`` (the most likely language and its posterior), so
it travels as ``"answer"`` on the wire. It reads the first ``max_chars`` characters of a text.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
PARAMS = HERE / "params.json"
FORMAT = "rvs-example-langid"
_NOT_LETTERS = re.compile(r"[^\w']+|[\d_]+")


def normalise(text: str) -> str:
    """Lower case, every run of non-letters one space, a space at each end (word boundaries)."""
    return f" {_NOT_LETTERS.sub(' ', text.lower()).strip()} "


def trigrams(text: str) -> list[str]:
    s = normalise(text)
    return [s[i:i + 3] for i in range(len(s) - 2)]


class LangId:
    """``predict_batch(texts) -> [{"lang", "p"}]``; ``info`` declares the contract."""

    def __init__(self, params: dict[str, Any], params_sha256: str):
        if params.get("format") != FORMAT:
            raise ValueError(f"params.json is not {FORMAT!r}: run python -m examples.langid.fit")
        self.languages: list[str] = list(params["languages"])
        self.index = {t: i for i, t in enumerate(params["trigrams"])}
        unseen = np.asarray(params["unseen_log_prob"], dtype=np.float64)
        # one row per trigram and a last row for every unseen one
        self.table = np.vstack([np.asarray(params["log_prob"], dtype=np.float64), unseen])
        self.unseen = len(self.index)
        self.log_prior = np.asarray(params["log_prior"], dtype=np.float64)
        self.max_chars = int(params["max_chars"])
        self.info = {
            "name": "langid-trigram-nb", "version": f"{params['version']}-{params_sha256[:12]}",
            "max_batch": 512, "batch_wait_ms": 2.0, "input": "text", "answer_fields": None,
            "languages": self.languages, "n_trigrams": len(self.index),
            "test_accuracy": params["test_accuracy"], "n_train": params["n_train"],
            "n_test": params["n_test"], "max_chars": self.max_chars,
            "params_sha256": params_sha256, "corpus_sha256": params["corpus_sha256"],
        }

    def scores(self, text: str) -> np.ndarray:
        """Log posterior (unnormalised) per language."""
        if not isinstance(text, str):
            raise TypeError(f"langid takes text, not {type(text).__name__}")
        get, unseen = self.index.get, self.unseen
        ids = [get(t, unseen) for t in trigrams(text[:self.max_chars])]
        return self.table[ids].sum(axis=0) + self.log_prior

    def predict_batch(self, texts: list) -> list[dict[str, Any]]:
        out = []
        for t in texts:
            s = self.scores(t)
            p = np.exp(s - s.max())
            p /= p.sum()
            k = int(p.argmax())
            out.append({"lang": self.languages[k], "p": round(float(p[k]), 4)})
        return out


def build(path: str | Path = PARAMS) -> LangId:
    """The factory ``RVS_MODEL=examples.langid:build`` names."""
    raw = Path(path).read_bytes()
    return LangId(json.loads(raw), hashlib.sha256(raw).hexdigest())
