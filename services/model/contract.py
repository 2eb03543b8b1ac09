"""The model contract both deployments serve: a batched call, list in, list out.

A model is an object with ``predict_batch(inputs: list) -> list`` (one answer per input, in the
same order, each JSON-serialisable) and ``info: dict`` declaring beside it, as MLflow pyfunc,
KServe and Ray Serve users know them:

* ``name`` and ``version`` (strings);
* ``max_batch``: the most inputs it takes in one call (the loader splits longer lists);
* ``batch_wait_ms``: how long a server may hold inputs back to fill a batch;
* optional ``input``: ``"text"`` (default, every input a string) or ``"json"`` (any JSON value,
  sent as ``"input"`` on the wire instead of ``"text"``);
* optional ``answer_fields``: names for the parts of a tuple answer, carried on the wire as fields
  of their own (the IMDB model declares ``["label", "score"]``); without it an answer travels
  whole as ``"answer"``.

:class:`Contract` is that declaration, typed; :class:`ModelFault` is the one error a misbehaving
model becomes (it raised, answered a different number of inputs, or answered something that is
not JSON), with a line that names the model and the problem; :func:`call` is the checked call both
deployments make.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

#: What a failing model did (``ModelFault.problem``; DLQ ``problem``; REST ``X-RVS-Error``).
PROBLEMS = ("raised", "not_a_list", "wrong_length", "wrong_shape", "not_json")
#: The DLQ ``reason`` / REST error class of every model failure.
REASON = "model_error"
INPUT_KINDS = ("text", "json")
#: Keys the wire already uses beside an answer; ``answer_fields`` may not take them.
RESERVED = ("id", "text", "input", "answer", "error", "sent_at", "served_at")
#: How a predictor that never declared ``answer_fields`` (one handed to a service directly, not
#: through ``load_model``) is read: the original (label, score) pair.
LEGACY_FIELDS = ("label", "score")
_DETAIL_MAX = 300


class ContractError(ValueError):
    """A model's ``info`` does not declare the contract; the message says what to add."""


class ModelFault(RuntimeError):
    """A model call that broke the contract. ``str()`` is one line naming the model and what it
    did; ``problem`` is one of :data:`PROBLEMS`."""

    def __init__(self, problem: str, detail: str, model: str = "the model"):
        super().__init__(f"model {model} {detail}")
        self.problem, self.detail, self.model = problem, detail, model

    @property
    def reason(self) -> str:
        return REASON


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _DETAIL_MAX else text[:_DETAIL_MAX - 1] + "…"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


@dataclass(frozen=True)
class Contract:
    """What a model declares; services read it once, when they load the model."""
    name: str
    version: str | None = None
    max_batch: int | None = None
    batch_wait_ms: float | None = None
    input: str = "text"
    answer_fields: tuple[str, ...] | None = None

    @property
    def label(self) -> str:
        """How lines name the model: ``'langid' 1.0``."""
        return f"{self.name!r} {self.version}" if self.version else repr(self.name)

    # -- reading a declaration -------------------------------------------------------------------
    @classmethod
    def declared(cls, info: Any, where: str = "the model") -> Contract:
        """The contract of a model a user brings: every required key present and well typed, or
        :class:`ContractError` saying which one and what it must be."""
        if not isinstance(info, Mapping):
            raise ContractError(f"{where}: info must be a dict, not {type(info).__name__}")

        def bad(key: str, what: str) -> ContractError:
            return ContractError(f"{where}: info[{key!r}] must be {what}, got "
                                 f"{_short(repr(info.get(key, '<missing>')))}")

        name, version = info.get("name"), info.get("version")
        if not isinstance(name, str) or not name.strip():
            raise bad("name", "a non-empty string")
        if not isinstance(version, str) or not version.strip():
            raise bad("version", "a non-empty string such as '1.0'")
        mb = info.get("max_batch")
        if isinstance(mb, bool) or not isinstance(mb, int) or mb < 1:
            raise bad("max_batch", "an integer >= 1 (the most inputs one call takes)")
        wait = info.get("batch_wait_ms")
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not math.isfinite(wait) \
                or wait < 0:
            raise bad("batch_wait_ms", "a number >= 0 (how long a server may wait to fill a batch)")
        kind = info.get("input", "text")
        if kind not in INPUT_KINDS:
            raise bad("input", f"one of {', '.join(map(repr, INPUT_KINDS))}")
        fields = cls._fields(info.get("answer_fields"), bad)
        try:
            orjson.dumps(dict(info))
        except orjson.JSONEncodeError as e:
            raise ContractError(f"{where}: info must be JSON-serialisable (it goes into "
                                f"meta.json): {e}") from None
        return cls(name.strip(), version.strip(), mb, float(wait), kind, fields)

    @staticmethod
    def _fields(v: Any, bad: Callable[[str, str], ContractError]) -> tuple[str, ...] | None:
        if v is None:
            return None
        what = f"null or a list of distinct field names, none of {', '.join(RESERVED)}"
        if isinstance(v, str) or not isinstance(v, Sequence) or not v:
            raise bad("answer_fields", what)
        if not all(isinstance(f, str) and f and f not in RESERVED for f in v) \
                or len(set(v)) != len(v):
            raise bad("answer_fields", what)
        return tuple(v)

    @classmethod
    def of_info(cls, info: Any, fallback_name: str = "model") -> Contract:
        """The contract as far as ``info`` says it, for any predictor a service is handed (tests
        pass bare ones): nothing is required, a predictor that never mentions ``answer_fields``
        answers (label, score) pairs (:data:`LEGACY_FIELDS`)."""
        info = info if isinstance(info, Mapping) else {}
        name = info.get("name")
        version = info.get("version")
        mb = info.get("max_batch")
        wait = info.get("batch_wait_ms")
        fields: Any = info.get("answer_fields") if "answer_fields" in info else LEGACY_FIELDS
        kind = info.get("input", "text")
        return cls(
            name=name if isinstance(name, str) and name else fallback_name,
            version=version if isinstance(version, str) and version else None,
            max_batch=mb if isinstance(mb, int) and not isinstance(mb, bool) and mb >= 1 else None,
            batch_wait_ms=float(wait) if isinstance(wait, (int, float))
            and not isinstance(wait, bool) else None,
            input=kind if kind in INPUT_KINDS else "text",
            answer_fields=tuple(fields) if isinstance(fields, (list, tuple)) and fields else None)

    # -- answers on the wire ---------------------------------------------------------------------
    def fields(self, answer: Any) -> dict[str, Any]:
        """The wire fields of one answer (beside ``id``): the named parts of a tuple answer, or
        ``{"answer": answer}``. :class:`ModelFault` ``wrong_shape`` if it is not the declared
        tuple."""
        names = self.answer_fields
        if names is None:
            return {"answer": answer}
        if (type(answer) is tuple or type(answer) is list) and len(answer) == len(names):
            return dict(zip(names, answer))     # the hot path: no ABC checks
        if isinstance(answer, (str, bytes, Mapping)) or not isinstance(answer, Sequence) \
                or len(answer) != len(names):
            raise ModelFault("wrong_shape", f"answered {_short(repr(answer))}, not the "
                             f"{len(names)} parts it declares ({', '.join(names)})", self.label)
        return dict(zip(names, answer))

    def render(self, ids: Sequence[Any], answers: Sequence[Any]) -> list[dict[str, Any]]:
        """``[{"id", **fields(answer)}]`` for a whole call (REST's body)."""
        names = self.answer_fields
        if names is None:
            return [{"id": i, "answer": a} for i, a in zip(ids, answers)]
        if len(names) == 2:   # the IMDB shape: the hot path of every benchmark
            f0, f1 = names
            try:
                return [{"id": i, f0: x, f1: y} for i, (x, y) in zip(ids, answers)]
            except (TypeError, ValueError):
                pass          # find the culprit for the message
        return [{"id": i, **self.fields(a)} for i, a in zip(ids, answers)]

    def not_json(self, answers: Sequence[Any], error: Exception, start: int = 0) -> ModelFault:
        """The fault for answers that orjson could not encode: which one (numbered from
        ``start``: its input's place in the call), and why."""
        for i, a in enumerate(answers, start):
            try:
                orjson.dumps(a)
            except (orjson.JSONEncodeError, TypeError) as e:
                return ModelFault("not_json", f"answered {type(a).__name__} for input {i}, "
                                  f"which is not JSON ({_short(str(e))})", self.label)
        return ModelFault("not_json", f"answered something that is not JSON "
                          f"({_short(str(error))})", self.label)


def call(predict: Callable[[list], Any], contract: Contract, inputs: list) -> Sequence[Any]:
    """``predict(inputs)``, checked: a list (or tuple) of one answer per input, or
    :class:`ModelFault` saying what the model did instead."""
    try:
        out = predict(inputs)
    except ModelFault:
        raise
    except Exception as e:  # noqa: BLE001 — any failure of the model's own code is the model's
        raise ModelFault("raised", f"raised {type(e).__name__}: {_short(str(e))}",
                         contract.label) from e
    if not isinstance(out, (list, tuple)):
        raise ModelFault("not_a_list", f"returned {type(out).__name__}, not a list of answers",
                         contract.label)
    if len(out) != len(inputs):
        raise ModelFault("wrong_length", f"returned {_plural(len(out), 'answer')} for "
                         f"{_plural(len(inputs), 'input')}", contract.label)
    return out


def as_fault(e: BaseException, contract: Contract) -> ModelFault:
    """Any exception from a model call as a :class:`ModelFault`."""
    if isinstance(e, ModelFault):
        return e
    return ModelFault("raised", f"raised {type(e).__name__}: {_short(str(e))}", contract.label)


_CONTRACTS: dict[int, tuple[Any, Contract]] = {}


def contract_of(predict: Callable[[list], Any]) -> Contract:
    """The contract of the model behind ``predict``: a bound ``predict_batch`` carries its
    model's ``info`` (``__self__``); a bare function is read as :meth:`Contract.of_info` of
    nothing. Cached per callable, since the stream reads it for every batch."""
    hit = _CONTRACTS.get(id(predict))
    if hit is not None and hit[0] is predict:
        return hit[1]
    owner = getattr(predict, "__self__", None)
    name = type(owner).__name__ if owner is not None else getattr(predict, "__name__", "model")
    c = Contract.of_info(getattr(owner, "info", None), name)
    if len(_CONTRACTS) > 256:
        _CONTRACTS.clear()
    _CONTRACTS[id(predict)] = (predict, c)
    return c
