"""Shedding at nginx past a server-wide limit (RestSettings.limit_conn_total, limit_req_*,
shed_status) and the "protected" preset: rendered as intended, off by default, and on a real
nginx -> uWSGI -> model stack the excess gets a fast 503 while the admitted requests succeed."""

from __future__ import annotations

import contextlib
import http.client
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from services.rest.config import render
from services.rest.settings import (
    SEED_SERVICE_TIME_S,
    RestSettings,
    SettingsError,
    protected_preset,
)

sys.path.insert(0, str(Path(__file__).parent))
from fixtures.stack import needs_model  # noqa: E402

# -- rendering and settings (unit) ----------------------------------------------------------------

def conf(tmp_path: Path, **kw) -> str:
    return render(RestSettings.from_dict(kw), tmp_path, cpus=[0]).nginx_conf.read_text()


def test_shedding_is_off_by_default(tmp_path):
    c = conf(tmp_path)
    assert "rvs_total" not in c and "limit_req" not in c
    assert "limit_conn_status 429;" in c                  # the per-address limit as before
    assert not RestSettings().sheds


def test_the_limits_are_rendered(tmp_path):
    c = conf(tmp_path / "a", limit_conn_total=16, listen=16, limit_req_rate=40,
             limit_req_burst=8)
    for line in ("limit_conn_zone $server_name zone=rvs_total:1m;",
                 "limit_conn rvs_total 16;", "limit_conn rvs_per_ip 2048;",
                 "limit_conn_status 503;",
                 "limit_req_zone $server_name zone=rvs_rate:1m rate=40r/s;",
                 "limit_req zone=rvs_rate burst=8 nodelay;", "limit_req_status 503;"):
        assert line in c, line
    assert "limit_conn_status 429" not in c               # one status per location
    assert '"error":"shed at once: the service is at its limit of 16 requests in progress' in c
    c = conf(tmp_path / "b", limit_req_rate=5, limit_req_nodelay=False, shed_status=429,
             limit_conn_per_ip=0)
    assert "limit_req zone=rvs_rate burst=0;" in c and "limit_req_status 429;" in c
    assert "limit_conn" not in c


@pytest.mark.parametrize("bad", [
    {"shed_status": 500}, {"shed_status": "503"}, {"limit_conn_total": -1},
    {"limit_req_rate": 1.5}, {"limit_req_burst": 4},          # a burst without a rate
    {"limit_conn_total": 64, "listen": 32},                   # admitted, then a 502
    {"limit_conn_total": 4096},                               # 2 x 4096 >= worker_connections
    {"limit_req_nodelay": "yes"},
])
def test_bad_shedding_settings_are_rejected(bad):
    with pytest.raises(SettingsError):
        RestSettings.from_dict(bad)


def test_the_preset_follows_workers_service_time_and_timeout():
    one = protected_preset(RestSettings(processes=1))
    # 1 worker x half of 5 s / 0.25 s per 1,000-review POST
    assert one == {"limit_conn_total": 10, "listen": 10, "shed_status": 503}
    assert SEED_SERVICE_TIME_S == 0.25
    assert protected_preset(RestSettings(processes=2))["limit_conn_total"] == 20
    assert protected_preset(RestSettings(processes=1), timeout_s=10)["limit_conn_total"] == 20
    assert protected_preset(RestSettings(processes=1), service_time_s=0.15)[
        "limit_conn_total"] == 16
    # never below every worker busy plus one waiting
    assert protected_preset(RestSettings(processes=3), service_time_s=60)["limit_conn_total"] == 4
    assert protected_preset(cpus=[0]) == one              # the bench's placement: 1 core
    s = RestSettings.from_dict(one)                       # the overrides are valid as they are
    assert s.sheds and s.limit_conn_total * SEED_SERVICE_TIME_S <= 0.5 * 5.0


# -- the real stack -------------------------------------------------------------------------------

TEXT = ("A wonderful, moving film with great acting, a superb story and a score that stays "
        "with you long after the credits. ") * 10
BATCH = 1000
CLIENTS = 8
CLIENT_TIMEOUT_S = 10.0


def body() -> bytes:
    return orjson.dumps({"instances": [{"id": f"r{i}", "text": f"{TEXT} Review {i}."}
                                       for i in range(BATCH)]})


def burst(port: int, n: int) -> list[tuple[int, float, bytes]]:
    """``n`` clients POST one batch each, released together: (status or 0, seconds, body)."""
    payload, gate = body(), threading.Barrier(n)
    out: list[tuple[int, float, bytes]] = []

    def one() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT_S)
        try:
            conn.connect()
            gate.wait(timeout=10)
            t0 = time.monotonic()
            try:
                conn.request("POST", "/predict", body=payload,
                             headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                out.append((r.status, time.monotonic() - t0, r.read()))
            except (OSError, http.client.HTTPException):
                out.append((0, time.monotonic() - t0, b""))
        finally:
            conn.close()

    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(CLIENT_TIMEOUT_S + 15)
    return out


@contextlib.contextmanager
def stack(tmp_path: Path, **overrides) -> Iterator[int]:
    """A REST stack with one worker on one core; yields nginx's port, stops it on exit."""
    from services.procs import Supervisor
    from services.rest.launch import start

    cpus = sorted(os.sched_getaffinity(0))[:1]
    with Supervisor(tmp_path / "logs") as sup:
        ep = start(sup, RestSettings.from_dict({"processes": 1, **overrides}),
                   tmp_path / "run", cpus=cpus)
        yield int(ep.url.rsplit(":", 1)[1])


@pytest.mark.stack
@needs_model
def test_past_the_limit_the_excess_is_shed_fast_and_the_admitted_succeed(tmp_path):
    """One worker, at most 2 requests in progress, 8 clients at once, 1,000 reviews each: the
    two admitted are answered, the others get a JSON 503 in a small fraction of the client's
    timeout. The same burst with the limit off: no 503, everyone waits in the queue."""
    limit = 2
    with stack(tmp_path / "on", limit_conn_total=limit, listen=limit) as port:
        res = burst(port, CLIENTS)
    ok = [r for r in res if r[0] == 200]
    shed = [r for r in res if r[0] == 503]
    assert len(ok) + len(shed) == CLIENTS, [(st, round(dt, 3)) for st, dt, _ in res]
    # the excess shed: all but the admitted (a few more may slip in as the first ones finish)
    assert limit <= len(ok) <= limit + 2 and len(shed) >= CLIENTS - limit - 2, \
        [(st, round(dt, 3)) for st, dt, _ in res]
    assert all(len(orjson.loads(b)["predictions"]) == BATCH for _, _, b in ok)
    assert all(b"shed at once" in b for _, _, b in shed)
    slowest_shed = max(dt for _, dt, _ in shed)
    fastest_ok = min(dt for _, dt, _ in ok)
    assert slowest_shed < 0.05 * CLIENT_TIMEOUT_S, slowest_shed
    assert slowest_shed < fastest_ok, (slowest_shed, fastest_ok)   # shed, not computed

    with stack(tmp_path / "off") as port:
        res = burst(port, CLIENTS)
    assert sorted(st for st, _, _ in res) == [200] * CLIENTS, \
        [(st, round(dt, 3)) for st, dt, _ in res]
    # and they did queue: the last one waited for the others' batches
    assert max(dt for _, dt, _ in res) > 3 * min(dt for _, dt, _ in res)
