"""The REST API's OpenAPI 3.0 description, rendered from the same settings the app enforces.

One source of truth: the limits in the schema (``max_batch``, ``max_text_chars``, ``max_id_chars``,
the body limit) are the ``RestSettings`` the running app checks, so the description served at
``GET /openapi.json`` can't drift from the code that answers. ``tests/test_fuzz_rest.py`` runs
schemathesis against it: every body the schema calls valid must get a 200 whose shape matches the
schema, every body it calls invalid must get a 4xx, and nothing may get a 5xx.

``text`` must hold a non-blank character (a ``pattern``); the body as a whole must fit the byte
limit (413 otherwise), which JSON Schema can't express, so it is said in a ``description``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from services.rest.settings import RestSettings
from services.worker_id import REST_HEADER

#: orjson parses integers that fit in 64 bits (signed or unsigned); larger ones are invalid JSON
#: to it, so an integer id is bounded here as well.
INT_ID_MIN, INT_ID_MAX = -(2**63), 2**64 - 1


@lru_cache(maxsize=1)
def non_blank_pattern() -> str:
    """A regex matching one character that is not whitespace *as the app defines it*
    (``str.isspace``). JSON Schema patterns are ECMA-262, whose ``\\s`` differs from Python's
    (ECMA: U+FEFF yes, U+001C..U+001F and U+0085 no), so the class is spelled out, in escapes
    that both dialects read the same way."""
    spaces = [c for c in range(0x110000) if chr(c).isspace()]
    runs: list[tuple[int, int]] = []
    for c in spaces:
        if runs and c == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], c)
        else:
            runs.append((c, c))
    esc = "\\u{:04x}".format
    body = "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in runs)
    return f"[^{body}]"


def _error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def spec(settings: RestSettings | None = None) -> dict[str, Any]:
    """The OpenAPI document for an app built with ``settings`` (defaults if None)."""
    s = settings or RestSettings()
    review_id = {"oneOf": [
        {"type": "string", "minLength": 1, "maxLength": s.max_id_chars},
        {"type": "integer", "minimum": INT_ID_MIN, "maximum": INT_ID_MAX},
    ], "description": "echoed back on the prediction"}
    review = {
        "type": "object",
        "required": ["id", "text"],
        "properties": {
            "id": review_id,
            "text": {"type": "string", "minLength": 1, "maxLength": s.max_text_chars,
                     # at least one non-whitespace character (a blank review is a 400)
                     "pattern": non_blank_pattern(),
                     "description": "the review; must contain a non-blank character"},
        },
    }
    single = {**review, "not": {"required": ["instances"]},
              "description": "one review (must not also carry 'instances')"}
    batch = {
        "type": "object",
        "required": ["instances"],
        "properties": {"instances": {"type": "array", "minItems": 1, "maxItems": s.max_batch,
                                     "items": {"$ref": "#/components/schemas/Review"}}},
        "not": {"anyOf": [{"required": ["id"]}, {"required": ["text"]}]},
        "description": f"a batch of 1..{s.max_batch} reviews (must not also carry 'id'/'text')",
    }
    prediction = {
        "type": "object",
        "required": ["id", "label", "score"],
        "additionalProperties": False,
        "properties": {
            "id": review_id,
            "label": {"type": "integer", "enum": [0, 1], "description": "1 = positive"},
            "score": {"type": "number", "minimum": 0, "maximum": 1,
                      "description": "P(positive)"},
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "rest-vs-stream sentiment service",
            "version": "1",
            "description": "The REST twin of the benchmark: one IMDB sentiment model behind "
                           "nginx -> uWSGI -> Flask. Every answer is JSON.",
        },
        "paths": {
            "/predict": {"post": {
                "operationId": "predict",
                "summary": "Predict the sentiment of one review or a batch",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"oneOf": [{"$ref": "#/components/schemas/Single"},
                                         {"$ref": "#/components/schemas/Batch"}]}}},
                    "description": f"at most {s.max_body_bytes} bytes"},
                "responses": {
                    "200": {"description": "one prediction per review, in request order",
                            "headers": {REST_HEADER: {
                                "description": "the worker process that answered "
                                               "(<hostname>/<pid>); the load generator counts "
                                               "answers per worker",
                                "required": True, "schema": {"type": "string", "minLength": 3}}},
                            "content": {"application/json": {"schema": {
                                "$ref": "#/components/schemas/Predictions"}}}},
                    "400": _error("not a valid review or batch; the message says why"),
                    "413": _error(f"body over {s.max_body_bytes} bytes"),
                    "500": _error("the model failed on this request (logged)"),
                    "502": _error("no uWSGI worker could take the request (behind nginx)"),
                    "504": _error(f"no answer within {s.read_timeout_s}s (behind nginx)"),
                },
            }},
            "/healthz": {"get": {
                "operationId": "healthz",
                "summary": "Liveness and the model this worker loaded",
                "responses": {"200": {"description": "the worker is up with its model loaded",
                                      "content": {"application/json": {"schema": {
                                          "$ref": "#/components/schemas/Health"}}}}},
            }},
        },
        "components": {"schemas": {
            "Review": review,
            "Single": single,
            "Batch": batch,
            "Prediction": prediction,
            "Predictions": {
                "type": "object", "required": ["predictions"], "additionalProperties": False,
                "properties": {"predictions": {
                    "type": "array", "items": {"$ref": "#/components/schemas/Prediction"}}},
            },
            "Health": {
                "type": "object", "required": ["status", "ready", "model", "pid"],
                "properties": {"status": {"type": "string", "enum": ["ok"]},
                               "ready": {"type": "boolean"}, "model": {"type": "string"},
                               "model_load_s": {"type": "number"}, "pid": {"type": "integer"}},
            },
            "Error": {"type": "object", "required": ["error"],
                      "properties": {"error": {"type": "string", "minLength": 1}}},
        }},
    }
