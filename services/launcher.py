"""Bring up a deployment (REST, stream, or both) on the local machine, on real parts.

``deploy`` is the single code path the CLI, the bench and the tests use to start a mode, so what a
test proves about start-up and shutdown is what the benchmark runs. Everything started goes
through one :class:`~services.procs.Supervisor` and is stopped by PID when the ``with`` block ends,
normally or by an exception.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from services.procs import Supervisor

MODES = ("rest", "stream")


@dataclass
class Deployment:
    """What a driver needs to reach a running mode, and what meta.json records about it."""

    mode: str
    url: str | None = None            # REST: base URL of nginx
    bootstrap: str | None = None      # stream: Kafka bootstrap address
    topics: dict[str, str] = field(default_factory=dict)
    service_pids: list[int] = field(default_factory=list)   # roots of the service's process trees
    settings: dict[str, Any] = field(default_factory=dict)  # every effective setting
    versions: dict[str, Any] = field(default_factory=dict)
    broker: dict[str, Any] = field(default_factory=dict)
    processes: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _as_dict(obj: Any) -> dict:
    if is_dataclass(obj):
        return asdict(obj)
    return dict(obj)


@contextlib.contextmanager
def deploy(mode: str, run_dir: Path, *, overrides: Mapping[str, Any] | None = None,
           service_cpus=None, broker_cpus=None, bootstrap: str | None = None,
           sup: Supervisor | None = None) -> Iterator[Deployment]:
    """Start ``mode`` under ``run_dir`` and yield its :class:`Deployment`; stop it on exit.

    ``bootstrap`` None means: start a fresh embedded broker (one per run, on a fresh log
    directory, so no run reads another's messages). A given bootstrap (a real Kafka) is used as is.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    run_dir = Path(run_dir)
    own = sup is None
    sup = sup or Supervisor(run_dir / "logs")
    try:
        if mode == "rest":
            yield _deploy_rest(sup, run_dir, overrides or {}, service_cpus)
        else:
            yield _deploy_stream(sup, run_dir, overrides or {}, service_cpus, broker_cpus, bootstrap)
    finally:
        if own:
            sup.stop_all()


def _deploy_rest(sup, run_dir, overrides, cpus) -> Deployment:
    from services.rest.launch import start
    from services.rest.settings import RestSettings

    settings = RestSettings.from_dict(dict(overrides))
    ep = start(sup, settings, run_dir, cpus=cpus)
    return Deployment(
        mode="rest", url=ep.url, service_pids=[ep.uwsgi_pid, ep.nginx_pid],
        settings=_as_dict(ep.settings), versions=dict(ep.versions), processes=sup.describe(),
    )


def _deploy_stream(sup, run_dir, overrides, cpus, broker_cpus, bootstrap) -> Deployment:
    from services.broker import describe_broker, start_broker
    from services.stream.launch import start
    from services.stream.settings import StreamSettings, broker_defaults

    if bootstrap is None:
        broker = start_broker(sup, run_dir, cpus=broker_cpus)
        bootstrap = broker.bootstrap
        broker_info = {**broker.to_dict(), "embedded": True,
                       "cpus": list(broker_cpus) if broker_cpus else None}
    else:
        broker_info = {**_as_dict(describe_broker(bootstrap)), "embedded": False}
    settings = StreamSettings.from_dict({**broker_defaults(broker_info.get("name", "")),
                                         **dict(overrides), "bootstrap": bootstrap})
    ep = start(sup, settings, run_dir, bootstrap=bootstrap, cpus=cpus)
    return Deployment(
        mode="stream", bootstrap=bootstrap, topics=dict(ep.topics),
        service_pids=list(ep.worker_pids), settings=_as_dict(ep.settings),
        versions={**dict(ep.versions), "broker": broker_info}, broker=broker_info,
        processes=sup.describe(),
    )


@contextlib.contextmanager
def attach(mode: str, *, url: str | None = None, bootstrap: str | None = None,
           topics: Mapping[str, str] | None = None) -> Iterator[Deployment]:
    """A deployment someone else runs (``docker compose up``, a real cluster): nothing is
    started or stopped here; the run records what it was pointed at and what the broker says.

    The same drivers then run against it, so a compose run and a local run differ only in where
    the services are, never in how they are driven or measured.
    """
    if mode == "rest":
        if not url:
            raise ValueError("attach rest: a base URL is needed (e.g. http://127.0.0.1:8080)")
        _check_health(url)
        yield Deployment(mode="rest", url=url.rstrip("/"),
                         settings={"external": True, "url": url.rstrip("/")})
        return
    if mode != "stream":
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if not bootstrap:
        raise ValueError("attach stream: a Kafka bootstrap address is needed (HOST:PORT)")
    from services.broker import describe_broker

    names = {"requests": "requests", "predictions": "predictions", "dlq": "requests.dlq",
             **dict(topics or {})}
    info = {**_as_dict(describe_broker(bootstrap)), "embedded": False}
    yield Deployment(mode="stream", bootstrap=bootstrap, topics=names,
                     settings={"external": True, "bootstrap": bootstrap, "topics": names},
                     versions={"broker": info}, broker=info)


def _check_health(url: str, timeout_s: float = 5.0) -> None:
    """One clear line when the REST deployment is not there, instead of a run of refusals."""
    import urllib.error
    import urllib.request

    from services.procs import LaunchError

    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/healthz", timeout=timeout_s) as r:
            if r.status == 200:
                return
            problem = f"answered {r.status}"
    except (urllib.error.URLError, OSError) as e:
        problem = str(getattr(e, "reason", e))
    raise LaunchError(f"rest: {url}/healthz is not healthy ({problem}); is `docker compose up` "
                      f"running (make up)?")
