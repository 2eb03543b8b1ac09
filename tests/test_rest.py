"""REST deployment: the app's contract (unit, fake predictor) and the real stack (nginx + uWSGI).

Unit tests inject a fake predictor into create_app; the stack test (``-m stack``) uses the real
model from ``var/model`` (RVS_MODEL_DIR) behind real nginx and uWSGI on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import sys
import time
from pathlib import Path

import orjson
import pytest

from services.rest.app import create_app
from services.rest.config import render, render_nginx_conf
from services.rest.settings import RestSettings, SettingsError, parse_size

sys.path.insert(0, str(Path(__file__).parent))
from fixtures.hostile import FUZZ_SEED  # noqa: E402
from fixtures.stack import needs_model  # noqa: E402


class FakePredictor:
    """Unit tests only: label = 1 if 'good' in the text; score = a fixed function of the text."""

    info = {"name": "fake-test-predictor"}

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def predict_batch(self, texts):
        self.calls.append(list(texts))
        return [(1 if "good" in t else 0, 0.9 if "good" in t else 0.1) for t in texts]


class ExplodingPredictor(FakePredictor):
    def predict_batch(self, texts):
        raise RuntimeError("boom")


SMALL = RestSettings(max_batch=5, max_text_chars=1000, client_max_body_size="64k")


@pytest.fixture()
def fake():
    return FakePredictor()


@pytest.fixture()
def client(fake):
    return create_app(fake, SMALL).test_client()


def post(client, body, **kw):
    data = body if isinstance(body, (bytes, str)) else orjson.dumps(body)
    return client.post("/predict", data=data, content_type="application/json", **kw)


def err(resp) -> str:
    assert resp.mimetype == "application/json", resp.data[:200]
    doc = orjson.loads(resp.data)
    assert set(doc) == {"error"} and isinstance(doc["error"], str) and doc["error"]
    return doc["error"]


# -- good paths ----------------------------------------------------------------------------------

def test_single_review(client, fake):
    r = post(client, {"id": "a1", "text": "a good film"})
    assert r.status_code == 200 and r.mimetype == "application/json"
    assert orjson.loads(r.data) == {"predictions": [{"id": "a1", "label": 1, "score": 0.9}]}
    assert fake.calls == [["a good film"]]


def test_batch_keeps_order_and_ids(client, fake):
    inst = [{"id": 1, "text": "good"}, {"id": "x", "text": "bad"}, {"id": 1, "text": "good!"}]
    r = post(client, {"instances": inst})
    assert r.status_code == 200
    preds = orjson.loads(r.data)["predictions"]
    assert [p["id"] for p in preds] == [1, "x", 1]
    assert [p["label"] for p in preds] == [1, 0, 1]
    assert all(isinstance(p["score"], float) for p in preds)
    assert fake.calls == [["good", "bad", "good!"]]  # one model call per batch


def test_batch_at_the_limit_and_extra_fields_ignored(client):
    inst = [{"id": i, "text": "good", "sent_at": 1.5} for i in range(SMALL.max_batch)]
    assert post(client, {"instances": inst}).status_code == 200


def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    doc = orjson.loads(r.data)
    assert doc["ready"] is True and doc["model"] == "fake-test-predictor" and doc["pid"] > 0


def test_text_at_max_length_and_unicode(client):
    assert post(client, {"id": "u", "text": "é" * SMALL.max_text_chars}).status_code == 200
    assert post(client, {"id": "u", "text": "good 😀 ünïcödé"}).status_code == 200


# -- bad input: 400 ------------------------------------------------------------------------------

@pytest.mark.parametrize("body, needle", [
    (b"", "empty body"),
    (b"{", "not valid JSON"),
    (b"{'id': 1}", "not valid JSON"),
    (b'{"id": "a", "text": "x"} trailing', "not valid JSON"),
    (b'{"id": "a", "text": "x"}{"id": "b", "text": "y"}', "not valid JSON"),
    (b"NaN", "not valid JSON"),
    (b'{"id": "a", "text": "\xff\xfe bad utf-8"}', "not valid JSON"),
    (b'{"id": "a", "text": "\\ud800 lone surrogate"}', "not valid JSON"),
    (b"[" * 5000 + b"]" * 5000, "not valid JSON"),                      # deep nesting
    (b'{"id": "a", "text": ' + b"[" * 3000 + b"]" * 3000 + b"}", "not valid JSON"),
    (b"[]", "must be a JSON object"),
    (b'"just a string"', "must be a JSON object"),
    (b"123", "must be a JSON object"),
    (b"null", "must be a JSON object"),
    (b"{}", "'id' is missing"),
    (b'{"id": "a"}', "'text' is missing"),
    (b'{"text": "good"}', "'id' is missing"),
    (b'{"id": "a", "text": ""}', "'text' is empty"),
    (b'{"id": "a", "text": "   \\n\\t "}', "'text' is empty"),
    (b'{"id": "a", "text": null}', "'text' must be a string"),
    (b'{"id": "a", "text": 42}', "'text' must be a string"),
    (b'{"id": "a", "text": ["good"]}', "'text' must be a string"),
    (b'{"id": "a", "text": {"t": "good"}}', "'text' must be a string"),
    (b'{"id": null, "text": "good"}', "'id' must be a string or an integer"),
    (b'{"id": true, "text": "good"}', "'id' must be a string or an integer"),
    (b'{"id": 1.5, "text": "good"}', "'id' must be a string or an integer"),
    (b'{"id": 123456789012345678901234567890, "text": "good"}', "'id' must be a string or an"),
    (b'{"id": ["a"], "text": "good"}', "'id' must be a string or an integer"),
    (b'{"id": "", "text": "good"}', "'id' must be 1.."),
    (b'{"instances": []}', "'instances' is empty"),
    (b'{"instances": {}}', "'instances' must be a list"),
    (b'{"instances": "good"}', "'instances' must be a list"),
    (b'{"instances": null}', "'instances' must be a list"),
    (b'{"instances": [1]}', "instances[0] must be a JSON object"),
    (b'{"instances": [{"id": 1, "text": "ok"}, {"id": 2}]}', "instances[1]: 'text' is missing"),
    (b'{"instances": [{"id": 1, "text": "ok"}, {"id": 2, "text": ""}]}', "instances[1]: 'text'"),
    (b'{"instances": [{"id": 1, "text": "ok"}], "id": 1, "text": "x"}', "not both"),
])
def test_bad_input_is_400_and_never_reaches_the_model(client, fake, body, needle):
    r = post(client, body)
    assert r.status_code == 400, r.data[:300]
    assert needle in err(r)
    assert fake.calls == []


def test_id_too_long_and_text_too_long(client, fake):
    assert "'id' must be 1.." in err(post(client, {"id": "x" * 257, "text": "good"}))
    r = post(client, {"id": "a", "text": "g" * (SMALL.max_text_chars + 1)})
    assert r.status_code == 400 and "more than the limit" in err(r)
    assert fake.calls == []


def test_batch_over_the_limit_is_400(client, fake):
    inst = [{"id": i, "text": "good"} for i in range(SMALL.max_batch + 1)]
    r = post(client, {"instances": inst})
    assert r.status_code == 400 and "over the limit of 5" in err(r)
    assert fake.calls == []


def test_error_messages_stay_short_for_huge_inputs(client):
    r = post(client, b'{"id": "a", "text": ' + b"9" * 60000 + b"}")
    assert r.status_code == 400 and len(err(r)) < 500


# -- 413, 404, 405, 500 --------------------------------------------------------------------------

def test_body_over_the_limit_is_413_json(client, fake):
    big = orjson.dumps({"id": "a", "text": "good " * 20000})   # ~100 KB > 64k
    r = post(client, big)
    assert r.status_code == 413 and "over the limit" in err(r)
    assert fake.calls == []


def test_body_over_the_limit_without_content_length_is_413(fake):
    """No Content-Length (a server-terminated stream): the limit applies while reading."""
    app = create_app(fake, SMALL)
    big = orjson.dumps({"id": "a", "text": "good " * 20000})
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/predict", "SERVER_NAME": "t",
               "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
               "wsgi.input": io.BytesIO(big), "wsgi.input_terminated": True,
               "wsgi.errors": io.StringIO(), "CONTENT_TYPE": "application/json"}
    got = {}
    body = b"".join(app(environ, lambda status, headers: got.update(status=status)))
    assert got["status"].startswith("413") and "over the limit" in orjson.loads(body)["error"]
    assert fake.calls == []


def test_unknown_path_and_wrong_method_are_json(client):
    r = client.get("/nope")
    assert r.status_code == 404 and err(r)
    r = client.get("/predict")
    assert r.status_code == 405 and err(r) and "POST" in r.headers["Allow"]
    r = client.post("/healthz")
    assert r.status_code == 405 and err(r)


def test_model_exception_is_a_logged_500_json(caplog):
    c = create_app(ExplodingPredictor(), SMALL).test_client()
    with caplog.at_level("ERROR", logger="services.rest"):
        r = post(c, {"id": "a", "text": "good"})
    assert r.status_code == 500 and "model failed" in err(r)
    assert "model call failed" in caplog.text and "boom" in caplog.text
    # the app stays usable
    assert c.get("/healthz").status_code == 200


def test_model_returning_the_wrong_count_is_500_not_a_crash():
    class Short(FakePredictor):
        def predict_batch(self, texts):
            return [(1, 0.5)]
    r = post(create_app(Short(), SMALL).test_client(),
             {"instances": [{"id": 1, "text": "a"}, {"id": 2, "text": "b"}]})
    assert r.status_code == 500 and err(r)


@pytest.mark.fuzz
def test_fuzz_never_500(client):
    """Random token soup, JSON-ish or not: a 200 or a 400 JSON answer, never a 5xx (the seed is
    the session's fuzz seed; tests/test_fuzz.py has the hypothesis and schemathesis fuzzers)."""
    import random
    rnd = random.Random(FUZZ_SEED)
    atoms = [b"{", b"}", b"[", b"]", b'"id"', b'"text"', b'"instances"', b":", b",", b"1", b"-0",
             b'"x"', b"null", b"true", b"1e999", b'"\\u0000"', b"\xff", b" "]
    for _ in range(400):
        body = b"".join(rnd.choice(atoms) for _ in range(rnd.randint(0, 30)))
        r = post(client, body)
        assert r.status_code in (200, 400), (body, r.status_code, r.data)
        if r.status_code == 400:
            err(r)


# -- settings ------------------------------------------------------------------------------------

def test_settings_unknown_key_lists_valid_ones():
    with pytest.raises(SettingsError) as e:
        RestSettings.from_dict({"procesess": 2})
    msg = str(e.value)
    assert "'procesess'" in msg and "valid keys:" in msg and "processes" in msg and "listen" in msg


@pytest.mark.parametrize("bad", [
    {"harakiri_s": 30, "read_timeout_s": 30},
    {"processes": 0}, {"threads": 0}, {"listen": 0}, {"uwsgi_socket": "pipe"},
    {"port": 70000}, {"client_max_body_size": "lots"}, {"connect_timeout_s": 100},
    {"max_batch": 0}, {"access_log": "yes"}, {"threads": "2"}, {"processes": True},
])
def test_settings_reject_bad_values(bad):
    with pytest.raises(SettingsError):
        RestSettings.from_dict(bad)


def test_settings_roundtrip_and_resolution(monkeypatch, tmp_path):
    s = RestSettings()
    assert RestSettings.from_dict(s.to_dict()) == s
    assert s.host == "127.0.0.1"
    assert s.harakiri_s < s.read_timeout_s
    r1 = s.resolved([0])
    assert r1.processes == 1 and r1.cpus == (0,)
    assert RestSettings(processes=None).resolved([0, 1, 2, 3]).processes == 3
    assert RestSettings(processes=2).resolved([0]).processes == 2
    somax = int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert r1.somaxconn == somax and r1.listen_effective == min(s.listen, somax)
    big = RestSettings(listen=somax + 10).resolved([0])
    assert big.listen_effective == somax
    assert RestSettings.from_dict(r1.to_dict()) == r1
    json.dumps(r1.to_dict())  # meta.json-able


def test_parse_size():
    assert parse_size("10m") == 10 * 1024 * 1024 and parse_size("512k") == 512 * 1024
    assert parse_size(4096) == 4096 and parse_size("2000") == 2000


# -- rendered configs ----------------------------------------------------------------------------

def test_rendered_configs_contain_what_matters(tmp_path):
    r = render(RestSettings(listen=777, harakiri_s=7, read_timeout_s=9,
                            client_max_body_size="3m"), tmp_path, cpus=[0])
    ini = r.uwsgi_ini.read_text()
    conf = r.nginx_conf.read_text()
    assert f"socket = {tmp_path.resolve() / 'uwsgi.sock'}" in ini
    assert "listen = 777" in ini and "harakiri = 7" in ini and "processes = 1" in ini
    for line in ("master = true", "die-on-term = true", "lazy-apps = true", "need-app = true",
                 "strict = true", "module = services.rest.wsgi:application"):
        assert line in ini
    assert f"file:{tmp_path.resolve() / 'uwsgi.log'}" in ini
    assert "uwsgi_read_timeout 9s;" in conf and "client_max_body_size 3m;" in conf
    assert "uwsgi_pass rest_uwsgi;" in conf and f"server unix:{r.uwsgi_bind};" in conf
    assert f"listen 127.0.0.1:{r.port} " in conf
    assert "daemon off;" in conf and "master_process on;" in conf
    assert f"pid {tmp_path.resolve() / 'nginx.pid'};" in conf
    assert f"error_log {tmp_path.resolve() / 'nginx-error.log'}" in conf
    assert "error_page 413 /_rvs_error/413;" in conf and "return 413 '{\"error\":" in conf
    assert "access_log off;" in conf and "/etc/nginx" not in conf and "/var/" not in conf
    for sub in ("client_body_temp_path", "uwsgi_temp_path", "proxy_temp_path"):
        assert f"{sub} {tmp_path.resolve()}" in conf
    saved = orjson.loads(r.settings_json.read_bytes())
    assert saved["port"] == r.port and saved["listen_effective"] == 777


def test_rendered_tcp_upstream_and_keepalive(tmp_path):
    r = render(RestSettings(uwsgi_socket="tcp", upstream_keepalive=8), tmp_path, cpus=[0])
    conf = r.nginx_conf.read_text()
    assert f"server 127.0.0.1:{r.settings.uwsgi_port};" in conf and "keepalive 8;" in conf
    assert f"socket = 127.0.0.1:{r.settings.uwsgi_port}" in r.uwsgi_ini.read_text()


def test_harakiri_below_read_timeout_in_rendered_defaults(tmp_path):
    r = render(RestSettings(), tmp_path, cpus=[0])
    h = int(next(ln for ln in r.uwsgi_ini.read_text().splitlines()
                 if ln.startswith("harakiri")).split("=")[1])
    rt = int(next(ln for ln in r.nginx_conf.read_text().splitlines()
                  if "uwsgi_read_timeout" in ln).split()[1].rstrip("s;"))
    assert h < rt


def test_nginx_accepts_the_rendered_config(tmp_path):
    from services.rest.launch import find_nginx
    try:
        nginx = find_nginx()
    except Exception as e:
        pytest.skip(str(e))
    import subprocess
    r = render(RestSettings(), tmp_path, cpus=[0])
    out = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(r.nginx_conf),
                          "-e", str(r.nginx_error_log)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_render_cli(tmp_path, capsys):
    from services.rest.config import main
    assert main(["render", "--out", str(tmp_path), "--set", "processes=2",
                 "--set", "uwsgi_socket=tcp"]) == 0
    out = capsys.readouterr().out
    assert "uwsgi_ini:" in out and "nginx_conf:" in out
    assert "processes = 2" in (tmp_path / "uwsgi.ini").read_text()
    assert main(["render", "--out", str(tmp_path), "--set", "bogus=1"]) == 2
    assert "valid keys" in capsys.readouterr().err


def test_nginx_conf_never_binds_beyond_the_host(tmp_path):
    conf = render_nginx_conf(RestSettings().resolved([0]), port=1234,
                             upstream="unix:/x.sock", run_dir=tmp_path)
    listens = [ln.strip() for ln in conf.splitlines() if ln.strip().startswith("listen ")]
    assert listens == ["listen 127.0.0.1:1234 backlog=511;"]


# -- the real stack ------------------------------------------------------------------------------

def _raw(port: int, data: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send raw bytes, read the answer (status, body) with http.client's parser."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        resp = http.client.HTTPResponse(s)
        resp.begin()
        return resp.status, resp.read()


def _post(conn: http.client.HTTPConnection, body: bytes, headers: dict | None = None):
    conn.request("POST", "/predict", body=body,
                 headers={"Content-Type": "application/json", **(headers or {})})
    r = conn.getresponse()
    return r.status, r.read(), r.getheader("Content-Type")


@pytest.mark.stack
@needs_model
def test_stack_real_model_through_nginx_and_uwsgi(tmp_path):
    import psutil

    from services.procs import Supervisor, group_alive
    from services.rest.launch import start

    settings = RestSettings(processes=2, client_max_body_size="1m", max_batch=100)
    cpus = sorted(os.sched_getaffinity(0))[:1]
    with Supervisor(tmp_path / "logs") as sup:
        ep = start(sup, settings, tmp_path / "run", cpus=cpus)
        pgids = [ep.uwsgi_pid, ep.nginx_pid]
        assert ep.url.startswith("http://127.0.0.1:")
        assert ep.versions["nginx"][0].isdigit() and ep.versions["uwsgi"][0].isdigit()
        assert ep.settings["processes"] == 2 and ep.settings["cpus"] == cpus
        port = int(ep.url.rsplit(":", 1)[1])
        workers = ep.worker_pids()
        assert len(workers) == 2
        for pid in [ep.uwsgi_pid, ep.nginx_pid, *workers]:
            assert sorted(os.sched_getaffinity(pid)) == cpus

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        # good: single and batch; identical inputs give identical answers
        st, body, ctype = _post(conn, orjson.dumps({"id": "s1", "text": "A wonderful, moving "
                                                    "film. Great acting and a superb story."}))
        assert st == 200 and ctype.startswith("application/json")
        p = orjson.loads(body)["predictions"]
        assert p[0]["id"] == "s1" and p[0]["label"] == 1 and 0.5 < p[0]["score"] <= 1
        texts = ["Terrible, boring, a waste of two hours. Awful.",
                 "A wonderful, moving film. Great acting and a superb story."] * 50
        st, body, _ = _post(conn, orjson.dumps(
            {"instances": [{"id": i, "text": t} for i, t in enumerate(texts)]}))
        assert st == 200
        preds = orjson.loads(body)["predictions"]
        assert [q["id"] for q in preds] == list(range(100))
        assert [q["label"] for q in preds[:2]] == [0, 1]
        assert preds[1]["score"] == p[0]["score"]

        # bad cases through nginx: each gets its status, as JSON
        bad = [
            (b"{", 400), (b'{"id": "a", "text": ""}', 400), (b'{"id": 1.5, "text": "x"}', 400),
            (b'{"instances": []}', 400), (b'{"id": "a", "text": "\xff\xfe"}', 400),
            (b"[" * 100000 + b"]" * 100000, 400),
            (orjson.dumps({"instances": [{"id": i, "text": "x"} for i in range(101)]}), 400),
        ]
        for data, want in bad:
            st, body, ctype = _post(conn, data)
            assert st == want, (data[:60], st, body[:200])
            assert ctype.startswith("application/json") and "error" in orjson.loads(body)
        # 413 from nginx itself (body over client_max_body_size), as JSON
        huge = orjson.dumps({"id": "h", "text": "good " * 400_000})  # ~2 MB > 1m
        st, body = _raw(port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: "
                        b"application/json\r\nContent-Length: " + str(len(huge)).encode()
                        + b"\r\nConnection: close\r\n\r\n" + huge)
        assert st == 413 and "client_max_body_size" in orjson.loads(body)["error"]
        # nginx's own 400 (malformed HTTP) and the app's 404/405, all JSON
        for junk in (b"GARBAGE\r\n\r\n", b"GET /%00 HTTP/1.1\r\nHost: x\r\n\r\n",
                     b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n"):
            st, body = _raw(port, junk)
            assert st == 400 and "error" in orjson.loads(body), (junk[:30], st, body[:200])
        st, body = _raw(port, b"GET /_rvs_error/502 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert st == 404 and "error" in orjson.loads(body)
        conn.request("GET", "/predict")
        r = conn.getresponse()
        assert r.status == 405 and "error" in orjson.loads(r.read())

        # a burst of 100 malformed requests leaves every worker alive, and a good one succeeds
        nasty = [b"{", b"\xff" * 100, b"[" * 50000, b'{"id": {}, "text": 1}', b"null",
                 b'{"instances": [null]}', b'{"id": "a", "text": "\\udfff"}', b""]
        from concurrent.futures import ThreadPoolExecutor

        def bad_burst(k: int) -> list[int]:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                return [_post(c, nasty[(k * 10 + i) % len(nasty)])[0] for i in range(10)]
            finally:
                c.close()

        with ThreadPoolExecutor(10) as pool:  # 10 connections at once, 100 requests
            statuses = [st for sts in pool.map(bad_burst, range(10)) for st in sts]
        assert statuses == [400] * 100, statuses
        assert ep.worker_pids() == workers
        for w in workers:
            assert psutil.Process(w).status() != psutil.STATUS_ZOMBIE
        st, body, _ = _post(conn, orjson.dumps({"id": "after", "text": "great movie"}))
        assert st == 200 and orjson.loads(body)["predictions"][0]["id"] == "after"
        conn.close()
        log = (tmp_path / "run" / "uwsgi.log").read_text()
        assert "Traceback" not in log and "HARAKIRI" not in log
    # after the Supervisor: nothing we started is left
    deadline = time.monotonic() + 10
    while any(group_alive(g) for g in pgids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(group_alive(g) for g in pgids)
    for w in workers:
        assert not psutil.pid_exists(w) or psutil.Process(w).status() == psutil.STATUS_ZOMBIE


@pytest.mark.stack
def test_stack_clear_errors_for_port_in_use(tmp_path):
    from services.procs import PortInUse, Supervisor
    from services.rest.launch import start

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with Supervisor(tmp_path / "logs") as sup, pytest.raises(PortInUse) as e:
            start(sup, RestSettings(port=port), tmp_path / "run", cpus=[0])
        assert str(port) in str(e.value) and sup.procs == []


def test_missing_nginx_is_one_clear_line(monkeypatch, tmp_path):
    from services.procs import LaunchError, Supervisor
    from services.rest import launch

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("RVS_NGINX", raising=False)
    monkeypatch.setattr(launch, "NGINX_FALLBACKS", ())
    with Supervisor(tmp_path / "logs") as sup, pytest.raises(LaunchError) as e:
        launch.start(sup, RestSettings(), tmp_path / "run", cpus=[0])
    assert "apt-get install nginx-light" in str(e.value) and "\n" not in str(e.value)


def test_deep_run_dir_gets_a_short_unix_socket(tmp_path):
    from services.rest.config import UNIX_SOCKET_MAX, render, unix_socket_path

    shallow = tmp_path / "r"
    assert unix_socket_path(shallow) == shallow / "uwsgi.sock"
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    sock = unix_socket_path(deep)
    assert len(str(sock)) <= UNIX_SOCKET_MAX and sock != deep / "uwsgi.sock"
    assert unix_socket_path(deep) == sock  # stable for a run dir
    assert unix_socket_path(tmp_path / "other" / ("e" * 110)) != sock
    r = render(RestSettings(), deep, cpus=[0])
    assert r.uwsgi_bind == str(sock)
