"""Deployments, registered by name: the one place the bench learns what it can deploy.

A *kind* is one way of serving the model (REST behind nginx, a stream worker reading Kafka, ...):
a :class:`Kind` subclass that starts or attaches to it, names the load generator's driver that
speaks its protocol, lists its worker processes and carries out the fault operations. A
*deployment name* is what a scenario's ``modes:`` lists: a kind, or a preset of one (a kind plus
settings, e.g. ``stream-lean`` = the stream kind with ``engine: lean``). Everything in ``bench/``
and ``analysis/`` goes through a kind's interface, so a new engine is one sibling package plus one
:func:`register` line here, and nothing else changes (OpenMessaging Benchmark's driver API, k6's
executor registry).

Kinds are named by ``"module:attr"`` and imported on first use, so this module stays light enough
for the load generator's scenario check. Plug-ins outside this package register in-process with
:func:`register`, or for every process of a run (the driver runs in a subprocess) through
``RVS_DEPLOYMENTS=name=module:attr[,name=module:attr...]``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

#: name -> "module:attr" of the Kind subclass (built in).
_KINDS: dict[str, str] = {
    "rest": "services.rest.deployment:RestKind",
    "stream": "services.stream.deployment:StreamKind",
}

#: name -> (kind, settings): a kind with settings of its own, usable as a deployment name.
_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    # the stream side on the lean consumer loop instead of Faust: the gap is Faust's own cost
    "stream-lean": ("stream", {"engine": "lean"}),
    # REST with the protections a team adds against overload: nginx sheds past a server-wide
    # concurrency limit sized from the workers and the client timeout (a fast 503 instead of a
    # queue that outlives the timeout; services/rest/settings.py protected_preset), and its
    # clients carry a circuit breaker and a retry budget (loadgen/resilience.py)
    "rest-protected": ("rest", {"preset": "protected",
                                "client": {"protection": {"breaker": True,
                                                          "retry_budget": True}}}),
}

#: The default scenario's deployments: the article's twins.
DEFAULT_MODES = ("rest", "stream")

ENV = "RVS_DEPLOYMENTS"


class UnknownDeployment(ValueError):
    pass


def register(name: str, target: str | type, *, kind: str | None = None,
             settings: Mapping[str, Any] | None = None) -> None:
    """Register a kind (``target``: a Kind subclass or ``"module:attr"``), or with ``kind`` a
    preset: that kind plus ``settings``."""
    if kind is not None:
        _PRESETS[name] = (kind, dict(settings or {}))
        return
    _KINDS[name] = target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"
    _loaded.pop(name, None)


def unregister(name: str) -> None:
    _KINDS.pop(name, None)
    _PRESETS.pop(name, None)
    _loaded.pop(name, None)


def _env_kinds() -> dict[str, str]:
    out = {}
    for item in filter(None, (x.strip() for x in os.environ.get(ENV, "").split(","))):
        name, sep, target = item.partition("=")
        if not sep or ":" not in target:
            raise UnknownDeployment(f"{ENV}: {item!r} is not name=module:attr")
        out[name.strip()] = target.strip()
    return out


def names() -> list[str]:
    """Every deployment name a scenario may list: kinds, then presets."""
    kinds = {**_KINDS, **_env_kinds()}
    return [*kinds, *(p for p in _PRESETS if p not in kinds)]


def known(name: str) -> bool:
    return name in names()


_loaded: dict[str, type[Kind]] = {}


def kind_class(kind: str) -> type[Kind]:
    if kind in _loaded:
        return _loaded[kind]
    target = {**_KINDS, **_env_kinds()}.get(kind)
    if target is None:
        raise UnknownDeployment(f"unknown deployment kind {kind!r} (registered: "
                                f"{', '.join(names())})")
    mod, _, attr = target.partition(":")
    obj: Any = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    _loaded[kind] = obj
    return obj


@dataclass(frozen=True)
class Spec:
    """A deployment name resolved: its kind and the settings the name itself brings."""

    name: str
    kind: str
    settings: dict[str, Any] = field(default_factory=dict)

    def impl(self) -> Kind:
        return kind_class(self.kind)(self.name)


def resolve(name: str) -> Spec:
    """``stream-lean`` -> Spec(stream-lean, stream, {engine: lean}); a kind resolves to itself."""
    kinds = {**_KINDS, **_env_kinds()}
    if name in kinds:
        return Spec(name, name, {})
    if name in _PRESETS:
        kind, settings = _PRESETS[name]
        return Spec(name, kind, dict(settings))
    raise UnknownDeployment(f"unknown deployment {name!r} (registered: {', '.join(names())})")


def impl(name: str) -> Kind:
    """The Kind object serving deployment ``name``."""
    return resolve(name).impl()


def settings_for(name: str, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The name's own settings with the scenario's ``service.<name>`` on top."""
    return {**resolve(name).settings, **dict(overrides or {})}


def split_client(settings: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the service's settings, the ``client:`` block its driver runs with instead of the
    scenario's, key by key): a deployment may bring its own clients (a protected REST's
    circuit breaker), so its driver and no other gets them."""
    out = dict(settings)
    client = out.pop("client", None) or {}
    if not isinstance(client, Mapping):
        raise UnknownDeployment(f"a deployment's client settings must be a mapping; got "
                                f"{client!r}")
    return out, dict(client)


# -------------------------------------------------------------------------------------------
# The running deployment, and the interface every kind implements


@dataclass
class Deployment:
    """What a driver needs to reach a running deployment, and what meta.json records about it."""

    mode: str                         # the deployment name (the scenario's modes: entry)
    kind: str = ""
    driver: str = ""                  # the load generator's driver: rest (HTTP) | stream (Kafka)
    url: str | None = None            # HTTP: base URL
    bootstrap: str | None = None      # Kafka: bootstrap address
    topics: dict[str, str] = field(default_factory=dict)
    service_pids: list[int] = field(default_factory=list)   # roots of the service's process trees
    settings: dict[str, Any] = field(default_factory=dict)  # every effective setting
    versions: dict[str, Any] = field(default_factory=dict)
    broker: dict[str, Any] = field(default_factory=dict)
    processes: list[dict] = field(default_factory=list)
    engine: str = ""                  # what serves it, for people and make ceiling

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def address(self) -> str:
        return self.url or self.bootstrap or ""


class Kind:
    """One way of serving the model. Subclass, implement, :func:`register`.

    ``ctx`` in the fault operations is the bench's fault injector (bench/faults.py): it gives
    ``sup`` (the Supervisor), ``rel()`` (seconds on the driver's clock), ``sleep(s)`` (True if the
    drive ended meanwhile), ``stopping()``, ``replace_pid(old, new)`` (keeps the CPU sampler on a
    restarted process) and ``replace_in_group(group, old, new)``. A fault fills ``rec``: ``t_s``
    when it was done, ``target``, ``pid``, and ``ended_t_s`` once the service is whole again.
    """

    #: The load generator's driver that speaks this kind's protocol (loadgen drive <driver>).
    driver: ClassVar[str] = "rest"
    #: True when the kind depends on a broker the bench may start (broker faults apply).
    uses_broker: ClassVar[bool] = False
    #: Python distributions whose versions every run records (meta.json versions.packages).
    packages: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str):
        self.name = name

    # -- life cycle ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def deploy(self, sup, run_dir: Path, settings: Mapping[str, Any], *, service_cpus=None,
               broker_cpus=None, bootstrap: str | None = None) -> Iterator[Deployment]:
        """Start it under ``sup`` (stopped by PID when the Supervisor stops); yield once ready."""
        raise NotImplementedError

    @contextlib.contextmanager
    def attach(self, *, url: str | None = None, bootstrap: str | None = None,
               topics: Mapping[str, str] | None = None) -> Iterator[Deployment]:
        """A deployment someone else runs: nothing is started or stopped."""
        raise NotImplementedError(f"{self.name}: attaching to an external deployment is not "
                                  f"supported")
        yield  # pragma: no cover

    def driver_args(self, dep: Deployment) -> list[str]:
        """Where the driver sends (``--url ...`` or ``--bootstrap ... --topics ...``)."""
        return ["--url", dep.url] if dep.url else ["--bootstrap", str(dep.bootstrap)]

    # -- what it is -----------------------------------------------------------------------------
    def engine(self, settings: Mapping[str, Any]) -> str:
        return self.name

    def model_batch(self, settings: Mapping[str, Any], request_batch: int) -> int:
        """Reviews per model call as this deployment makes them, for ``request_batch`` reviews
        per client request (the ceiling is measured at this batch size)."""
        return max(1, int(request_batch))

    def workers(self, dep: Deployment) -> Any:
        """How many worker processes it was set to run (meta.json ``workers``)."""
        return dep.settings.get("processes") or dep.settings.get("workers")

    # -- faults ---------------------------------------------------------------------------------
    def service_procs(self, ctx, dep: Deployment) -> list:
        by_pid = {p.pid: p for p in ctx.sup.procs}
        return [by_pid[pid] for pid in dep.service_pids if pid in by_pid]

    def pause_targets(self, ctx, dep: Deployment) -> list:
        """The process groups a ``pause`` stops (default: every service process)."""
        return self.service_procs(ctx, dep)

    def kill_worker(self, ctx, dep: Deployment, fault, rec: dict) -> None:
        raise RuntimeError(f"{self.name}: kill_worker is not supported")

    def restart(self, ctx, dep: Deployment, fault, rec: dict) -> None:
        raise RuntimeError(f"{self.name}: restart is not supported")

    def broker_proc(self, ctx, dep: Deployment):
        raise RuntimeError(f"{self.name} has no broker")

    def kill_broker(self, ctx, dep: Deployment, fault, rec: dict) -> None:
        raise RuntimeError(f"{self.name} has no broker")


def packages() -> list[str]:
    """The distributions of every registered kind (a kind that fails to import is skipped)."""
    out: list[str] = []
    for k in {**_KINDS, **_env_kinds()}:
        try:
            out += list(kind_class(k).packages)
        except (ImportError, AttributeError, UnknownDeployment):
            continue
    return out


def uses_broker(name: str) -> bool:
    """True when deployment ``name`` depends on a broker (broker faults apply to it)."""
    return bool(kind_class(resolve(name).kind).uses_broker)
