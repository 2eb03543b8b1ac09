"""A scenario describes one workload once; both transports are driven from it.

``load_scenario("smoke")`` reads ``scenarios/smoke.yaml``; a path works too. Every key is checked:
an unknown key names itself, where it was found and the keys that are valid there; a bad value says
what was expected. Defaults are filled in here, so :meth:`Scenario.to_dict` is the scenario *as
run* (what ``meta.json`` records).

Shape of a file (every section but ``name`` is optional)::

    name: steady
    description: one line
    modes: [rest, stream]
    payload:  {source: imdb, split: test, sample: 2000, seed: 1}
    workload: {batch_size: 1}          # reviews per operation (one POST / batch_size events)
    arrival:                           # exactly one of open / closed
      open:   {process: poisson, seed: 7, rate: {shape: constant, ops_per_s: 100},
               max_in_flight: 1000, max_lateness_s: 1.0}
      # closed: {clients: 8 | [[at_s, n], ...], think_s: 0}
      # either may state its load relative to a deployment's capacity measured first:
      # open {unit: capacity}: rates are fractions of its saturated ops/s;
      # closed {unit: timeout_fill}: client counts are multiples of the count whose queueing
      # fills client.timeout_s (timeout_s x saturated ops/s), see loadgen/relative.py
    calibration: {mode: rest, warmup_s: 3, duration_s: 8, clients: 4}   # for relative loads
    timing:   {warmup_s: 5, duration_s: 60, drain_s: 10, max_requests: 2000000}
    client:   {timeout_s: 5, stream_timeout_s: null,   # stream: null = timeout_s (see Client)
               retry: {policy: none|fixed|exponential, max_attempts: 1,
                                     backoff_s: 0.1, cap_s: 5, jitter: 1.0}}
    slo:      {p99_ms: 250, max_error_rate: 0.01}
    service:  {rest: {...}, stream: {...}}   # passed through untouched
    faults:   [{at_s: 30, kind: kill_worker, duration_s: 0, modes: [rest]}]
              # kill_worker | restart | pause (duration_s > 0) | kill_broker |
              # pause_broker (stream only): see bench/faults.py

Rates are in *operations* per second (an operation carries ``batch_size`` reviews). Rate shapes:
``constant {ops_per_s}``, ``steps {steps: [[at_s, ops_per_s], ...]}`` (first at 0),
``ramp {from_ops_per_s, to_ops_per_s, start_s, end_s}``,
``burst {base_ops_per_s, peak_ops_per_s, at_s, length_s, every_s}`` (``every_s`` repeats it).
All times are seconds from the start of the schedule (warm-up included).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from services import registry
from services.registry import DEFAULT_MODES as MODES

REPO_ROOT = Path(__file__).resolve().parent.parent
SCENARIO_DIR = REPO_ROOT / "scenarios"

#: How an arrival states its load: absolute, or relative to a calibrated capacity.
OPEN_UNITS = ("ops_per_s", "capacity")
CLOSED_UNITS = ("clients", "timeout_fill")
SOURCES = ("imdb", "synthetic")
SPLITS = ("test", "train")
PROCESSES = ("constant", "poisson")
SHAPES = ("constant", "steps", "ramp", "burst")
RETRY_POLICIES = ("none", "fixed", "exponential")
FAULT_KINDS = ("kill_worker", "pause", "restart", "kill_broker", "pause_broker")
#: Faults of the embedded broker: only the stream has one.
BROKER_FAULT_KINDS = ("kill_broker", "pause_broker")

#: Hard sanity bounds (a typo must not start a 3-day run or a 10^9-request plan).
MAX_SECONDS = 6 * 3600.0
MAX_RATE = 1_000_000.0
MAX_BATCH = 100_000
MAX_REQUESTS = 50_000_000


class ScenarioError(ValueError):
    """A scenario file is wrong; the message names the file, the key path and what is expected."""


# ---------------------------------------------------------------------------------------------
# dataclasses (frozen: a scenario is a value)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Payload:
    source: str = "imdb"        # imdb (services.model.data.sample_reviews) | synthetic
    split: str = "test"
    sample: int = 2000          # distinct reviews drawn with ``seed``, then cycled
    seed: int = 0
    text_bytes: int = 1300      # synthetic only: length of each generated review


@dataclass(frozen=True)
class Workload:
    batch_size: int = 1


@dataclass(frozen=True)
class RateConstant:
    ops_per_s: float
    shape: str = "constant"


@dataclass(frozen=True)
class RateSteps:
    steps: tuple[tuple[float, float], ...]   # ((at_s, ops_per_s), ...), first at 0
    shape: str = "steps"


@dataclass(frozen=True)
class RateRamp:
    from_ops_per_s: float
    to_ops_per_s: float
    start_s: float = 0.0
    end_s: float | None = None               # None = end of the measured window
    shape: str = "ramp"


@dataclass(frozen=True)
class RateBurst:
    base_ops_per_s: float
    peak_ops_per_s: float
    at_s: float
    length_s: float
    every_s: float | None = None             # None = one burst
    shape: str = "burst"


Rate = RateConstant | RateSteps | RateRamp | RateBurst


@dataclass(frozen=True)
class OpenArrival:
    rate: Rate
    process: str = "poisson"
    seed: int = 0
    max_in_flight: int = 1000     # REST: concurrent requests (= connections) the driver allows
    max_lateness_s: float = 1.0   # a send later than this after its intended time is not sent:
    #                               its row says generator_saturated
    unit: str = "ops_per_s"       # "capacity": every rate is a fraction of the calibrated ops/s
    model: str = "open"


@dataclass(frozen=True)
class ClosedArrival:
    clients: tuple[tuple[float, int], ...]   # ((at_s, n_clients), ...), first at 0; with unit
    #                                          timeout_fill the counts are multiples (floats)
    think_s: float = 0.0
    unit: str = "clients"
    model: str = "closed"

    @property
    def max_clients(self) -> int:
        return max(n for _, n in self.clients)


Arrival = OpenArrival | ClosedArrival


@dataclass(frozen=True)
class Timing:
    warmup_s: float = 5.0
    duration_s: float = 60.0
    drain_s: float = 10.0
    max_requests: int = 2_000_000  # operations; the plan never grows beyond it

    @property
    def horizon_s(self) -> float:
        """New operations start before this (warm-up + measured window)."""
        return self.warmup_s + self.duration_s

    @property
    def end_s(self) -> float:
        return self.warmup_s + self.duration_s + self.drain_s


@dataclass(frozen=True)
class Retry:
    policy: str = "none"
    max_attempts: int = 1         # attempts in all, the first included
    backoff_s: float = 0.1
    cap_s: float = 5.0
    jitter: float = 0.0           # 0 = none; 1 = full jitter: delay * U(0, 1]; true == 1


@dataclass(frozen=True)
class Client:
    """How long a client waits, and whether it tries again.

    ``stream_timeout_s``: how long a stream client waits for its predictions, when that differs
    from the REST client's ``timeout_s``. A REST caller holds a connection and gives up (then
    retries) at ``timeout_s``; an asynchronous consumer of a predictions topic has no connection
    to abandon, so the article's batch job waited for its answers however long they took. None =
    the same deadline on both sides (the apples-to-apples default).
    """

    timeout_s: float = 5.0
    retry: Retry = field(default_factory=Retry)
    stream_timeout_s: float | None = None
    protection: Protection = field(default_factory=lambda: Protection())

    @property
    def stream_deadline_s(self) -> float:
        return self.stream_timeout_s if self.stream_timeout_s is not None else self.timeout_s


@dataclass(frozen=True)
class BreakerSettings:
    """A circuit breaker shared by the REST driver's clients (loadgen/resilience.py)."""
    window: int = 20                # the last N attempts the failure ratio is taken over
    min_attempts: int = 10          # no verdict on the ratio before this many in the window
    failure_ratio: float = 0.5      # opens when failed / attempts in the window >= this
    consecutive_failures: int = 0   # opens after this many failures in a row; 0 = off
    cooldown_s: float = 5.0         # open (every attempt short-circuited) this long
    half_open_probes: int = 1       # then this many trial attempts; all ok = closed again


@dataclass(frozen=True)
class BudgetSettings:
    """A retry budget (Finagle's RetryBudget defaults): retries in the last ``ttl_s`` may be
    ``percent`` of the requests in it, plus ``min_retries_per_s`` x ``ttl_s`` always."""
    percent: float = 20.0
    ttl_s: float = 10.0
    min_retries_per_s: float = 10.0


@dataclass(frozen=True)
class Protection:
    """``client.protection``: REST client protections, each off (None) unless given."""
    breaker: BreakerSettings | None = None
    retry_budget: BudgetSettings | None = None


@dataclass(frozen=True)
class Slo:
    p99_ms: float | None = None
    max_error_rate: float | None = None


@dataclass(frozen=True)
class Fault:
    at_s: float
    kind: str
    duration_s: float = 0.0
    modes: tuple[str, ...] = MODES


@dataclass(frozen=True)
class Calibration:
    """The short saturated phase that measures ``mode``'s capacity before a scenario whose load
    is relative to it: closed loop, ``clients`` clients, the scenario's own payload and batch."""
    mode: str = "rest"
    warmup_s: float = 3.0
    duration_s: float = 8.0
    clients: int = 4


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    modes: tuple[str, ...]
    payload: Payload
    workload: Workload
    arrival: Arrival
    timing: Timing
    client: Client
    slo: Slo
    service: dict[str, dict]
    faults: tuple[Fault, ...] = ()
    calibration: Calibration | None = None   # set when the arrival's load is relative
    source: str | None = field(default=None, compare=False)  # file it came from (not in to_dict)

    def to_dict(self) -> dict:
        """The scenario as run (defaults filled in), plain JSON types, round-trips via parse."""
        d = asdict(self)
        d.pop("source", None)
        d["modes"] = list(self.modes)
        arr = d.pop("arrival")
        model = arr.pop("model")
        if model == "open":
            arr["rate"] = rate_to_dict(self.arrival.rate)
        else:
            arr["clients"] = [[t, n] for t, n in self.arrival.clients]
        d["arrival"] = {model: arr}
        d["faults"] = [{**f, "modes": list(f["modes"])} for f in d["faults"]]
        d["service"] = copy.deepcopy(self.service)
        if d["calibration"] is None:
            d.pop("calibration")
        return d

    @property
    def is_relative(self) -> bool:
        """Its load is stated relative to a capacity that must be measured first."""
        return self.arrival.unit not in ("ops_per_s", "clients")

    @property
    def is_open(self) -> bool:
        return isinstance(self.arrival, OpenArrival)

    def for_test(self, **timing: float) -> Scenario:
        """A copy with other timing (tests and the capacity benchmark shorten runs)."""
        from dataclasses import replace
        return replace(self, timing=replace(self.timing, **timing))


def rate_to_dict(rate: Rate) -> dict:
    d = asdict(rate)
    shape = d.pop("shape")
    if shape == "steps":
        d["steps"] = [[t, r] for t, r in rate.steps]
    return {"shape": shape, **d}


# ---------------------------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------------------------
class _Ctx:
    def __init__(self, where: str):
        self.where = where

    def err(self, path: str, msg: str) -> ScenarioError:
        return ScenarioError(f"{self.where}: {path}: {msg}")


def _mapping(ctx: _Ctx, value: Any, path: str, valid: tuple[str, ...],
             required: tuple[str, ...] = ()) -> dict:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ctx.err(path, f"must be a mapping with keys {', '.join(valid)}; "
                            f"got {type(value).__name__} {value!r}")
    for k in value:
        if k not in valid:
            raise ctx.err(path, f"unknown key {k!r} (valid keys here: {', '.join(valid)})")
    for k in required:
        if k not in value:
            raise ctx.err(path, f"missing required key {k!r} (keys here: {', '.join(valid)})")
    return value


def _num(ctx: _Ctx, d: dict, key: str, path: str, default: Any, *, lo: float | None = None,
         hi: float | None = None, lo_open: bool = False, integer: bool = False,
         allow_none: bool = False) -> Any:
    p = f"{path}.{key}" if path else key
    v = d.get(key, default)
    if v is None:
        if allow_none:
            return None
        raise ctx.err(p, "is required")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        kind = "an integer" if integer else "a number"
        raise ctx.err(p, f"must be {kind}, got {type(v).__name__} {v!r}")
    if integer:
        if isinstance(v, float) and not v.is_integer():
            raise ctx.err(p, f"must be an integer, got {v!r}")
        v = int(v)
    else:
        v = float(v)
        if not math.isfinite(v):
            raise ctx.err(p, f"must be finite, got {v!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise ctx.err(p, f"must be {'>' if lo_open else '>='} {lo:g}, got {v!r}")
    if hi is not None and v > hi:
        raise ctx.err(p, f"must be <= {hi:g}, got {v!r}")
    return v


def _choice(ctx: _Ctx, d: dict, key: str, path: str, default: Any, valid: tuple[str, ...]) -> str:
    p = f"{path}.{key}" if path else key
    v = d.get(key, default)
    if v not in valid:
        raise ctx.err(p, f"must be one of {', '.join(valid)}; got {v!r}")
    return v


def _modes(ctx: _Ctx, v: Any, path: str) -> tuple[str, ...]:
    """Deployment names from the registry (services/registry.py), each at most once."""
    if isinstance(v, str):
        v = [v]
    known = registry.names()
    if not isinstance(v, (list, tuple)) or not v:
        raise ctx.err(path, f"must be a non-empty list drawn from {', '.join(known)}; got {v!r}")
    for m in v:
        if not isinstance(m, str) or m not in known:
            raise ctx.err(path, f"unknown mode {m!r} (registered deployments: "
                                  f"{', '.join(known)})")
    if len(set(v)) != len(v):
        raise ctx.err(path, f"lists a mode twice: {v!r}")
    return tuple(v)


def _pairs(ctx: _Ctx, v: Any, path: str, what: str, *, integer_second: bool,
           hi_second: float) -> tuple[tuple[float, Any], ...]:
    if not isinstance(v, (list, tuple)) or not v:
        raise ctx.err(path, f"must be a non-empty list of [at_s, {what}] pairs; got {v!r}")
    out = []
    for i, pair in enumerate(v):
        p = f"{path}[{i}]"
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ctx.err(p, f"must be a pair [at_s, {what}]; got {pair!r}")
        at = _num(ctx, {"at_s": pair[0]}, "at_s", p, None, lo=0, hi=MAX_SECONDS)
        val = _num(ctx, {what: pair[1]}, what, p, None, lo=0, hi=hi_second,
                   integer=integer_second)
        out.append((at, val))
    if out[0][0] != 0:
        raise ctx.err(f"{path}[0]", f"the first step must start at 0 s; got {out[0][0]!r}")
    for i in range(1, len(out)):
        if out[i][0] <= out[i - 1][0]:
            raise ctx.err(f"{path}[{i}]", "steps must be in strictly increasing at_s order")
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FilePayload(Payload):
    """``payload: {source: file, path: F, column: text}``: the user's own inputs, read and sampled
    by loadgen/payload_file.py (``column: "*"``: whole rows). ``RVS_PAYLOAD`` (``make bench
    PAYLOAD=F``, with ``RVS_PAYLOAD_COLUMN``) makes every scenario's payload this file, keeping
    its sample and seed. The path is recorded absolute (a relative one is from the cwd)."""
    path: str = ""
    column: str = "text"


def _payload(ctx: _Ctx, v: Any) -> Payload:
    import os  # noqa: PLC0415

    d = _mapping(ctx, v, "payload", ("source", "split", "sample", "seed", "text_bytes", "path",
                                     "column"))
    base = Payload()
    env = os.environ.get("RVS_PAYLOAD", "").strip()
    source = "file" if env else _choice(ctx, d, "source", "payload", base.source,
                                        (*SOURCES, "file"))
    sample = _num(ctx, d, "sample", "payload", base.sample, lo=1, hi=1_000_000, integer=True)
    seed = _num(ctx, d, "seed", "payload", base.seed, lo=0, integer=True)
    if source != "file":
        for k in ("path", "column"):
            if k in d:
                raise ctx.err(f"payload.{k}", "is for source: file only")
        return Payload(
            source=source, split=_choice(ctx, d, "split", "payload", base.split, SPLITS),
            sample=sample, seed=seed,
            text_bytes=_num(ctx, d, "text_bytes", "payload", base.text_bytes, lo=1,
                            hi=10_000_000, integer=True))
    path = env or d.get("path")
    column = (os.environ.get("RVS_PAYLOAD_COLUMN", "").strip() if env else d.get("column")) \
        or "text"
    if not isinstance(path, str) or not path.strip():
        raise ctx.err("payload.path", "source: file needs the path of a .jsonl, .csv or .parquet "
                                      f"file; got {path!r}")
    if not isinstance(column, str):
        raise ctx.err("payload.column", f"must be a column name or '*', got {column!r}")
    return FilePayload(source="file", sample=sample, seed=seed,
                       path=str(Path(path).expanduser().resolve()), column=column)


def _workload(ctx: _Ctx, v: Any) -> Workload:
    d = _mapping(ctx, v, "workload", ("batch_size",))
    return Workload(batch_size=_num(ctx, d, "batch_size", "workload", 1, lo=1, hi=MAX_BATCH,
                                    integer=True))


_SHAPE_KEYS = {
    "constant": ("shape", "ops_per_s"),
    "steps": ("shape", "steps"),
    "ramp": ("shape", "from_ops_per_s", "to_ops_per_s", "start_s", "end_s"),
    "burst": ("shape", "base_ops_per_s", "peak_ops_per_s", "at_s", "length_s", "every_s"),
}


def _rate(ctx: _Ctx, v: Any, path: str) -> Rate:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = {"shape": "constant", "ops_per_s": v}
    if not isinstance(v, dict):
        raise ctx.err(path, f"must be a mapping with 'shape' ({', '.join(SHAPES)}) or a number "
                            f"(constant ops/s); got {v!r}")
    shape = v.get("shape", "constant")
    if shape not in SHAPES:
        raise ctx.err(f"{path}.shape", f"must be one of {', '.join(SHAPES)}; got {shape!r}")
    d = _mapping(ctx, v, f"{path} (shape {shape})", _SHAPE_KEYS[shape])
    r = dict(lo=0, hi=MAX_RATE)
    if shape == "constant":
        return RateConstant(ops_per_s=_num(ctx, d, "ops_per_s", path, None, lo=0, hi=MAX_RATE,
                                           lo_open=True))
    if shape == "steps":
        if "steps" not in d:
            raise ctx.err(path, "shape steps needs 'steps: [[at_s, ops_per_s], ...]'")
        steps = _pairs(ctx, d["steps"], f"{path}.steps", "ops_per_s", integer_second=False,
                       hi_second=MAX_RATE)
        return RateSteps(steps=steps)
    if shape == "ramp":
        start = _num(ctx, d, "start_s", path, 0.0, lo=0, hi=MAX_SECONDS)
        end = _num(ctx, d, "end_s", path, None, lo=0, hi=MAX_SECONDS, allow_none=True)
        if end is not None and end <= start:
            raise ctx.err(f"{path}.end_s", f"must be > start_s ({start:g}); got {end:g}")
        return RateRamp(from_ops_per_s=_num(ctx, d, "from_ops_per_s", path, None, **r),
                        to_ops_per_s=_num(ctx, d, "to_ops_per_s", path, None, **r),
                        start_s=start, end_s=end)
    every = _num(ctx, d, "every_s", path, None, lo=0, lo_open=True, hi=MAX_SECONDS,
                 allow_none=True)
    length = _num(ctx, d, "length_s", path, None, lo=0, lo_open=True, hi=MAX_SECONDS)
    if every is not None and length > every:
        raise ctx.err(f"{path}.length_s", f"must be <= every_s ({every:g}); got {length:g}")
    return RateBurst(base_ops_per_s=_num(ctx, d, "base_ops_per_s", path, None, **r),
                     peak_ops_per_s=_num(ctx, d, "peak_ops_per_s", path, None, **r),
                     at_s=_num(ctx, d, "at_s", path, None, lo=0, hi=MAX_SECONDS),
                     length_s=length, every_s=every)


def _arrival(ctx: _Ctx, v: Any) -> Arrival:
    d = _mapping(ctx, v, "arrival", ("open", "closed"))
    if len(d) != 1:
        raise ctx.err("arrival", "must have exactly one of 'open' (a planned rate) or 'closed' "
                                 f"(client loops); got {sorted(d) or 'none'}")
    if "open" in d:
        o = _mapping(ctx, d["open"], "arrival.open",
                     ("process", "seed", "rate", "max_in_flight", "max_lateness_s", "unit"),
                     required=("rate",))
        p = "arrival.open"
        base = OpenArrival(rate=RateConstant(1.0))
        return OpenArrival(
            rate=_rate(ctx, o["rate"], f"{p}.rate"),
            process=_choice(ctx, o, "process", p, base.process, PROCESSES),
            seed=_num(ctx, o, "seed", p, base.seed, lo=0, integer=True),
            max_in_flight=_num(ctx, o, "max_in_flight", p, base.max_in_flight, lo=1,
                               hi=100_000, integer=True),
            max_lateness_s=_num(ctx, o, "max_lateness_s", p, base.max_lateness_s, lo=0,
                                lo_open=True, hi=3600),
            unit=_choice(ctx, o, "unit", p, base.unit, OPEN_UNITS),
        )
    c = _mapping(ctx, d["closed"], "arrival.closed", ("clients", "think_s", "unit"),
                 required=("clients",))
    p = "arrival.closed"
    unit = _choice(ctx, c, "unit", p, "clients", CLOSED_UNITS)
    absolute = unit == "clients"   # else multiples of a calibrated count (floats)
    raw = c["clients"]
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        n = _num(ctx, c, "clients", p, None, lo=1 if absolute else 0, lo_open=not absolute,
                 hi=100_000, integer=absolute)
        clients: tuple = ((0.0, n),)
    else:
        clients = _pairs(ctx, raw, f"{p}.clients", "clients", integer_second=absolute,
                         hi_second=100_000)
        if absolute and max(n for _, n in clients) < 1:
            raise ctx.err(f"{p}.clients", "at least one step must have >= 1 client")
        if not absolute and max(n for _, n in clients) <= 0:
            raise ctx.err(f"{p}.clients", "at least one step must be > 0")
    return ClosedArrival(clients=clients, unit=unit,
                         think_s=_num(ctx, c, "think_s", p, 0.0, lo=0, hi=3600))


def _calibration(ctx: _Ctx, v: Any, modes: tuple[str, ...]) -> Calibration:
    d = _mapping(ctx, v, "calibration", ("mode", "warmup_s", "duration_s", "clients"))
    base = Calibration(mode=modes[0])
    mode = _choice(ctx, d, "mode", "calibration", base.mode, tuple(registry.names()))
    if mode not in modes:
        raise ctx.err("calibration.mode", f"{mode!r} is not one of the scenario's modes "
                                          f"{list(modes)}")
    return Calibration(
        mode=mode,
        warmup_s=_num(ctx, d, "warmup_s", "calibration", base.warmup_s, lo=0, hi=600),
        duration_s=_num(ctx, d, "duration_s", "calibration", base.duration_s, lo=0,
                        lo_open=True, hi=600),
        clients=_num(ctx, d, "clients", "calibration", base.clients, lo=1, hi=10_000,
                     integer=True))


def _timing(ctx: _Ctx, v: Any) -> Timing:
    d = _mapping(ctx, v, "timing", ("warmup_s", "duration_s", "drain_s", "max_requests"))
    b = Timing()
    return Timing(
        warmup_s=_num(ctx, d, "warmup_s", "timing", b.warmup_s, lo=0, hi=MAX_SECONDS),
        duration_s=_num(ctx, d, "duration_s", "timing", b.duration_s, lo=0, lo_open=True,
                        hi=MAX_SECONDS),
        drain_s=_num(ctx, d, "drain_s", "timing", b.drain_s, lo=0, hi=MAX_SECONDS),
        max_requests=_num(ctx, d, "max_requests", "timing", b.max_requests, lo=1,
                          hi=MAX_REQUESTS, integer=True),
    )


def _protection(ctx: _Ctx, v: Any) -> Protection:
    """``client.protection: {breaker: {...}, retry_budget: {...}}``; each sub-block is off when
    absent, null or false, and takes its defaults when true or {}."""
    p = "client.protection"
    d = _mapping(ctx, v, p, ("breaker", "retry_budget"))

    def block(key: str, valid: tuple[str, ...]) -> dict | None:
        raw = d.get(key)
        if raw is None or raw is False:
            return None
        return _mapping(ctx, {} if raw is True else raw, f"{p}.{key}", valid)

    breaker = budget = None
    b = block("breaker", tuple(BreakerSettings.__dataclass_fields__))
    if b is not None:
        q, base = f"{p}.breaker", BreakerSettings()
        window = _num(ctx, b, "window", q, base.window, lo=1, hi=100_000, integer=True)
        breaker = BreakerSettings(
            window=window,
            min_attempts=_num(ctx, b, "min_attempts", q, min(base.min_attempts, window), lo=1,
                              hi=window, integer=True),
            failure_ratio=_num(ctx, b, "failure_ratio", q, base.failure_ratio, lo=0,
                               lo_open=True, hi=1),
            consecutive_failures=_num(ctx, b, "consecutive_failures", q,
                                      base.consecutive_failures, lo=0, hi=100_000, integer=True),
            cooldown_s=_num(ctx, b, "cooldown_s", q, base.cooldown_s, lo=0, lo_open=True,
                            hi=3600),
            half_open_probes=_num(ctx, b, "half_open_probes", q, base.half_open_probes, lo=1,
                                  hi=10_000, integer=True))
    r = block("retry_budget", tuple(BudgetSettings.__dataclass_fields__))
    if r is not None:
        q, base = f"{p}.retry_budget", BudgetSettings()
        budget = BudgetSettings(
            percent=_num(ctx, r, "percent", q, base.percent, lo=0, hi=1000),
            ttl_s=_num(ctx, r, "ttl_s", q, base.ttl_s, lo=1, hi=3600),
            min_retries_per_s=_num(ctx, r, "min_retries_per_s", q, base.min_retries_per_s,
                                   lo=0, hi=MAX_RATE))
    return Protection(breaker=breaker, retry_budget=budget)


def _client(ctx: _Ctx, v: Any) -> Client:
    d = _mapping(ctx, v, "client", ("timeout_s", "stream_timeout_s", "retry", "protection"))
    timeout = _num(ctx, d, "timeout_s", "client", Client().timeout_s, lo=0, lo_open=True,
                   hi=3600)
    stream_timeout = _num(ctx, d, "stream_timeout_s", "client", None, lo=0, lo_open=True,
                          hi=3600, allow_none=True)
    r = _mapping(ctx, d.get("retry"), "client.retry",
                 ("policy", "max_attempts", "backoff_s", "cap_s", "jitter"))
    p = "client.retry"
    b = Retry()
    policy = _choice(ctx, r, "policy", p, b.policy, RETRY_POLICIES)
    default_attempts = 1 if policy == "none" else 3
    attempts = _num(ctx, r, "max_attempts", p, default_attempts, lo=1, hi=100, integer=True)
    if policy == "none" and attempts != 1:
        raise ctx.err(f"{p}.max_attempts", f"must be 1 with policy none; got {attempts} "
                                           "(choose policy fixed or exponential to retry)")
    jitter = r.get("jitter", b.jitter)
    if isinstance(jitter, bool):
        jitter = 1.0 if jitter else 0.0
    jitter = _num(ctx, {"jitter": jitter}, "jitter", p, None, lo=0, hi=1)
    backoff = _num(ctx, r, "backoff_s", p, b.backoff_s, lo=0, hi=3600)
    cap = _num(ctx, r, "cap_s", p, b.cap_s, lo=0, hi=3600)
    if cap < backoff:
        raise ctx.err(f"{p}.cap_s", f"must be >= backoff_s ({backoff:g}); got {cap:g}")
    return Client(timeout_s=timeout, stream_timeout_s=stream_timeout,
                  retry=Retry(policy=policy, max_attempts=attempts, backoff_s=backoff, cap_s=cap,
                              jitter=jitter),
                  protection=_protection(ctx, d.get("protection")))


def _slo(ctx: _Ctx, v: Any) -> Slo:
    d = _mapping(ctx, v, "slo", ("p99_ms", "max_error_rate"))
    return Slo(p99_ms=_num(ctx, d, "p99_ms", "slo", None, lo=0, lo_open=True, allow_none=True),
               max_error_rate=_num(ctx, d, "max_error_rate", "slo", None, lo=0, hi=1,
                                   allow_none=True))


def _service(ctx: _Ctx, v: Any, modes: tuple[str, ...]) -> dict[str, dict]:
    """Settings per deployment name: the scenario's modes, and any other registered name."""
    valid = tuple(dict.fromkeys([*modes, *registry.names()]))
    d = _mapping(ctx, v, "service", valid)
    out = {}
    for m in dict.fromkeys([*modes, *d]):
        sub = d.get(m) or {}
        if not isinstance(sub, dict):
            raise ctx.err(f"service.{m}", f"must be a mapping of settings; got {sub!r}")
        out[m] = copy.deepcopy(sub)
    return out


def _faults(ctx: _Ctx, v: Any, modes: tuple[str, ...]) -> tuple[Fault, ...]:
    if v is None:
        return ()
    if not isinstance(v, list):
        raise ctx.err("faults", f"must be a list of mappings; got {v!r}")
    out = []
    for i, f in enumerate(v):
        p = f"faults[{i}]"
        d = _mapping(ctx, f, p, ("at_s", "kind", "duration_s", "modes"), required=("at_s", "kind"))
        kind = _choice(ctx, d, "kind", p, None, FAULT_KINDS)
        brokered = [m for m in modes if registry.uses_broker(m)]
        default_modes = brokered if kind in BROKER_FAULT_KINDS else list(modes)
        if not default_modes and "modes" not in d:
            raise ctx.err(p, f"{kind} applies only to a deployment with a broker and the "
                             f"scenario has none")
        fm = _modes(ctx, d.get("modes", default_modes), f"{p}.modes")
        if kind in BROKER_FAULT_KINDS and any(m not in brokered for m in fm):
            raise ctx.err(f"{p}.modes", f"{kind} applies only to a deployment with a broker "
                                        f"(of this scenario's: {brokered or 'none'})")
        out.append(Fault(at_s=_num(ctx, d, "at_s", p, None, lo=0, hi=MAX_SECONDS),
                         kind=kind,
                         duration_s=_num(ctx, d, "duration_s", p, 0.0, lo=0, hi=MAX_SECONDS),
                         modes=fm))
    return tuple(out)


TOP_KEYS = ("name", "description", "modes", "payload", "workload", "arrival", "calibration",
            "timing", "client",
            "slo", "service", "faults")


def parse_scenario(data: Any, where: str = "<scenario>") -> Scenario:
    """Validate a scenario mapping (as read from YAML or produced by ``to_dict``)."""
    ctx = _Ctx(where)
    d = _mapping(ctx, data, "(top level)", TOP_KEYS, required=("name", "arrival"))
    name = d["name"]
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise ctx.err("name", f"must be a non-empty string without '/'; got {name!r}")
    desc = d.get("description", "")
    if not isinstance(desc, str):
        raise ctx.err("description", f"must be a string; got {desc!r}")
    if "\n" in desc.strip():
        raise ctx.err("description", "must be one line")
    modes = _modes(ctx, d.get("modes", list(MODES)), "modes")
    timing = _timing(ctx, d.get("timing"))
    arrival = _arrival(ctx, d["arrival"])
    relative = arrival.unit not in ("ops_per_s", "clients")
    if "calibration" in d and not relative:
        raise ctx.err("calibration", "only a relative load needs one (arrival unit "
                                     "'capacity' or 'timeout_fill')")
    calibration = _calibration(ctx, d.get("calibration"), modes) if relative else None
    faults = _faults(ctx, d.get("faults"), modes)
    for i, f in enumerate(faults):
        if f.at_s >= timing.end_s:
            raise ctx.err(f"faults[{i}].at_s", f"is after the run ends ({timing.end_s:g} s)")
        if f.kind in ("pause", "pause_broker") and f.duration_s <= 0:
            raise ctx.err(f"faults[{i}].duration_s", "a pause needs duration_s > 0 (seconds "
                                                    "between SIGSTOP and SIGCONT)")
    return Scenario(
        name=name.strip(), description=desc.strip(), modes=modes,
        payload=_payload(ctx, d.get("payload")), workload=_workload(ctx, d.get("workload")),
        arrival=arrival, timing=timing, client=_client(ctx, d.get("client")),
        slo=_slo(ctx, d.get("slo")), service=_service(ctx, d.get("service"), modes), faults=faults,
        calibration=calibration,
        source=None if where.startswith("<") else where,
    )


def scenario_path(path_or_name: str | Path) -> Path:
    p = Path(path_or_name)
    if p.suffix in (".yaml", ".yml") or p.exists() or "/" in str(path_or_name):
        return p
    return SCENARIO_DIR / f"{path_or_name}.yaml"


def available() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def load_scenario(path_or_name: str | Path) -> Scenario:
    """``"smoke"`` -> ``scenarios/smoke.yaml``; a path is read as is."""
    path = scenario_path(path_or_name)
    if not path.is_file():
        raise ScenarioError(f"scenario {str(path_or_name)!r} not found (looked at {path}); "
                            f"available: {', '.join(available()) or 'none'}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ScenarioError(f"{path}: not valid YAML: {e}") from None
    return parse_scenario(data, str(path))
