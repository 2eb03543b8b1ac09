"""A model the user brings (``RVS_MODEL=package.module:factory``), held to the contract.

The factory is imported and called with no arguments; what it returns must have
``predict_batch`` and an ``info`` that declares the contract (services/model/contract.py). The
loaded model is wrapped in :class:`Contracted`, so every caller (both deployments, the bench's
ceiling) gets calls of at most ``max_batch`` inputs and one answer per input, or a
:class:`~services.model.contract.ModelFault` that names the model.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from .artifact import ModelError
from .contract import Contract, ContractError, call

_FACTORY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


def is_factory_spec(spec: str) -> bool:
    return bool(_FACTORY.match(spec))


class Contracted:
    """A user's model behind its declared contract: longer lists are split into calls of at
    most ``max_batch`` inputs; every call is checked (:func:`~services.model.contract.call`)."""

    def __init__(self, model: Any, contract: Contract, info: dict[str, Any]):
        self.model, self.contract, self.info = model, contract, info
        self._predict = model.predict_batch

    def predict_batch(self, inputs: list) -> list:
        n, c = self.contract.max_batch or len(inputs) or 1, self.contract
        if len(inputs) <= n:
            out = call(self._predict, c, inputs)
            return out if isinstance(out, list) else list(out)
        out: list = []
        for i in range(0, len(inputs), n):
            out.extend(call(self._predict, c, inputs[i:i + n]))
        return out

    def __repr__(self) -> str:
        return f"<Contracted {self.contract.label} max_batch={self.contract.max_batch}>"


def load_factory(spec: str) -> Contracted:
    """Import ``package.module``, call ``factory()``, check what it returns against the
    contract; :class:`ModelError` (one line) for anything that is not right."""
    module_name, factory_name = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"model {spec!r}: cannot import {module_name} ({exc})") from exc
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise ModelError(f"model {spec!r}: {module_name} has no callable {factory_name!r}")
    try:
        model = factory()
    except Exception as exc:  # noqa: BLE001 — the user's code: say whose and what, in one line
        raise ModelError(f"model {spec!r}: {factory_name}() raised {type(exc).__name__}: {exc}"
                         ) from exc
    if not callable(getattr(model, "predict_batch", None)) or not isinstance(
            getattr(model, "info", None), dict):
        raise ModelError(f"model {spec!r}: the factory must return an object with "
                         f"predict_batch(inputs) -> list and info: dict")
    try:
        contract = Contract.declared(model.info, f"model {spec!r}")
    except ContractError as exc:
        raise ModelError(f"{exc}; the contract is in docs/CONTRACTS.md (Model)") from None
    info = {**model.info, "input": contract.input,
            "answer_fields": list(contract.answer_fields) if contract.answer_fields else None,
            "spec": spec}
    return Contracted(model, contract, info)
