r"""The serving model: TF-IDF (word 1-2-grams, sublinear tf, l2) + logistic regression, without sklearn.

It computes what scikit-learn's ``TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)`` followed
by ``LogisticRegression.predict_proba`` computes for the same vocabulary, idf, coef and intercept
(same labels, scores within 1e-12: tests/test_model.py checks it against the sklearn pipeline, and
training checks all 25k test reviews), at a fraction of sklearn's per-call cost:

* tokens: ASCII texts (~90% of IMDB) go through ``str.translate`` + ``str.split`` (see
  ``_ASCII_WORDS``); other texts through ``lower()`` + ``re.findall(r"\w\w+")``, which finds the
  same tokens as sklearn's ``(?u)\b\w\w+\b`` (a greedy ``\w\w+`` can only start at a word
  boundary and always runs to the next one);
* words → ids with one dict lookup per token; unigram features by array indexing; bigram features
  by looking up the integer key ``first_word_id * n_words + second_word_id`` in a bucketed hash
  table (one row gather + compare, vectorised over all bigrams of the batch);
* per review: the count of each feature, ``tf = 1 + log(count)``, decision =
  ``sum(tf * idf * coef) / sqrt(sum((tf * idf)**2)) + intercept``, score = expit(decision),
  label = decision > 0 (sklearn's rule; classes are [0, 1]).

Every review goes through the same arithmetic in the same order whatever batch it is in, so a
review gets bit-identical (label, score) alone or in a batch of 1,000 (REST and stream may batch
differently; the contract says identical inputs give identical outputs).
"""

from __future__ import annotations

import re
from itertools import chain, repeat
from typing import Any

import numpy as np
from scipy.special import expit

# The configuration this transform implements; the artifact must say exactly this.
VECTORIZER_PARAMS: dict[str, Any] = {
    "kind": "tfidf",
    "analyzer": "word",
    "lowercase": True,
    "strip_accents": None,
    "stop_words": None,
    "token_pattern": r"(?u)\b\w\w+\b",
    "ngram_range": [1, 2],
    "binary": False,
    "use_idf": True,
    "smooth_idf": True,
    "sublinear_tf": True,
    "norm": "l2",
    "dtype": "float64",
}

_FIND_TOKENS = re.compile(r"\w\w+").findall  # same tokens as (?u)\b\w\w+\b, see module doc
# ASCII texts skip the regex: str.translate lowercases A-Z and turns every other non-word
# character into a space, then str.split() gives the maximal runs of [a-z0-9_]: the same tokens as
# lower() + the regex (for ASCII, \w is exactly [A-Za-z0-9_]), plus 1-character runs, which the
# word lookup maps to -2 and the transform drops before it forms bigrams.
_ASCII_WORDS = str.maketrans(
    {chr(c): (chr(c).lower() if (chr(c).isalnum() or c == 95) else " ") for c in range(128)}
)
_ONE_CHAR_WORDS = [chr(c) for c in range(128) if chr(c).isalnum() or c == 95]
_ONE_CHAR_WORDS = sorted({w.lower() for w in _ONE_CHAR_WORDS})
_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing
_LOOKUP_CHUNK = 8192
TERM_PART = re.compile(r"\w\w+")  # each word of a vocabulary term (validation)


def _not_str(texts: list) -> TypeError:
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), 0)
    return TypeError(f"predict_batch expects a list of str; item {bad} is {type(texts[bad]).__name__}")


class TfidfLogisticModel:
    """``predict_batch(texts) -> [(label, score)]`` for one TF-IDF + logistic-regression model."""

    def __init__(
        self,
        terms: list[str],
        idf: np.ndarray,
        coef: np.ndarray,
        intercept: float,
        info: dict[str, Any] | None = None,
    ) -> None:
        n = len(terms)
        idf = np.ascontiguousarray(idf, dtype=np.float64)
        coef = np.ascontiguousarray(coef, dtype=np.float64)
        if idf.shape != (n,) or coef.shape != (n,):
            raise ValueError(f"idf {idf.shape} and coef {coef.shape} must both be ({n},)")
        self.terms = terms
        self.idf = idf
        self.coef = coef
        self.intercept = float(intercept)
        self.info: dict[str, Any] = dict(info or {})
        self.n_features = n
        # idf*coef and idf**2 side by side: one cache line per feature looked up.
        self._feat_weights = np.ascontiguousarray(np.stack((idf * coef, idf * idf), axis=1))
        self._build_index(terms)

    # -- index -----------------------------------------------------------------------------
    def _build_index(self, terms: list[str]) -> None:
        words: dict[str, int] = {}
        split = [t.split(" ") for t in terms]
        for parts in split:
            for w in parts:
                if w not in words:
                    words[w] = len(words)
        n_words = len(words)
        # word id -> unigram feature id; one extra slot so that word id -1 (unknown) maps to -1.
        word_feat = np.full(n_words + 1, -1, dtype=np.int64)
        bi_key: list[int] = []
        bi_feat: list[int] = []
        for j, parts in enumerate(split):
            if len(parts) == 1:
                word_feat[words[parts[0]]] = j
            else:
                bi_key.append(words[parts[0]] * n_words + words[parts[1]])
                bi_feat.append(j)
        lookup: dict[str, int] = dict(words)
        for w in _ONE_CHAR_WORDS:
            lookup[w] = -2
        self._words_get = lookup.get
        self._n_words = n_words
        self._word_feat = word_feat
        self._build_bigram_table(np.asarray(bi_key, dtype=np.int64), np.asarray(bi_feat, dtype=np.int64))

    def _build_bigram_table(self, keys: np.ndarray, feats: np.ndarray) -> None:
        """A bucketed hash table: row ``hash(key)`` of ``table`` holds ``key << fb | feat`` of every
        bigram hashing there (-1 = empty), so a lookup is one row gather and a compare, no probing."""
        self._feat_bits = fb = max(1, int(self.n_features).bit_length())
        if (self._n_words**2) << fb >= 2**63:
            raise ValueError("vocabulary too large for the bigram table")
        bits = max(1, int(max(1, keys.size)).bit_length() - 1)  # ~1-2 keys per bucket
        self._hash_shift = np.uint64(64 - bits)
        bucket = self._bucket(keys).astype(np.int64)
        order = np.argsort(bucket, kind="stable")
        bucket, packed = bucket[order], (keys[order] << fb) | feats[order]
        starts = np.searchsorted(bucket, bucket, side="left")
        col = np.arange(bucket.size) - starts
        width = int(col.max(initial=0)) + 1
        table = np.full((1 << bits, width), -1, dtype=np.int64)
        table[bucket, col] = packed
        self._bigram_table = table
        self._feat_mask = (1 << fb) - 1

    def _bucket(self, keys: np.ndarray) -> np.ndarray:
        return (keys.view(np.uint64) * _HASH_MUL) >> self._hash_shift

    def _bigram_feats(self, keys: np.ndarray) -> np.ndarray:
        """Feature id of each bigram key (int64 array), -1 where the bigram is not in the vocabulary."""
        if keys.size > _LOOKUP_CHUNK:  # bound the (keys x width) temporaries
            return np.concatenate(
                [self._bigram_feats(keys[i : i + _LOOKUP_CHUNK]) for i in range(0, keys.size, _LOOKUP_CHUNK)]
            )
        rows = self._bigram_table[self._bucket(keys)]
        eq = (rows >> self._feat_bits) == keys[:, None]
        return np.where(eq, rows & self._feat_mask, -1).max(axis=1, initial=-1)

    # -- scoring ---------------------------------------------------------------------------
    @staticmethod
    def _tokens(text: str) -> list[str]:
        # ASCII: 1-char tokens stay in (the word lookup maps them to -2); else sklearn's tokens.
        return text.translate(_ASCII_WORDS).split() if text.isascii() else _FIND_TOKENS(text.lower())

    def _word_ids(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Word id of every token of every text (-1: in no vocabulary term; -2: a 1-char ASCII
        token, which sklearn's pattern skips), and the number of tokens of each text."""
        tokens = self._tokens
        try:
            toks = [tokens(t) for t in texts]
        except (AttributeError, TypeError):
            raise _not_str(texts) from None
        lens = np.fromiter(map(len, toks), dtype=np.int64, count=len(texts))
        wid = np.fromiter(
            map(self._words_get, chain.from_iterable(toks), repeat(-1)),
            dtype=np.int64,
            count=int(lens.sum()),
        )
        return wid, lens

    def _features_one(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(feature ids ascending, their counts) of one text: fewer numpy calls than the batch path."""
        try:
            toks = self._tokens(text)
        except (AttributeError, TypeError):
            raise _not_str([text]) from None
        wid = np.fromiter(map(self._words_get, toks, repeat(-1)), dtype=np.int64, count=len(toks))
        wid = wid[wid != -2]
        first, second = wid[:-1], wid[1:]
        pair = (first >= 0) & (second >= 0)
        feat = np.concatenate(
            (self._word_feat[wid], self._bigram_feats(first[pair] * self._n_words + second[pair]))
        )
        feat = feat[feat >= 0]
        feat.sort()
        n = feat.size
        if n == 0:
            return feat, feat
        new = np.empty(n, dtype=bool)
        new[0] = True
        np.not_equal(feat[1:], feat[:-1], out=new[1:])
        at = np.flatnonzero(new)
        return feat[at], np.diff(at, append=n)

    def _features_many(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(doc index, feature id, count) of every distinct (doc, feature), ascending by both."""
        n_docs, n_feat = len(texts), self.n_features
        wid, lens = self._word_ids(texts)
        doc = np.repeat(np.arange(n_docs, dtype=np.int64), lens)
        keep = wid != -2
        wid, doc = wid[keep], doc[keep]
        first, second = wid[:-1], wid[1:]
        pair = np.flatnonzero((first >= 0) & (second >= 0) & (doc[:-1] == doc[1:]))
        feat = np.concatenate(
            (self._word_feat[wid], self._bigram_feats(first[pair] * self._n_words + second[pair]))
        )
        fdoc = np.concatenate((doc, doc[pair]))
        hit = feat >= 0
        key, count = np.unique(fdoc[hit] * n_feat + feat[hit], return_counts=True)
        kdoc = key // n_feat
        return kdoc, key - kdoc * n_feat, count

    def decision_function(self, texts: list[str]) -> np.ndarray:
        """The logistic-regression decision value of each text (float64 array)."""
        n_docs = len(texts)
        if n_docs == 0:
            return np.zeros(0, dtype=np.float64)
        if n_docs == 1:
            kfeat, count = self._features_one(texts[0])
            kdoc = np.zeros(kfeat.size, dtype=np.intp)
        else:
            kdoc, kfeat, count = self._features_many(texts)
        # Per review, in ascending feature order, summed one after another (bincount): the
        # same operations in the same order for a review alone or in any batch.
        tf = np.log(count) + 1.0
        w = self._feat_weights[kfeat]
        num = np.bincount(kdoc, weights=tf * w[:, 0], minlength=n_docs)
        den = np.bincount(kdoc, weights=(tf * tf) * w[:, 1], minlength=n_docs)
        has = den > 0
        return np.where(has, num / np.sqrt(np.where(has, den, 1.0)), 0.0) + self.intercept

    def predict_batch(self, texts: list[str]) -> list[tuple[int, float]]:
        """[(label 0/1 as int, score = P(positive) as float)] for each text, in order."""
        if not texts:
            return []
        d = self.decision_function(texts)
        return list(zip((d > 0).astype(np.int64).tolist(), expit(d).tolist()))

    # -- reference -------------------------------------------------------------------------
    def to_sklearn(self):
        """The equivalent fitted (TfidfVectorizer, LogisticRegression) pair, for checks only."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, dtype=np.float64)
        vec.vocabulary_ = {t: j for j, t in enumerate(self.terms)}
        vec.idf_ = self.idf.copy()
        clf = LogisticRegression()
        clf.classes_ = np.array([0, 1])
        clf.coef_ = self.coef.reshape(1, -1).copy()
        clf.intercept_ = np.array([self.intercept])
        return vec, clf

    def __repr__(self) -> str:
        return f"<TfidfLogisticModel {self.info.get('name', '?')} n_features={self.n_features}>"
