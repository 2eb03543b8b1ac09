"""One model, loaded by name, used by both deployments (see docs/CONTRACTS.md).

    from services.model import load_model
    m = load_model()                      # $RVS_MODEL, default "imdb-tfidf"
    m.predict_batch(["great film", "dull"])  # -> [(1, 0.97...), (0, 0.08...)]
    m.info                                # name, test_accuracy, train_sha256, cost_us_per_prediction, ...

``spec`` is ``"imdb-tfidf"`` (the artifact in ``$RVS_MODEL_DIR``, default ``var/model``, built by
``make model``) or ``"package.module:factory"``: the factory is imported and called with no
arguments and must return an object with ``predict_batch(texts) -> [(label, score)]`` and
``info: dict`` (the user plug point).
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .artifact import ArtifactError, ModelError, ModelNotFoundError, load_artifact, model_dir
from .data import DataSourceError, data_dir, load_split, sample_reviews, sha256_of

DEFAULT_MODEL = "imdb-tfidf"

__all__ = [
    "DEFAULT_MODEL",
    "ArtifactError",
    "DataSourceError",
    "Model",
    "ModelError",
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

    def predict_batch(self, texts: list[str]) -> list[tuple[int, float]]: ...


_FACTORY = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")


def load_model(spec: str | None = None, *, model_dir: str | os.PathLike | None = None) -> Model:
    """Load the model named by ``spec`` (None → ``$RVS_MODEL`` → ``"imdb-tfidf"``)."""
    if spec is None:
        spec = os.environ.get("RVS_MODEL", "").strip() or DEFAULT_MODEL
    if spec == DEFAULT_MODEL:
        return load_artifact(Path(model_dir) if model_dir is not None else None)
    if not _FACTORY.match(spec):
        raise ModelError(
            f"unknown model {spec!r}: use {DEFAULT_MODEL!r} or 'package.module:factory' (RVS_MODEL)"
        )
    module_name, factory_name = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"model {spec!r}: cannot import {module_name} ({exc})") from exc
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise ModelError(f"model {spec!r}: {module_name} has no callable {factory_name!r}")
    model = factory()
    if not callable(getattr(model, "predict_batch", None)) or not isinstance(
        getattr(model, "info", None), dict
    ):
        raise ModelError(
            f"model {spec!r}: the factory must return an object with predict_batch(texts) and info: dict"
        )
    return model
