"""What is sent: the sampled inputs, cycled deterministically, and the ids that name them.

Inputs are IMDB reviews, synthetic texts, or the rows of a file the user brings
(loadgen/payload_file.py): a string goes out as ``"text"``, any other JSON value as ``"input"``.
Operation ``n`` (0-based, in schedule order for open loop, in start order for closed loop) carries
inputs ``texts[(n*B + k) % S]`` for ``k < B`` (B = batch_size, S = sample size), in both modes, so
REST and stream see the same inputs in the same order.

Ids (unique per run, parseable without a lookup table):

* operation / REST request id: ``<run_id>-<n>``;
* review (stream event) id: the operation id when B == 1, else ``<run_id>-<n>.<k>``; a REST
  ``{"instances": [...]}`` carries the same per-review ids.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Any

import orjson

from loadgen.payload_file import FileSource
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


class Inputs(list):
    """The sampled inputs, and where they came from when that is a file (``describe()``)."""

    def __init__(self, items: list[Any], source: FileSource | None = None):
        super().__init__(items)
        self.source = source


def load_texts(payload: Payload) -> list[Any]:
    if payload.source == "synthetic":
        return synthetic_texts(payload.sample, payload.seed, payload.text_bytes)
    if payload.source == "file":
        from loadgen.payload_file import load  # noqa: PLC0415

        items, src = load(payload.path, payload.column, payload.sample,  # type: ignore[attr-defined]
                          payload.seed)
        return Inputs(items, src)
    try:
        from services.model.data import sample_reviews  # noqa: PLC0415
    except ImportError as e:
        raise RuntimeError(f"payload source 'imdb' needs services.model.data ({e}); "
                           "use payload.source: synthetic to drive without the model package"
                           ) from None
    texts, _labels = sample_reviews(payload.sample, payload.seed, split=payload.split)
    return [str(t) for t in texts]


class Payloads:
    def __init__(self, texts: list[Any], batch_size: int, run_id: str):
        if not texts:
            raise ValueError("no payload texts")
        if not _RUN_ID.fullmatch(run_id or ""):
            raise ValueError(f"run id must be 1-80 of [A-Za-z0-9_:-] (no '.'), got {run_id!r}")
        self.texts = texts                      # str (sent as "text") or JSON (sent as "input")
        self.source: FileSource | None = getattr(texts, "source", None)
        self.batch_size = int(batch_size)
        self.run_id = run_id
        self.prefix = f"{run_id}-"
        # JSON-encoded inputs, once: a stream event value is assembled from bytes, not dumped.
        self._text_json = [orjson.dumps(t) for t in texts]
        self._key = [b"text" if isinstance(t, str) else b"input" for t in texts]
        self.sha256 = hashlib.sha256(b"\0".join(
            t.encode() if isinstance(t, str) else j for t, j in zip(texts, self._text_json)
        )).hexdigest()

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
            return orjson.dumps({"id": self.op_id(n), **self._input(n % S)})
        return orjson.dumps({"instances": [
            {"id": self.event_id(n, k), **self._input((n * B + k) % S)} for k in range(B)]})

    def _input(self, j: int) -> dict[str, Any]:
        t = self.texts[j]
        return {"text": t} if isinstance(t, str) else {"input": t}

    def rest_ids(self, n: int) -> list[str]:
        return [self.event_id(n, k) for k in range(self.batch_size)]

    def event_value(self, event_id: str, j: int, sent_at: float) -> bytes:
        """Stream event ``{"id","text","sent_at"}`` (``"input"`` for a JSON input; sent_at: epoch
        seconds) as JSON bytes."""
        i = j % len(self.texts)
        return b'{"id":"%s","%s":%s,"sent_at":%r}' % (
            event_id.encode(), self._key[i], self._text_json[i], sent_at)

    def describe(self) -> dict:
        lengths = [len(t.encode()) if isinstance(t, str) else len(j)
                   for t, j in zip(self.texts, self._text_json)]
        kinds = set(self._key)
        d = {"n_texts": len(self.texts), "sha256": self.sha256, "batch_size": self.batch_size,
             "mean_text_bytes": round(sum(lengths) / len(lengths), 1),
             "inputs": "mixed" if len(kinds) == 2 else
             ("text" if kinds == {b"text"} else "json"),
             "id_format": f"{self.prefix}<n>" + ("" if self.batch_size == 1 else ".<k>")}
        if self.source is not None:
            d["source"] = self.source.describe()
        return d


#: Keys of a stream answer that are not the answer itself (the request's echo and the stamps).
_NOT_ANSWER = frozenset({"id", "text", "input", "sent_at", "served_at"})


def check_rest_answer(body: bytes, ids: list[str]) -> str | None:
    """None if ``body`` answers each of ``ids`` exactly once; else why not (short). Any JSON
    answer is accepted (the model's own business): each prediction must name its id, carry
    something besides it, and not be an error."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "not JSON"
    preds = doc.get("predictions") if isinstance(doc, dict) else None
    if not isinstance(preds, list):
        return "no 'predictions' list"
    if len(preds) != len(ids):
        return f"{len(preds)} predictions for {len(ids)} reviews"
    got = []
    for p in preds:
        if not isinstance(p, dict):
            return "prediction is not an object"
        if "error" in p:
            return "prediction is an error"
        if len(p) < 2 or "id" not in p:
            return "prediction has no id or no answer"
        got.append(p["id"])
    if len(set(got)) != len(got) or set(got) != set(ids):
        return "prediction ids do not match the request"
    return None


def check_stream_answer(value: bytes | None) -> bool:
    """A prediction event ``{"id", <the answer's fields>, ...}`` looks right: a JSON object with
    an id and an answer (any JSON), not an error."""
    if not value:
        return False
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(doc, dict) or "error" in doc or not isinstance(doc.get("id"), str):
        return False
    return any(k not in _NOT_ANSWER for k in doc)


def rest_failure(status: int, headers: Any) -> str | None:
    """Why a REST answer failed, when the service said: ``model_error/<problem>`` from a 5xx's
    ``X-RVS-Error`` header (services/rest/app.py); None otherwise."""
    if status < 500 or not headers:
        return None
    v = headers.get("X-RVS-Error")
    return str(v) if v else None


def dlq_failure(value: bytes | None) -> tuple[str, str] | None:
    """``(id, "<reason>/<problem>")`` of a ``requests.dlq`` record for a request with an id
    (``"<reason>"`` alone when there is no problem, i.e. bad input); None if it names no id."""
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
        return None
    reason = str(doc.get("reason") or "unknown")
    return doc["id"], f"{reason}/{doc['problem']}" if doc.get("problem") else reason
