"""One model, loaded by name, used by both deployments (see docs/CONTRACTS.md, "Model").

    from services.model import load_model
    m = load_model()                      # $RVS_MODEL, default "imdb-tfidf"
    m.predict_batch(["great film", "dull"])  # -> [(1, 0.97...), (0, 0.08...)]
    m.info                                # name, version, max_batch, batch_wait_ms, ...

``spec`` is ``"imdb-tfidf"`` (the artifact in ``$RVS_MODEL_DIR``, default ``var/model``, built by
``make model``) or ``"package.module:factory"`` (``make bench MODEL=...``): the factory is
imported and called with no arguments and must return an object with
``predict_batch(inputs: list) -> list`` (same length and order, each answer JSON-serialisable) and
``info: dict`` declaring ``name``, ``version``, ``max_batch`` and ``batch_wait_ms``
(services/model/contract.py). ``cost_us`` (default ``$RVS_COST_US``) adds a calibrated synthetic
CPU cost per input to whichever model it is (services/model/cost.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .artifact import ArtifactError, ModelError, ModelNotFoundError, load_artifact, model_dir
from .contract import Contract, ModelFault
from .cost import CostError, parse_cost, with_cost
from .data import DataSourceError, data_dir, load_split, sample_reviews, sha256_of
from .plugin import is_factory_spec, load_factory

DEFAULT_MODEL = "imdb-tfidf"

__all__ = [
    "DEFAULT_MODEL",
    "ArtifactError",
    "Contract",
    "DataSourceError",
    "Model",
    "ModelError",
    "ModelFault",
    "ModelNotFoundError",
    "data_dir",
    "load_model",
    "load_split",
    "model_dir",
    "sample_reviews",
    "sha256_of",
]


@runtime_checkable
class Model(Protocol):
    info: dict[str, Any]

    def predict_batch(self, inputs: list) -> list: ...


def load_model(spec: str | None = None, *, model_dir: str | os.PathLike | None = None,
               cost_us: float | str | None = None) -> Model:
    """Load the model named by ``spec`` (None → ``$RVS_MODEL`` → ``"imdb-tfidf"``), with the
    synthetic cost ``cost_us`` (None → ``$RVS_COST_US``; unset or empty: none) added."""
    if spec is None:
        spec = os.environ.get("RVS_MODEL", "").strip() or DEFAULT_MODEL
    if cost_us is None:
        cost_us = os.environ.get("RVS_COST_US", "").strip() or None
    if cost_us is not None:
        if isinstance(cost_us, str) and "," in cost_us:
            raise ModelError(f"RVS_COST_US={cost_us!r} is a list: only an axis (make verdict "
                             f"COST_US=...) runs several costs; give one number to load a model")
        try:
            cost_us = parse_cost(cost_us)
        except CostError as e:
            raise ModelError(str(e)) from None
    if spec == DEFAULT_MODEL:
        model: Any = load_artifact(Path(model_dir) if model_dir is not None else None)
    elif is_factory_spec(spec):
        model = load_factory(spec)
    else:
        raise ModelError(
            f"unknown model {spec!r}: use {DEFAULT_MODEL!r} or 'package.module:factory' (RVS_MODEL)"
        )
    return with_cost(model, cost_us) if cost_us is not None else model
