"""A toy deployment, registered from the test suite alone: proof that a new way of serving is one
file plus one registration, and that the bench, the drivers and the analysis take any registered
deployment (nothing outside this file knows it exists).

It is a stdlib HTTP server in a subprocess that answers the REST wire format with a fixed rule
(label = text length is odd), so the REST driver drives it unchanged. Run as a module, it is the
server: ``python -m tests.toy_deployment PORT``.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from services.registry import Deployment, Kind

REPO = Path(__file__).resolve().parent.parent


class ToyKind(Kind):
    driver = "rest"
    uses_broker = False

    @contextlib.contextmanager
    def deploy(self, sup, run_dir: Path, settings: Mapping[str, Any], *, service_cpus=None,
               broker_cpus=None, bootstrap=None) -> Iterator[Deployment]:
        from services.procs import free_port, port_open

        port = free_port()
        proc = sup.start("toy-server", [sys.executable, "-m", "tests.toy_deployment", str(port)],
                         cwd=REPO, cpus=service_cpus)
        sup.wait_ready(proc, lambda: port_open(port), timeout=20, what="listening")
        yield Deployment(mode=self.name, kind="toy", driver=self.driver,
                         url=f"http://127.0.0.1:{port}", service_pids=[proc.pid],
                         settings={"port": port, "workers": 1, **dict(settings)},
                         versions={"toy": "1"}, processes=sup.describe(), engine="toy-http")

    def engine(self, settings: Mapping[str, Any]) -> str:
        return "toy-http"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *_):       # quiet: the bench keeps the log small
        pass

    def _send(self, code: int, doc: dict) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Served-By", "toy-0")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._send(200 if self.path == "/healthz" else 404, {"ok": self.path == "/healthz"})

    def do_POST(self):
        doc = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        items = doc.get("instances") or [doc]
        preds = [{"id": it["id"], "label": len(it["text"]) % 2, "score": 0.5} for it in items]
        self._send(200, {"predictions": preds})


if __name__ == "__main__":
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), _Handler).serve_forever()
