"""The REST deployment as a registered kind: Flask under uWSGI behind nginx.

Everything the bench needs to know about uWSGI and nginx lives here: how to start and reach the
service, which processes are its workers, how a worker is killed (the master respawns it) and how
the pool is restarted, and when it is whole again (each worker leaves a marker once the model is
loaded).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psutil

from services.registry import Deployment, Kind

#: How long a restarted part may take to be back before the fault is recorded as not ended.
READY_TIMEOUT_S = 60.0
ENGINE = "flask-uwsgi"


class RestKind(Kind):
    driver = "rest"
    packages = ("flask", "pyuwsgi")
    uses_broker = False

    @contextlib.contextmanager
    def deploy(self, sup, run_dir: Path, settings: Mapping[str, Any], *, service_cpus=None,
               broker_cpus=None, bootstrap=None) -> Iterator[Deployment]:
        from services.rest.launch import start
        from services.rest.settings import RestSettings

        s = RestSettings.from_dict(expand_preset(settings, service_cpus))
        ep = start(sup, s, run_dir, cpus=service_cpus)
        yield Deployment(mode=self.name, kind="rest", driver=self.driver, url=ep.url,
                         service_pids=[ep.uwsgi_pid, ep.nginx_pid], settings=dict(ep.settings),
                         versions=dict(ep.versions), processes=sup.describe(), engine=ENGINE)

    @contextlib.contextmanager
    def attach(self, *, url=None, bootstrap=None, topics=None) -> Iterator[Deployment]:
        if not url:
            raise ValueError(f"attach {self.name}: a base URL is needed "
                             f"(e.g. http://127.0.0.1:8080)")
        check_health(url)
        yield Deployment(mode=self.name, kind="rest", driver=self.driver, url=url.rstrip("/"),
                         settings={"external": True, "url": url.rstrip("/")}, engine=ENGINE)

    def engine(self, settings: Mapping[str, Any]) -> str:
        return ENGINE

    # -- faults ---------------------------------------------------------------------------------
    def _master(self, ctx, dep: Deployment):
        for p in self.service_procs(ctx, dep):
            if p.name == "rest-uwsgi":
                return p
        raise RuntimeError("no uWSGI master among the deployment's processes")

    def kill_worker(self, ctx, dep: Deployment, fault, rec: dict) -> None:
        """SIGKILL one uWSGI worker; over when the master's respawned worker has the model."""
        master = self._master(ctx, dep)
        workers = uwsgi_workers(master.pid)
        if not workers:
            raise RuntimeError(f"the uWSGI master {master.pid} has no worker to kill")
        victim = workers[0]
        os.kill(victim, signal.SIGKILL)
        rec.update(t_s=ctx.rel(), target="uwsgi-worker", pid=victim, signal="SIGKILL",
                   master_pid=master.pid, restarted_by="uwsgi master (respawn)")
        new = self._wait_ready(ctx, master, exclude={victim})
        if new:
            rec.update(ended_t_s=ctx.rel(), new_pid=new[0])

    def restart(self, ctx, dep: Deployment, fault, rec: dict) -> None:
        """Stop the uWSGI master and its workers (nginx stays) and start it again: uWSGI's own
        graceful reload (SIGHUP) hangs under the pyuwsgi wheel we ship."""
        from services.rest.config import REPO_ROOT

        old = self._master(ctx, dep)
        rec.update(t_s=ctx.rel(), target="uwsgi", pid=old.pid, signal="SIGTERM")
        ctx.sup.stop(old)
        rec["down_t_s"] = ctx.rel()
        if ctx.sleep(fault.duration_s):
            return
        new = ctx.sup.start(old.name, old.argv, cwd=REPO_ROOT, cpus=old.cpus)
        ctx.replace_pid(old.pid, new.pid)
        rec.update(new_pid=new.pid, restarted_t_s=ctx.rel(), restarted_by="bench")
        if self._wait_ready(ctx, new, exclude=set()):
            rec["ended_t_s"] = ctx.rel()

    def _wait_ready(self, ctx, master, exclude: set[int]) -> list[int]:
        """Wait until the master has a worker not in ``exclude`` that has loaded the model."""
        ready_dir = uwsgi_ready_dir(master.argv)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ctx.stopping() and time.monotonic() < deadline:
            fresh = [w for w in uwsgi_workers(master.pid) if w not in exclude]
            if fresh and (ready_dir is None or all((ready_dir / str(w)).exists() for w in fresh)):
                return fresh
            ctx.sleep(0.05)
        return []


PRESETS = ("protected",)


def expand_preset(settings: Mapping[str, Any], cpus=None) -> dict[str, Any]:
    """``preset: protected`` stands for the shedding settings sized for these workers and cores
    (services/rest/settings.py ``protected_preset``); the other settings go on top."""
    out = dict(settings)
    name = out.pop("preset", None)
    if name is None:
        return out
    from services.rest.settings import RestSettings, protected_preset

    if name not in PRESETS:
        raise ValueError(f"rest: unknown preset {name!r} (known: {', '.join(PRESETS)})")
    return {**protected_preset(RestSettings.from_dict(out), cpus=cpus), **out}


def uwsgi_workers(master_pid: int) -> list[int]:
    """PIDs of the uWSGI master's children (its workers), sorted."""
    try:
        return sorted(c.pid for c in psutil.Process(master_pid).children())
    except psutil.Error:
        return []


def uwsgi_ready_dir(argv: list[str]) -> Path | None:
    """The folder where each uWSGI worker leaves a marker named after its PID once the model is
    loaded (``RVS_REST_READY_DIR`` in the rendered ini)."""
    try:
        ini = Path(argv[argv.index("--ini") + 1])
        for line in ini.read_text().splitlines():
            k, _, v = line.partition("=")
            if k.strip() == "env" and v.strip().startswith("RVS_REST_READY_DIR="):
                return Path(v.strip().split("=", 1)[1])
    except (ValueError, IndexError, OSError):
        return None
    return None


def check_health(url: str, timeout_s: float = 5.0) -> None:
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
