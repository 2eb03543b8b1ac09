"""The Flask app: ``POST /predict`` (one review or a batch), ``GET /healthz``, ``GET /openapi.json``.

Every answer is JSON. Bad input is a 400 (or 413 for a body over the limit) with ``{"error": ...}``
and never reaches the model; the model call is the only place a 500 can come from: a model that
raises, answers a different number of inputs or answers something that is not JSON
(services/model/contract.py) gets a 500 whose error names the model and the problem, the header
``X-RVS-Error: model_error/<problem>``, and one line in the service log. orjson parses and writes
the bodies (it also rejects invalid UTF-8, lone surrogates, NaN and nesting deeper than 1024).

Inputs are ``"text"`` strings; a model that declares ``input: "json"`` also takes ``"input"``, any
JSON value. Answers are ``{"id", "label", "score"}`` for a model that declares those
``answer_fields`` (the IMDB one), else ``{"id", "answer"}``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from services.model.contract import REASON, Contract, ModelFault, as_fault, call
from services.rest import openapi
from services.rest.settings import RestSettings
from services.worker_id import REST_HEADER, worker_id

log = logging.getLogger("services.rest")

JSON = "application/json"
#: Response header of a model failure: ``model_error/<problem>`` (a driver can count by it).
ERROR_HEADER = "X-RVS-Error"


class Predictor(Protocol):
    info: dict

    def predict_batch(self, inputs: list) -> list: ...


class BadInput(ValueError):
    """The request is not a valid review or batch; the message is safe to send back."""


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status=status, mimetype=JSON)


def error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


def _check_instance(obj: Any, where: str, s: RestSettings,
                    json_input: bool = False) -> tuple[str | int, Any]:
    if not isinstance(obj, dict):
        raise BadInput(f"{where} must be a JSON object with 'id' and 'text', "
                       f"not {type(obj).__name__}")
    if "id" not in obj:
        raise BadInput(f"{where}: 'id' is missing")
    if json_input and "input" in obj:
        if "text" in obj:
            raise BadInput(f"{where}: send either 'text' or 'input', not both")
        rid = _check_id(obj["id"], where, s)
        if obj["input"] is None:
            raise BadInput(f"{where}: 'input' is null")
        return rid, obj["input"]
    if "text" not in obj:
        raise BadInput(f"{where}: 'text' is missing" + (" (or 'input')" if json_input else ""))
    rid, text = _check_id(obj["id"], where, s), obj["text"]
    if not isinstance(text, str):
        raise BadInput(f"{where}: 'text' must be a string, not {type(text).__name__}")
    if not text or text.isspace():
        raise BadInput(f"{where}: 'text' is empty")
    if len(text) > s.max_text_chars:
        raise BadInput(f"{where}: 'text' has {len(text)} characters, more than the limit "
                       f"of {s.max_text_chars}")
    return rid, text


def _check_id(rid: Any, where: str, s: RestSettings) -> str | int:
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        raise BadInput(f"{where}: 'id' must be a string or an integer, not {type(rid).__name__}")
    if isinstance(rid, str) and not (0 < len(rid) <= s.max_id_chars):
        raise BadInput(f"{where}: 'id' must be 1..{s.max_id_chars} characters")
    return rid


def parse_body(body: bytes, s: RestSettings, json_input: bool = False
               ) -> tuple[list[str | int], list[Any]]:
    """Body bytes -> (ids, texts), or BadInput with a message a client can act on."""
    if not body:
        raise BadInput("empty body (or no Content-Length): send {\"id\", \"text\"} or "
                       "{\"instances\": [...]}")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadInput(f"body is not valid JSON (UTF-8): {e}") from None
    if not isinstance(doc, dict):
        raise BadInput(f"body must be a JSON object, not {type(doc).__name__}")
    if "instances" in doc:
        if "text" in doc or "id" in doc:
            raise BadInput("send either one review {\"id\", \"text\"} or {\"instances\": [...]}, "
                           "not both")
        inst = doc["instances"]
        if not isinstance(inst, list):
            raise BadInput(f"'instances' must be a list, not {type(inst).__name__}")
        if not inst:
            raise BadInput("'instances' is empty")
        if len(inst) > s.max_batch:
            raise BadInput(f"batch of {len(inst)} instances is over the limit of {s.max_batch}")
        ids: list[str | int] = []
        texts: list[Any] = []
        for i, obj in enumerate(inst):
            rid, text = _check_instance(obj, f"instances[{i}]", s, json_input)
            ids.append(rid)
            texts.append(text)
        return ids, texts
    rid, text = _check_instance(doc, "body", s, json_input)
    return [rid], [text]


def _load_default_predictor() -> Predictor:
    from services.model import load_model  # the real model; imported only when needed
    return load_model()


def create_app(predictor: Predictor | None = None, settings: RestSettings | None = None, *,
               loader: Callable[[], Predictor] | None = None) -> Flask:
    """Build the app. ``predictor=None`` loads the real model (``services.model.load_model``)
    now, once, in the calling process (with uWSGI lazy-apps: once per worker, after fork)."""
    s = settings or RestSettings()
    t0 = time.perf_counter()
    model = predictor if predictor is not None else (loader or _load_default_predictor)()
    load_s = time.perf_counter() - t0
    info = dict(getattr(model, "info", {}) or {})
    contract = Contract.of_info(info, type(model).__name__)
    model_name = contract.name
    json_input = contract.input == "json"
    predict_batch = model.predict_batch
    max_body = s.max_body_bytes

    app = Flask("services.rest")
    app.config["MAX_CONTENT_LENGTH"] = max_body
    app.json.sort_keys = False  # not used on the hot path; errors below are orjson too
    health = {"status": "ok", "ready": True, "model": model_name, "model_load_s": round(load_s, 3)}

    @app.post("/predict")
    def predict() -> Response:
        length = request.content_length
        if length is not None and length > max_body:
            return error(413, f"body of {length} bytes is over the limit of {max_body} bytes")
        if length is None and request.environ.get("wsgi.input_terminated"):
            # no Content-Length, a server-terminated stream: werkzeug would silently cut it
            # at the limit, so read one byte past the limit to tell "too large" apart
            body = request.environ["wsgi.input"].read(max_body + 1)
            if len(body) > max_body:
                return error(413, f"body is over the limit of {max_body} bytes")
        else:
            try:
                body = request.get_data(cache=False)
            except RequestEntityTooLarge:
                return error(413, f"body is over the limit of {max_body} bytes")
        try:
            ids, inputs = parse_body(body, s, json_input)
        except BadInput as e:
            return error(400, str(e))
        try:
            out = call(predict_batch, contract, inputs)
            try:
                answer = orjson.dumps({"predictions": contract.render(ids, out)})
            except orjson.JSONEncodeError as e:
                raise contract.not_json(out, e) from None
        except Exception as e:  # noqa: BLE001 — every model failure is a ModelFault here
            return model_failed(as_fault(e, contract), len(inputs))
        # which worker answered (<host>/<pid>, cached per process: right also without lazy-apps),
        # so the driver can count the workers that served a run
        return Response(answer, mimetype=JSON, headers={REST_HEADER: worker_id()})

    def model_failed(fault: ModelFault, n: int) -> Response:
        log.error("model call failed on a batch of %d: %s", n, fault)
        resp = error(500, f"the model failed on this request: {fault}")
        resp.headers[ERROR_HEADER] = f"{REASON}/{fault.problem}"
        return resp

    api_doc = orjson.dumps(openapi.spec(s))

    @app.get("/openapi.json")
    def openapi_json() -> Response:
        return Response(api_doc, mimetype=JSON)

    @app.get("/healthz")
    def healthz() -> Response:
        return _json({**health, "pid": os.getpid()})  # the worker's pid (after fork)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> Response:
        code = e.code or 500
        if isinstance(e, RequestEntityTooLarge):
            return error(413, f"body is over the limit of {max_body} bytes")
        resp = error(code, f"{e.name}: {e.description}" if e.description else e.name)
        if code == 405:
            resp.headers["Allow"] = ", ".join(e.valid_methods or [])  # type: ignore[attr-defined]
        return resp

    @app.errorhandler(Exception)
    def unexpected(e: Exception) -> Response:  # a bug outside the model call: still JSON
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error(500, "internal error; see the service log")

    app.extensions["rvs_model_info"] = info
    return app
