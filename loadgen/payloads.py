"""What is sent: the sampled reviews, cycled deterministically, and the ids that name them.

Operation ``n`` (0-based, in schedule order for open loop, in start order for closed loop) carries
reviews ``texts[(n*B + k) % S]`` for ``k < B`` (B = batch_size, S = sample size), in both modes, so
REST and stream see the same reviews in the same order.

Ids (unique per run, parseable without a lookup table):

* operation / REST request id: ``<run_id>-<n>``;
* review (stream event) id: the operation id when B == 1, else ``<run_id>-<n>.<k>``; a REST
  ``{"instances": [...]}`` carries the same per-review ids.
"""

from __future__ import annotations

import hashlib
import random
import re

import orjson

from loadgen.scenario import Payload

_RUN_ID = re.compile(r"[A-Za-z0-9_:-]{1,80}")

_WORDS = ("film movie plot actor story great bad good boring brilliant awful scene music "
          "director script character ending funny dull wonderful terrible watch again never "
          "best worst acting cast moment love hate classic slow fast").split()


def synthetic_texts(n: int, seed: int, text_bytes: int) -> list[str]:
    """Deterministic review-like texts of ``text_bytes`` ASCII characters (no model needed)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words, size = [], 0
        while size <= text_bytes:
            w = rng.choice(_WORDS)
            words.append(w)
            size += len(w) + 1
        out.append(" ".join(words)[:text_bytes])
    return out


def load_texts(payload: Payload) -> list[str]:
    if payload.source == "synthetic":
        return synthetic_texts(payload.sample, payload.seed, payload.text_bytes)
    try:
        from services.model.data import sample_reviews  # noqa: PLC0415
    except ImportError as e:
        raise RuntimeError(f"payload source 'imdb' needs services.model.data ({e}); "
                           "use payload.source: synthetic to drive without the model package"
                           ) from None
    texts, _labels = sample_reviews(payload.sample, payload.seed, split=payload.split)
    return [str(t) for t in texts]


class Payloads:
    def __init__(self, texts: list[str], batch_size: int, run_id: str):
        if not texts:
            raise ValueError("no payload texts")
        if not _RUN_ID.fullmatch(run_id or ""):
            raise ValueError(f"run id must be 1-80 of [A-Za-z0-9_:-] (no '.'), got {run_id!r}")
        self.texts = texts
        self.batch_size = int(batch_size)
        self.run_id = run_id
        self.prefix = f"{run_id}-"
        # JSON-encoded texts, once: a stream event value is assembled from bytes, not dumped.
        self._text_json = [orjson.dumps(t) for t in texts]
        self.sha256 = hashlib.sha256(b"\0".join(t.encode() for t in texts)).hexdigest()

    # -- ids -----------------------------------------------------------------------------------
    def op_id(self, n: int) -> str:
        return f"{self.prefix}{n}"

    def event_id(self, n: int, k: int) -> str:
        return f"{self.prefix}{n}" if self.batch_size == 1 else f"{self.prefix}{n}.{k}"

    def parse_event_id(self, event_id: str) -> int | None:
        """Event id of this run -> global event index ``n*B + k``; None for anything else."""
        if not event_id.startswith(self.prefix):
            return None
        rest = event_id[len(self.prefix):]
        try:
            if self.batch_size == 1:
                return int(rest) if rest.isdigit() else None
            n, _, k = rest.partition(".")
            if not (n.isdigit() and k.isdigit()):
                return None
            k = int(k)
            if k >= self.batch_size:
                return None
            return int(n) * self.batch_size + k
        except ValueError:
            return None

    # -- content -------------------------------------------------------------------------------
    def text_index(self, j: int) -> int:
        return j % len(self.texts)

    def op_texts(self, n: int) -> list[str]:
        B, S = self.batch_size, len(self.texts)
        return [self.texts[(n * B + k) % S] for k in range(B)]

    def rest_body(self, n: int) -> bytes:
        """JSON body of REST operation ``n``: the single form when B == 1, else instances."""
        B, S = self.batch_size, len(self.texts)
        if B == 1:
            return orjson.dumps({"id": self.op_id(n), "text": self.texts[n % S]})
        return orjson.dumps({"instances": [
            {"id": self.event_id(n, k), "text": self.texts[(n * B + k) % S]} for k in range(B)]})

    def rest_ids(self, n: int) -> list[str]:
        return [self.event_id(n, k) for k in range(self.batch_size)]

    def event_value(self, event_id: str, j: int, sent_at: float) -> bytes:
        """Stream event ``{"id","text","sent_at"}`` (sent_at: epoch seconds) as JSON bytes."""
        return b'{"id":"%s","text":%s,"sent_at":%r}' % (
            event_id.encode(), self._text_json[j % len(self.texts)], sent_at)

    def describe(self) -> dict:
        lengths = [len(t.encode()) for t in self.texts]
        return {"n_texts": len(self.texts), "sha256": self.sha256, "batch_size": self.batch_size,
                "mean_text_bytes": round(sum(lengths) / len(lengths), 1),
                "id_format": f"{self.prefix}<n>" + ("" if self.batch_size == 1 else ".<k>")}


def check_rest_answer(body: bytes, ids: list[str]) -> str | None:
    """None if ``body`` is a valid prediction set for exactly ``ids``; else why not (short)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "not JSON"
    preds = doc.get("predictions") if isinstance(doc, dict) else None
    if not isinstance(preds, list):
        return "no 'predictions' list"
    if len(preds) != len(ids):
        return f"{len(preds)} predictions for {len(ids)} reviews"
    got = set()
    for p in preds:
        if not isinstance(p, dict):
            return "prediction is not an object"
        if p.get("label") not in (0, 1):
            return f"bad label {p.get('label')!r}"
        s = p.get("score")
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 <= s <= 1.0:
            return f"bad score {s!r}"
        got.add(p.get("id"))
    if got != set(ids):
        return "prediction ids do not match the request"
    return None


def check_stream_answer(value: bytes | None) -> bool:
    """A prediction event ``{"id","label","score",...}`` looks right."""
    if not value:
        return False
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(doc, dict) or doc.get("label") not in (0, 1):
        return False
    s = doc.get("score")
    return isinstance(s, (int, float)) and not isinstance(s, bool) and 0.0 <= s <= 1.0
