"""A synthetic model cost: any model, made a stated amount of CPU per input costlier.

``with_cost(model, 1000)`` answers exactly as ``model`` does, after burning ≈ 1,000 µs of CPU per
input in a pure-Python loop (the GIL held, like a Python model's own work). The loop is
calibrated in the process that loads the model, against ``time.thread_time_ns`` (CPU time of the
calling thread, so a busy neighbour on the core does not change the figure), and then measured
once more: ``info["synthetic_cost"]`` records the stated and the measured µs per input, and
``info["synthetic_cost_us"]`` marks every report of such a run as synthetic. Moving the cost
along an axis (``RVS_COST_US=0,250,1000,4000``) shows where the winner between the deployments
changes as a model gets costlier.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

#: The largest cost one input may be given (1 s of CPU).
MAX_COST_US = 1_000_000.0
_CALIBRATE_US = 5_000.0      # each calibration try burns about this much
_TRIES = 7
_BATCH = 16                  # the batched check: one burn of this many inputs' loops


class CostError(ValueError):
    """A cost setting is not a number of µs in range; the message says which."""


def burn(loops: int) -> int:
    """``loops`` rounds of a 32-bit LCG: plain CPU work the interpreter cannot skip."""
    x = 1
    for _ in range(loops):
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
    return x


@dataclass(frozen=True)
class Calibration:
    """How many loops make one µs of CPU here, and what one input's burn then measured."""
    stated_us: float
    loops_per_input: int
    loops_per_us: float
    measured_us: float          # median CPU µs of one input's burn, measured after calibrating
    measured_spread_us: float   # max - min over those measurements
    measured_batched_us: float  # median CPU µs per input of a burn for _BATCH inputs
    tries: int


def calibrate(cost_us: float, *, clock: Callable[[], int] = time.thread_time_ns,
              tries: int = _TRIES) -> Calibration:
    """Loops per CPU µs (median of ``tries`` runs of ≈ 5 ms), then ``tries`` burns of one input's
    worth and 3 of a batch's, each timed: the measured cost per input, alone and batched."""
    if cost_us <= 0:
        return Calibration(0.0, 0, 0.0, 0.0, 0.0, 0.0, 0)
    probe = 20_000
    burn(probe)   # warm-up
    rates = []
    for _ in range(tries):
        t0 = clock()
        burn(probe)
        us = max((clock() - t0) / 1e3, 1e-3)
        rates.append(probe / us)
        # aim the next try at ≈ 5 ms, changing by at most 4x a try (a coarse clock can't run away)
        probe = min(max(1000, int(probe * _CALIBRATE_US / us), probe // 4), probe * 4)
    per_us = statistics.median(rates)
    loops = max(1, round(per_us * cost_us))
    spent = [_timed(loops, clock) for _ in range(tries)]
    batched = [_timed(loops * _BATCH, clock) / _BATCH for _ in range(3)]
    return Calibration(float(cost_us), loops, round(per_us, 3),
                       round(statistics.median(spent), 2), round(max(spent) - min(spent), 2),
                       round(statistics.median(batched), 2), tries)


def _timed(loops: int, clock: Callable[[], int]) -> float:
    t0 = clock()
    burn(loops)
    return (clock() - t0) / 1e3


def parse_cost(text: str | float | int, what: str = "RVS_COST_US") -> float:
    """One cost in µs per input (``"1000"``, ``1000``, ``"250.5"``)."""
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise CostError(f"{what}={text!r}: expected a number of µs per input, e.g. 1000") from None
    if not 0 <= v <= MAX_COST_US:
        raise CostError(f"{what}={text!r}: must be between 0 and {MAX_COST_US:.0f} µs per input")
    return v


def cost_axis(text: str, what: str = "COST_US") -> list[float]:
    """The costs of an axis, ``"0,250,1000,4000"`` -> ``[0.0, 250.0, 1000.0, 4000.0]``:
    distinct, in the order given."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise CostError(f"{what}={text!r}: expected comma-separated µs per input, e.g. 0,250,1000")
    costs = [parse_cost(p, what) for p in parts]
    if len(set(costs)) != len(costs):
        raise CostError(f"{what}={text!r}: lists a cost twice")
    return costs


class Costly:
    """``model`` plus a calibrated CPU burn of ``cost_us`` per input before each call."""

    def __init__(self, model: Any, cost_us: float, calibration: Calibration | None = None):
        self.model = model
        self.calibration = calibration or calibrate(cost_us)
        self._loops = self.calibration.loops_per_input
        self._predict = model.predict_batch
        self.info = synthetic_info(dict(getattr(model, "info", {}) or {}), self.calibration)

    def predict_batch(self, inputs: list) -> list:
        if self._loops:
            burn(self._loops * len(inputs))
        return self._predict(inputs)

    def __repr__(self) -> str:
        return f"<Costly +{self.calibration.stated_us:g} µs/input {self.model!r}>"


def synthetic_info(info: dict[str, Any], cal: Calibration) -> dict[str, Any]:
    """``info`` with the synthetic cost stated, measured and labelled; a recorded per-prediction
    cost (the IMDB artifact's) has the measured burn added, the original kept beside it."""
    out = dict(info)
    out["synthetic_cost_us"] = cal.stated_us
    out["synthetic_cost"] = {
        **asdict(cal),
        "label": f"synthetic: +{cal.stated_us:g} µs of CPU per input (a calibrated busy loop)",
        "method": "pure-Python loop, calibrated in the loading process against "
                  "time.thread_time_ns (CPU time); measured_us is the median of timed burns of "
                  f"one input's loops, measured_batched_us per input of {_BATCH} inputs' loops",
    }
    cost = info.get("cost_us_per_prediction")
    if isinstance(cost, dict) and cal.stated_us > 0:
        out["base_cost_us_per_prediction"] = cost
        out["cost_us_per_prediction"] = {
            k: round(v + cal.measured_us, 2) if k in ("batch1_median", "batched_median")
            and isinstance(v, (int, float)) else v for k, v in cost.items()}
    return out


def with_cost(model: Any, cost_us: float) -> Costly:
    """``model`` made ``cost_us`` µs of CPU per input costlier (0: labelled, nothing burnt)."""
    return Costly(model, parse_cost(cost_us, "cost_us"))
