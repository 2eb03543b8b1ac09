"""Start the REST deployment (uWSGI + nginx) as children of a Supervisor, pinned, and wait for it.

    with Supervisor(log_dir) as sup:
        ep = start(sup, RestSettings(), run_dir, cpus=[0])
        ... ep.url ...
    # on exit the Supervisor stops nginx, then uWSGI (by process group), nothing is left behind
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from services.procs import LaunchError, NotReady, Proc, Supervisor, ensure_port_free, parse_cpus
from services.rest.config import REPO_ROOT, Rendered, render
from services.rest.settings import RestSettings

NGINX_FALLBACKS = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")


@dataclass
class RestEndpoint:
    url: str
    nginx_pid: int
    uwsgi_pid: int
    settings: dict
    versions: dict
    run_dir: Path | None = None
    paths: dict = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list, repr=False)
    ready_s: float | None = None

    def worker_pids(self) -> list[int]:
        """PIDs of the uWSGI workers (children of the master), sorted."""
        import psutil
        try:
            return sorted(c.pid for c in psutil.Process(self.uwsgi_pid).children())
        except psutil.NoSuchProcess:
            return []

    def processes(self) -> list[dict]:
        """Every process of the deployment, for meta.json's modes.rest.processes."""
        import psutil
        out = []
        for role, pid in (("nginx", self.nginx_pid), ("uwsgi", self.uwsgi_pid)):
            out.append({"role": f"{role}-master", "pid": pid})
            with contextlib.suppress(psutil.NoSuchProcess):
                for c in psutil.Process(pid).children():
                    out.append({"role": f"{role}-worker", "pid": c.pid})
        return out


def find_nginx() -> str:
    env = os.environ.get("RVS_NGINX")
    if env:
        if not (Path(env).is_file() and os.access(env, os.X_OK)):
            raise LaunchError(f"RVS_NGINX={env!r} is not an executable file")
        return env
    found = shutil.which("nginx")
    if found:
        return found
    for p in NGINX_FALLBACKS:
        if Path(p).is_file() and os.access(p, os.X_OK):
            return p
    raise LaunchError("nginx not found (looked on PATH and in /usr/sbin); install it: "
                      "apt-get install nginx-light (or set RVS_NGINX=/path/to/nginx)")


def uwsgi_argv() -> list[str]:
    """The ``uwsgi`` entry point of the pyuwsgi wheel in this interpreter's environment."""
    exe = Path(sys.executable).parent / "uwsgi"
    if exe.is_file() and os.access(exe, os.X_OK):
        return [str(exe)]
    try:
        import pyuwsgi  # noqa: F401
    except ImportError:
        raise LaunchError("uWSGI not found: install the project (pip install -e .) so that "
                          "the pyuwsgi wheel provides 'uwsgi'") from None
    return [sys.executable, "-c",
            "import sys; from pyuwsgi import run; sys.argv[0] = 'uwsgi'; run()"]


@lru_cache(maxsize=None)
def _version(argv: tuple[str, ...]) -> str:
    try:
        r = subprocess.run(list(argv), capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    return (r.stdout + r.stderr).strip().splitlines()[-1].strip() if (r.stdout + r.stderr) \
        else "unknown"


def versions(nginx: str | None = None) -> dict:
    nginx = nginx or find_nginx()
    nv = _version((nginx, "-v"))  # "nginx version: nginx/1.22.1"
    nv = nv.split("nginx/", 1)[1] if "nginx/" in nv else nv
    return {"nginx": nv, "uwsgi": _version((*uwsgi_argv(), "--version"))}


def _http_get(host: str, port: int, path: str, timeout: float = 1.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _check_unix_socket_free(path: Path) -> None:
    if not path.exists():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            path.unlink()  # stale file of a stopped run
            return
    raise LaunchError(f"uWSGI: something already listens on {path}; stop it or use another "
                      f"run dir")


def start(sup: Supervisor, settings: RestSettings, run_dir: Path | str, *,
          cpus: Sequence[int] | str | None = None, timeout: float = 30.0) -> RestEndpoint:
    """Start uWSGI (master + workers, model loaded in each) and nginx in front of it, both
    pinned to ``cpus``; return once every worker has loaded the model and ``GET /healthz``
    through nginx answers 200. On failure, what was started here is stopped again."""
    nginx = find_nginx()
    pin = parse_cpus(cpus) if cpus is not None else None
    run_dir = Path(run_dir).resolve()
    r: Rendered = render(settings, run_dir, cpus=list(pin) if pin else None)
    s = r.settings
    ensure_port_free(r.port, s.host, what="nginx (REST)")
    if s.uwsgi_socket == "tcp":
        ensure_port_free(s.uwsgi_port, s.host, what="uWSGI (REST)")
    else:
        _check_unix_socket_free(Path(r.uwsgi_bind))
    vers = versions(nginx)

    t0 = time.monotonic()
    started: list[Proc] = []
    try:
        uw = sup.start("rest-uwsgi", [*uwsgi_argv(), "--ini", r.uwsgi_ini], cwd=REPO_ROOT,
                       cpus=pin)
        started.append(uw)
        ngx = sup.start("rest-nginx", [nginx, "-p", run_dir, "-c", r.nginx_conf,
                                       "-e", r.nginx_error_log], cwd=run_dir, cpus=pin)
        started.append(ngx)
        deadline = t0 + timeout

        # lazy-apps: each worker loads the model and leaves a marker; otherwise the master
        # loads it once before forking (one marker) and the workers inherit it
        n = (s.processes or 1) if s.lazy_apps else 1
        _wait_all([uw, ngx], lambda: len(list(r.ready_dir.iterdir())) >= n, deadline,
                  f"all {n} uWSGI worker(s) loaded the model (log: {r.uwsgi_log})")
        _wait_all([uw, ngx], lambda: _http_get(s.host, r.port, "/healthz")[0] == 200, deadline,
                  f"GET {r.url}/healthz through nginx answers 200 "
                  f"(nginx log: {r.nginx_error_log})")
    except BaseException:
        for p in reversed(started):
            sup.stop(p)
        raise
    return RestEndpoint(url=r.url, nginx_pid=ngx.pid, uwsgi_pid=uw.pid, settings=s.to_dict(),
                        versions=vers, run_dir=run_dir, paths=r.paths(), procs=[uw, ngx],
                        ready_s=round(time.monotonic() - t0, 3))


def _wait_all(procs: list[Proc], check, deadline: float, what: str) -> None:
    """Poll ``check`` until true; fail fast, with the log tail, if any of ``procs`` exits."""
    t0 = time.monotonic()
    while True:
        for p in procs:
            if not p.alive():
                raise NotReady(f"{p.name} exited with code {p.popen.returncode} before {what}; "
                               f"see {p.log_path}:\n{p.log_tail()}")
        with contextlib.suppress(Exception):  # a probe fails many times before it succeeds
            if check():
                return
        if time.monotonic() > deadline:
            raise NotReady(f"not ready after {time.monotonic() - t0:.0f}s: {what}; see "
                           + ", ".join(str(p.log_path) for p in procs)
                           + "".join(f"\n--- {p.name}:\n{p.log_tail()}" for p in procs))
        time.sleep(0.05)


def stop(sup: Supervisor, ep: RestEndpoint) -> None:
    """Stop nginx, then uWSGI (each by its process group)."""
    for p in reversed(ep.procs):
        sup.stop(p)
