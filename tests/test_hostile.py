"""Hostile clients against the real REST stack, and every listener of the local stack on loopback.

The REST stack (nginx -> uWSGI -> Flask, real model) runs with its hostile-client limits set
small (1-2 s timeouts, 64 connections, 8 requests per address) so that each attack ends quickly;
the limits themselves are RestSettings fields, rendered into nginx.conf. Attackers connect from
127.0.0.2 (the whole of 127/8 is loopback; the server still listens on 127.0.0.1 only), the
well-behaved client from 127.0.0.1, so a per-address limit can tell them apart as it would two
hosts. Every loop is bounded in time and count; every socket is closed at the end.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import psutil
import pytest

from services.rest.config import render
from services.rest.settings import RestSettings, SettingsError

sys.path.insert(0, str(Path(__file__).parent))
from fixtures.stack import needs_model  # noqa: E402

ATTACKER = "127.0.0.2"
GOOD = {"id": "good", "text": "A wonderful, moving film. Great acting and a superb story."}
#: a well-behaved request must be answered within this, attack or not (a liveness bound)
GOOD_BOUND_S = 5.0

HOSTILE = RestSettings(processes=1, client_header_timeout_s=1, client_body_timeout_s=2,
                       worker_connections=64, limit_conn_per_ip=8)


# -- settings and rendering (unit) ---------------------------------------------------------------

def test_limits_are_rendered_and_recorded(tmp_path):
    r = render(HOSTILE, tmp_path, cpus=[0])
    conf = r.nginx_conf.read_text()
    for line in ("client_header_timeout 1s;", "client_body_timeout 2s;",
                 "client_header_buffer_size 1k;", "large_client_header_buffers 4 2k;",
                 "limit_conn_zone $binary_remote_addr zone=rvs_per_ip:1m;",
                 "limit_conn rvs_per_ip 8;", "limit_conn_status 429;",
                 "error_page 429 /_rvs_error/429;", "reset_timedout_connection on;",
                 "uwsgi_request_buffering on;", "worker_connections 64;"):
        assert line in conf, line
    assert f"max-vars = {HOSTILE.max_header_lines + 14}" in r.uwsgi_ini.read_text()
    saved = orjson.loads(r.settings_json.read_bytes())   # what meta.json records
    for k in ("client_header_timeout_s", "client_body_timeout_s", "client_header_buffer_size",
              "large_client_header_buffers", "large_client_header_buffer_size",
              "limit_conn_per_ip"):
        assert saved[k] == getattr(HOSTILE, k), k
    off = render(RestSettings(limit_conn_per_ip=0), tmp_path / "off", cpus=[0])
    assert "limit_conn_zone" not in off.nginx_conf.read_text()
    assert "limit_conn rvs_per_ip" not in off.nginx_conf.read_text()


@pytest.mark.parametrize("bad", [
    {"client_header_timeout_s": 0}, {"client_body_timeout_s": 0},
    {"client_header_timeout_s": "1"}, {"large_client_header_buffers": 0},
    {"client_header_buffer_size": "64"}, {"large_client_header_buffer_size": "lots"},
    {"large_client_header_buffer_size": "512", "client_header_buffer_size": "1k"},
    {"limit_conn_per_ip": -1},
    {"limit_conn_per_ip": 32, "worker_connections": 64},       # one address could take them all
    {"large_client_header_buffers": 8, "large_client_header_buffer_size": "8k"},  # > uWSGI's
])
def test_bad_limits_are_rejected(bad):
    with pytest.raises(SettingsError):
        RestSettings.from_dict(bad)


def test_defaults_keep_every_header_block_nginx_accepts_within_uwsgi():
    s = RestSettings()
    assert s.uwsgi_packet_bound <= s.uwsgi_buffer_size
    assert 2 * s.limit_conn_per_ip < s.worker_connections


def test_the_bench_own_load_is_never_shed_by_the_per_address_limit():
    """The load generator connects from 127.0.0.1 like everyone else: each scenario's most
    requests in flight must stay within the limit its REST deployment runs with."""
    from loadgen.scenario import OpenArrival, available, load_scenario

    checked = 0
    for name in available():
        sc = load_scenario(name)
        if "rest" not in sc.modes:
            continue
        limit = RestSettings.from_dict((sc.service or {}).get("rest")).limit_conn_per_ip
        a = sc.arrival
        in_flight = a.max_in_flight if isinstance(a, OpenArrival) else a.max_clients
        assert limit == 0 or in_flight <= limit, (name, in_flight, limit)
        checked += 1
    assert checked
    # the ceiling search and the driver's default too
    assert OpenArrival(rate=None).max_in_flight <= RestSettings().limit_conn_per_ip


# -- the real stack ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from services.procs import Supervisor, group_alive
    from services.rest.launch import start

    run = tmp_path_factory.mktemp("hostile")
    cpus = sorted(os.sched_getaffinity(0))[:1]
    with Supervisor(run / "logs") as sup:
        ep = start(sup, HOSTILE, run / "run", cpus=cpus)
        port = int(ep.url.rsplit(":", 1)[1])
        yield {"ep": ep, "port": port, "run": run / "run"}
        pids = [ep.nginx_pid, ep.uwsgi_pid]
    deadline = time.monotonic() + 10
    while any(group_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(group_alive(p) for p in pids), "a stack process outlived the tests"


def good_request(port: int, timeout: float = GOOD_BOUND_S) -> tuple[int, float, dict | None]:
    """One well-behaved POST from 127.0.0.1: (status or 0 if the connection failed, seconds,
    body)."""
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/predict", body=orjson.dumps(GOOD),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, time.monotonic() - t0, orjson.loads(r.read())
    except (OSError, http.client.HTTPException):
        return 0, time.monotonic() - t0, None
    finally:
        conn.close()


def assert_answered(res: tuple[int, float, dict | None]) -> None:
    st, dt, body = res
    assert st == 200 and body["predictions"][0]["label"] == 1, res
    assert dt < GOOD_BOUND_S, res


class GoodClient:
    """Well-behaved requests, one every ``every`` seconds, in a thread, while an attack runs."""

    def __init__(self, port: int, every: float = 0.25) -> None:
        self.port, self.every = port, every
        self.results: list[tuple[int, float, dict | None]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for _ in range(200):                     # bounded: 200 requests at most
            if self._stop.is_set():
                return
            self.results.append(good_request(self.port))
            self._stop.wait(self.every)

    def __enter__(self) -> GoodClient:
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join(GOOD_BOUND_S + 5)

    def assert_served(self, at_least: int) -> None:
        assert len(self.results) >= at_least, self.results
        for res in self.results:
            assert_answered(res)


@contextlib.contextmanager
def attackers(port: int, n: int) -> Iterator[list[socket.socket]]:
    """``n`` connections from 127.0.0.2 to the server; all closed on exit."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((ATTACKER, 0))
            s.settimeout(5)
            s.connect(("127.0.0.1", port))
        yield socks
    finally:
        for s in socks:
            s.close()


def closed_by_server(s: socket.socket) -> bytes | None:
    """None while the server keeps ``s`` open; else what it sent before closing (b"" for a plain
    close or a reset)."""
    r, _, _ = select.select([s], [], [], 0)
    if not r:
        return None
    data = b""
    with contextlib.suppress(OSError):
        s.setblocking(False)
        for _ in range(64):                      # bounded: an answer is a few hundred bytes
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def wait_closed(socks: list[socket.socket], within: float) -> dict[int, tuple[float, bytes]]:
    """Poll until the server has closed every socket or ``within`` s passed: index -> (seconds,
    what it sent)."""
    t0 = time.monotonic()
    out: dict[int, tuple[float, bytes]] = {}
    while len(out) < len(socks) and time.monotonic() - t0 < within:
        for i, s in enumerate(socks):
            if i not in out and (got := closed_by_server(s)) is not None:
                out[i] = (time.monotonic() - t0, got)
        time.sleep(0.02)
    return out


def timed_out(answer: bytes) -> bool:
    """What nginx does at a client timeout: close (here a reset: reset_timedout_connection) or,
    where it answers at all, a 408."""
    return answer == b"" or answer.startswith(b"HTTP/1.1 408")


@pytest.mark.stack
@needs_model
def test_slowloris_headers_are_cut_off_and_good_clients_are_served(stack):
    """Ten connections trickle a header one byte every 0.1 s and would take 4 s to finish it;
    nginx cuts each off at client_header_timeout (one timer for the whole header, not reset by
    each byte), and a well-behaved client is answered all along."""
    port, timeout = stack["port"], HOSTILE.client_header_timeout_s
    header = b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    cut: dict[int, float] = {}
    with attackers(port, 10) as socks, GoodClient(port) as good:
        t0 = time.monotonic()
        for step in range(4 * timeout * 10):     # bounded: 40 bytes, 0.1 s apart
            for i, s in enumerate(socks):
                if i in cut:
                    continue
                try:
                    s.send(header[step:step + 1])
                except OSError:
                    cut[i] = time.monotonic() - t0
                    continue
                if (got := closed_by_server(s)) is not None:
                    assert timed_out(got), got[:200]
                    cut[i] = time.monotonic() - t0
            if len(cut) == len(socks):
                break
            time.sleep(0.1)
    assert len(cut) == 10, f"nginx left {10 - len(cut)} slow headers open past 4x the timeout"
    assert all(t >= 0.5 * timeout for t in cut.values()), cut   # its timer, not something else
    good.assert_served(at_least=2)


@pytest.mark.stack
@needs_model
def test_unfinished_bodies_are_dropped_and_the_limit_per_address_holds(stack):
    """From one address, 8 + 3 requests announce a body and never finish it: the first 8 (the
    per-address limit) are held until client_body_timeout, then dropped; the 3 beyond it get a
    JSON 429 at once. Another address (the well-behaved client) is served meanwhile, and the
    attacker's address is admitted again once its stalled requests are gone."""
    port, limit = stack["port"], HOSTILE.limit_conn_per_ip
    head = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{\"id\": \"slow\", \"text\": \"")
    with GoodClient(port) as good, attackers(port, limit + 3) as socks:
        for s in socks:
            s.sendall(head)
        got = wait_closed(socks, within=HOSTILE.client_body_timeout_s + 10)
        assert len(got) == len(socks), f"{len(socks) - len(got)} stalled bodies never dropped"
        shed = [ans for _, ans in got.values() if ans.startswith(b"HTTP/1.1 429")]
        held = [(t, ans) for t, ans in got.values() if not ans.startswith(b"HTTP/1.1 429")]
        assert len(shed) == 3, [a[:40] for _, a in got.values()]
        assert all(b'"error":"too many requests in progress' in a for a in shed), shed[0]
        assert len(held) == limit and all(timed_out(a) for _, a in held), held
        assert all(t >= 0.5 * HOSTILE.client_body_timeout_s for t, _ in held), held
        time.sleep(0.5)
    good.assert_served(at_least=2)
    with attackers(port, 1) as (s,):   # the address is admitted again
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        resp = http.client.HTTPResponse(s)
        resp.begin()
        assert resp.status == 200


def _raw(port: int, data: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        resp = http.client.HTTPResponse(s)
        resp.begin()
        return resp.status, resp.read()


@pytest.mark.stack
@needs_model
def test_oversized_headers_are_nginx_400s_and_what_it_accepts_uwsgi_takes(stack):
    port, line = stack["port"], 2048
    req = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    too_large = b'"error":"request header too large"'
    # one header line longer than a large buffer, and a block of short lines larger than all
    for extra in (b"X-Long: " + b"a" * line + b"\r\n",
                  b"".join(b"X-H%03d: %s\r\n" % (i, b"b" * 90) for i in range(100))):
        st, body = _raw(port, req + extra + b"\r\n")
        assert st == 400 and too_large in body, (st, body[:200])
    # within nginx's caps: 800 short lines (uWSGI's default max-vars drops these with a 502:
    # "max vec size reached"), and long lines filling most of the header buffers
    for extra in (b"a:\r\n" * 800, b"".join(b"X-H%d: %s\r\n" % (i, b"c" * 1000)
                                            for i in range(6))):
        st, body = _raw(port, req + extra + b"\r\n")
        assert st == 200 and orjson.loads(body)["ready"] is True, (st, body[:200])
    assert_answered(good_request(port))
    assert "Traceback" not in (stack["run"] / "uwsgi.log").read_text()


@pytest.mark.stack
@needs_model
def test_idle_connections_never_lock_out_a_good_client(stack):
    """Twice worker_connections idle connections (opened, nothing sent): nginx keeps serving a
    well-behaved client (it reclaims connections that have sent nothing when it runs out), closes
    every idle one by client_header_timeout, and its processes survive."""
    ep, port = stack["ep"], stack["port"]
    before = sorted(p.pid for p in psutil.Process(ep.nginx_pid).children())
    n = 2 * HOSTILE.worker_connections
    with attackers(port, n) as socks:
        for _ in range(5):
            assert_answered(good_request(port))
        got = wait_closed(socks, within=HOSTILE.client_header_timeout_s + 10)
        assert len(got) == n, f"{n - len(got)} idle connections still open"
        assert all(ans == b"" for _, ans in got.values())
    assert_answered(good_request(port))
    assert sorted(p.pid for p in psutil.Process(ep.nginx_pid).children()) == before
    # the attack did exhaust nginx's connections (else this test proves nothing)
    assert "worker_connections are not enough" in (stack["run"] / "nginx-error.log").read_text()


# -- every listener on loopback ------------------------------------------------------------------

LOOPBACK = ("127.0.0.1", "::1")


def listeners(pids: list[int]) -> dict[int, list[tuple[str, str, int]]]:
    """The listening sockets (TCP in LISTEN, UDP bound with no peer) of the given processes and
    all their descendants: pid -> [(name, ip, port)]. Read from /proc by psutil (socket inodes
    of /proc/<pid>/fd matched against /proc/<pid>/net/tcp{,6} and udp{,6})."""
    procs: dict[int, psutil.Process] = {}
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(pid)
            procs |= {p.pid: p for p in (root, *root.children(recursive=True))}
    out: dict[int, list[tuple[str, str, int]]] = {}
    for pid, p in procs.items():
        with contextlib.suppress(psutil.NoSuchProcess):
            name = p.name()
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN or (c.type == socket.SOCK_DGRAM and not c.raddr):
                    out.setdefault(pid, []).append((name, c.laddr.ip, c.laddr.port))
    return out


def beyond_loopback(found: dict[int, list[tuple[str, str, int]]]) -> list:
    return [(pid, *sock) for pid, socks in found.items() for sock in socks
            if sock[1] not in LOOPBACK]


def test_the_listener_check_sees_a_wildcard_bind():
    """The check below can fail: a socket of this very process on 0.0.0.0 is reported."""
    with socket.socket() as wild, socket.socket() as local:
        wild.bind(("0.0.0.0", 0))
        wild.listen()
        local.bind(("127.0.0.1", 0))
        local.listen()
        found = listeners([os.getpid()])
        ports = {port for _, _, port in found[os.getpid()]}
        assert {wild.getsockname()[1], local.getsockname()[1]} <= ports
        bad = beyond_loopback(found)
        assert [(ip, port) for _, _, ip, port in bad] == [("0.0.0.0", wild.getsockname()[1])]


@pytest.mark.stack
@needs_model
def test_every_listener_of_the_local_stack_is_on_loopback(tmp_path):
    """Both modes up through the launcher the bench uses (nginx, uWSGI, the embedded broker, a
    Faust worker), with every optional listener switched on (uWSGI on TCP, Faust's web server):
    each process and its children listen on 127.0.0.1 or ::1 only."""
    from services.broker import broker_kind
    from services.launcher import deploy
    from services.procs import Supervisor

    cpus = sorted(os.sched_getaffinity(0))
    svc, brk = ([cpus[0]], [cpus[-1]]) if len(cpus) > 1 else (None, None)
    with Supervisor(tmp_path / "logs") as sup, \
            deploy("rest", tmp_path / "rest", sup=sup, service_cpus=svc,
                   overrides={"processes": 1, "uwsgi_socket": "tcp"}), \
            deploy("stream", tmp_path / "stream", sup=sup, service_cpus=svc, broker_cpus=brk,
                   overrides={"workers": 1, "web_enabled": True}):
        by_name = {p.name: p.pid for p in sup.procs}
        assert {"rest-nginx", "rest-uwsgi", broker_kind(), "stream-worker-0"} <= set(by_name)
        found = listeners(list(by_name.values()))
        # every part was looked at: each has at least one listener of its own
        for name, pid in by_name.items():
            assert found.get(pid), f"{name} (pid {pid}) shows no listener: {found}"
        assert not beyond_loopback(found), f"listening beyond loopback: {beyond_loopback(found)}"
