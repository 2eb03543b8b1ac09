"""No-op targets: what the drivers are measured against when the service must not be the limit.

* :func:`start_noop_nginx` - a real nginx (the same binary the REST deployment uses) serving a
  canned JSON 200 on ``/predict`` (plus ``/status503`` and ``/junk`` for tests), from a config
  rendered into a temp dir, started with :class:`services.procs.Supervisor`.
* :func:`start_echo_http` - a tiny single-threaded HTTP server (``python -m loadgen.noop http``):
  one request at a time, a fixed service time, valid prediction answers that echo the request's
  ids. Concurrency 1 on purpose: tests use it to show queueing (open vs closed loop), 503 bursts
  and a target that dies.
* :class:`StreamEcho` - a thread that consumes ``requests`` and produces one prediction per event
  to ``predictions`` (optionally duplicated, delayed or dropped): a stream "service" with no model.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from services import procs

CANNED = '{"predictions":[{"id":"noop","label":1,"score":0.5}]}'


def nginx_binary() -> str:
    for cand in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if cand and Path(cand).exists():
            return cand
    raise procs.LaunchError("nginx not found; install it (apt-get install nginx-light) or put it "
                            "on PATH")


def render_nginx_conf(prefix: Path, port: int, *, workers: int = 1, canned: str = CANNED) -> Path:
    prefix = Path(prefix)
    for sub in ("logs", "tmp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    body = canned.replace("'", "\\'")
    conf = f"""
worker_processes {workers};
pid {prefix}/logs/nginx.pid;
error_log {prefix}/logs/error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_max_body_size 64m;
    client_body_buffer_size 4m;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /predict {{ default_type application/json; return 200 '{body}'; }}
        location = /healthz {{ default_type application/json; return 200 '{{"ok":true}}'; }}
        location = /status503 {{ default_type application/json; return 503 '{{"error":"busy"}}'; }}
        location = /status400 {{ default_type application/json; return 400 '{{"error":"bad"}}'; }}
        location = /junk {{ default_type application/json; return 200 'not json'; }}
    }}
}}
"""
    path = prefix / "nginx.conf"
    path.write_text(conf)
    return path


@dataclass
class NoopTarget:
    url: str
    port: int
    proc: procs.Proc


def start_noop_nginx(sup: procs.Supervisor, prefix: Path, *, port: int = 0,
                     cpus=None, workers: int = 1) -> NoopTarget:
    port = port or procs.free_port()
    conf = render_nginx_conf(Path(prefix), port, workers=workers)
    argv = [nginx_binary(), "-p", str(prefix), "-c", str(conf), "-e", f"{prefix}/logs/error.log",
            "-g", "daemon off;"]
    proc = sup.start(f"noop-nginx-{port}", argv, cpus=cpus)
    sup.wait_ready(proc, lambda: procs.port_open(port), timeout=10, what=f"listening on {port}")
    return NoopTarget(f"http://127.0.0.1:{port}", port, proc)


# ---------------------------------------------------------------------------------------------
# echo HTTP (concurrency 1)
# ---------------------------------------------------------------------------------------------
def serve_echo_http(port: int, service_ms: float, fail_first: int = 0) -> None:
    """Serve until killed. ``POST /predict``: sleep service_ms, answer valid predictions echoing
    the ids. ``fail_first`` > 0: the first N requests get 503 (retries must then succeed)."""
    from http.server import BaseHTTPRequestHandler, HTTPServer

    state = {"n": 0}

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):  # quiet
            pass

        def do_GET(self):  # noqa: N802
            self._send(200, b'{"ok":true}')

        def do_POST(self):  # noqa: N802
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n)
            state["n"] += 1
            if state["n"] <= fail_first:
                self._send(503, b'{"error":"warming up"}')
                return
            if service_ms:
                time.sleep(service_ms / 1e3)
            try:
                doc = json.loads(raw)
                items = doc["instances"] if "instances" in doc else [doc]
                preds = [{"id": it["id"], "label": 1, "score": 0.75} for it in items]
                self._send(200, json.dumps({"predictions": preds}).encode())
            except (ValueError, KeyError, TypeError):
                self._send(400, b'{"error":"bad input"}')

        def _send(self, code, body):
            # one request per connection: with keep-alive a single-threaded server would serve
            # one client's connection to the end while the others wait (not a FIFO of requests)
            self.close_connection = True
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

    class Server(HTTPServer):
        request_queue_size = 1024
        allow_reuse_address = True

    Server(("127.0.0.1", port), H).serve_forever()


def start_echo_http(sup: procs.Supervisor, *, service_ms: float = 0.0, fail_first: int = 0,
                    port: int = 0, cpus=None) -> NoopTarget:
    port = port or procs.free_port()
    argv = [sys.executable, "-m", "loadgen.noop", "http", "--port", str(port),
            "--service-ms", str(service_ms), "--fail-first", str(fail_first)]
    proc = sup.start(f"echo-http-{port}", argv, cpus=cpus,
                     cwd=str(Path(__file__).resolve().parent.parent))
    sup.wait_ready(proc, lambda: procs.port_open(port), timeout=15, what=f"listening on {port}")
    return NoopTarget(f"http://127.0.0.1:{port}", port, proc)


# ---------------------------------------------------------------------------------------------
# stream echo (a thread)
# ---------------------------------------------------------------------------------------------
class StreamEcho(threading.Thread):
    """Consume ``src``; for each event produce ``{"id","label","score","sent_at","served_at"}``
    to ``dst`` (key = id). ``duplicate_every`` = k: every k-th answer is sent twice;
    ``drop_every`` = k: every k-th event gets no answer; ``delay_s``: answer that much later."""

    def __init__(self, bootstrap: str, src: str, dst: str, *, duplicate_every: int = 0,
                 drop_every: int = 0, delay_s: float = 0.0):
        super().__init__(daemon=True, name="stream-echo")
        self.bootstrap, self.src, self.dst = bootstrap, src, dst
        self.duplicate_every, self.drop_every, self.delay_s = duplicate_every, drop_every, delay_s
        self.stop_evt = threading.Event()
        self.seen = 0
        self.answered = 0
        self.ready = threading.Event()

    def run(self) -> None:
        from confluent_kafka import Consumer, Producer, TopicPartition

        import orjson

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"echo-{time.time_ns()}",
                      "enable.auto.commit": False, "auto.offset.reset": "earliest",
                      "fetch.wait.max.ms": 10, "log_level": 3})
        md = c.list_topics(self.src, timeout=10)
        parts = md.topics[self.src].partitions
        c.assign([TopicPartition(self.src, p, -2) for p in parts])  # -2 = OFFSET_BEGINNING
        p = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 1, "log_level": 3})
        self.ready.set()
        pending: list[tuple[float, bytes, bytes]] = []
        try:
            while not self.stop_evt.is_set():
                for m in c.consume(num_messages=1000, timeout=0.02):
                    if m.error():
                        continue
                    self.seen += 1
                    if self.drop_every and self.seen % self.drop_every == 0:
                        continue
                    doc = orjson.loads(m.value())
                    out = orjson.dumps({"id": doc["id"], "label": 1, "score": 0.75,
                                        "sent_at": doc.get("sent_at"), "served_at": time.time()})
                    copies = 2 if self.duplicate_every and self.seen % self.duplicate_every == 0 \
                        else 1
                    for _ in range(copies):
                        pending.append((time.monotonic() + self.delay_s, m.key(), out))
                now = time.monotonic()
                keep = []
                for due, k, v in pending:
                    if due <= now:
                        p.produce(self.dst, v, k)
                        self.answered += 1
                    else:
                        keep.append((due, k, v))
                pending = keep
                p.poll(0)
        finally:
            p.flush(1)
            c.close()

    def stop(self) -> None:
        self.stop_evt.set()
        self.join(10)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m loadgen.noop")
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("http", help="tiny concurrency-1 echo HTTP server (tests)")
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--service-ms", type=float, default=0.0)
    h.add_argument("--fail-first", type=int, default=0)
    a = ap.parse_args(argv)
    if a.cmd == "http":
        serve_echo_http(a.port, a.service_ms, a.fail_first)


if __name__ == "__main__":
    main()
