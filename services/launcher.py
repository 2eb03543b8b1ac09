"""Bring up a registered deployment (services/registry.py) on the local machine, on real parts.

``deploy`` is the single code path the CLI, the bench and the tests use to start a deployment, so
what a test proves about start-up and shutdown is what the benchmark runs. Everything started goes
through one :class:`~services.procs.Supervisor` and is stopped by PID when the ``with`` block ends,
normally or by an exception.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from services import registry
from services.procs import Supervisor
from services.registry import DEFAULT_MODES as MODES  # noqa: F401  (the default pair)
from services.registry import Deployment, UnknownDeployment

__all__ = ["MODES", "Deployment", "attach", "deploy"]


def _spec(mode: str) -> registry.Spec:
    try:
        return registry.resolve(mode)
    except UnknownDeployment as e:
        raise ValueError(str(e)) from None


@contextlib.contextmanager
def deploy(mode: str, run_dir: Path, *, overrides: Mapping[str, Any] | None = None,
           service_cpus=None, broker_cpus=None, bootstrap: str | None = None,
           sup: Supervisor | None = None) -> Iterator[Deployment]:
    """Start deployment ``mode`` under ``run_dir`` and yield its :class:`Deployment`; stop it on
    exit. ``overrides``: the scenario's ``service.<mode>`` settings, on top of the name's own."""
    spec = _spec(mode)
    run_dir = Path(run_dir)
    own = sup is None
    sup = sup or Supervisor(run_dir / "logs")
    try:
        service, _client = registry.split_client(registry.settings_for(mode, overrides))
        with spec.impl().deploy(sup, run_dir, service,
                                service_cpus=service_cpus, broker_cpus=broker_cpus,
                                bootstrap=bootstrap) as dep:
            yield dep
    finally:
        if own:
            sup.stop_all()


@contextlib.contextmanager
def attach(mode: str, *, url: str | None = None, bootstrap: str | None = None,
           topics: Mapping[str, str] | None = None) -> Iterator[Deployment]:
    """A deployment someone else runs (``docker compose up``, a real cluster): nothing is
    started or stopped here; the run records what it was pointed at.

    The same drivers then run against it, so a compose run and a local run differ only in where
    the services are, never in how they are driven or measured.
    """
    with _spec(mode).impl().attach(url=url, bootstrap=bootstrap, topics=topics) as dep:
        yield dep
