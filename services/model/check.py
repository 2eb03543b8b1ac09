"""``python -m services.model.check``: is the model ``$RVS_MODEL`` names ready to serve?

Loads it as both deployments will (with ``$RVS_COST_US``; a list, ``0,250,1000``, is checked as an
axis and the model loaded with its first cost), checks its declaration, calls it once on two probe
inputs as a service does (answers counted, rendered, encoded as JSON) and prints one line; exit 2
with one ``error:`` line if anything is wrong. ``make bench MODEL=...`` runs it before the bench.
"""

from __future__ import annotations

import os
import sys

import orjson

from services.model import DEFAULT_MODEL, ModelError, load_model
from services.model.contract import Contract, ContractError, ModelFault, call
from services.model.cost import CostError, cost_axis

PROBES = ["A short probe text, to see the model answer.", "Un deuxième texte pour essayer."]


def check() -> str:
    """The one line saying what is served; raises ModelError / ContractError / ModelFault /
    CostError with the line saying what is wrong."""
    spec = os.environ.get("RVS_MODEL", "").strip() or DEFAULT_MODEL
    costs = os.environ.get("RVS_COST_US", "").strip()
    axis = cost_axis(costs, "COST_US") if "," in costs else None
    model = load_model(spec, cost_us=axis[0] if axis else None)
    contract = Contract.declared(model.info, f"model {spec!r}")
    probe = "json input, not probed" if contract.input == "json" else None
    if probe is None:
        answers = call(model.predict_batch, contract, list(PROBES))
        try:
            orjson.dumps(contract.render(["p0", "p1"], answers))
        except orjson.JSONEncodeError as e:
            raise contract.not_json(answers, e) from None
        probe = f"answers like {orjson.dumps(answers[0]).decode()[:80]}"
    cost = ""
    if axis:
        cost = f"; cost axis {', '.join(f'{c:g}' for c in axis)} µs/input (synthetic)"
    elif "synthetic_cost" in model.info:
        s = model.info["synthetic_cost"]
        cost = (f"; +{s['stated_us']:g} µs/input synthetic (measured {s['measured_us']:g})")
    return (f"model {contract.label}: max_batch {contract.max_batch}, batch_wait_ms "
            f"{contract.batch_wait_ms:g}, {contract.input} input, {probe}{cost}")


def main() -> int:
    try:
        print(check())
    except (ModelError, ContractError, ModelFault, CostError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
