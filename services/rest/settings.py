"""Every knob of the REST deployment (nginx -> uWSGI -> Flask), in one frozen dataclass.

``RestSettings()`` holds the defaults; ``from_dict`` builds one from a scenario's ``rest:`` block
(unknown keys are rejected, listing the valid ones); ``resolved(cpus)`` fills what depends on the
machine (processes, the effective listen backlog) so that ``to_dict()`` of the result is exactly
what ran and can go into meta.json.

Why the defaults are what they are (measured on a 2-core machine, service pinned to core 0, load
generator on core 1, with ``python -m services.rest.bench``):

- ``uwsgi_socket="unix"``: a unix socket in the run dir instead of TCP on loopback. nginx opens one
  new upstream connection per request (see ``upstream_keepalive``), so connection set-up is paid
  every time; a unix socket makes it cheaper and turns a full backlog into an immediate 502
  (EAGAIN) instead of SYN retransmits that stall for a second or more.
- ``processes=None`` -> max(1, n_cpus - 1), the article's rule (n = pinned cpus, else
  os.cpu_count()); ``threads=1``: the model is CPU-bound Python, threads only add GIL contention.
- ``listen=1024``: the uWSGI accept backlog, set on purpose (uWSGI's own default is 100). A full
  backlog is answered by nginx as 502; a deep one turns overload into queueing, bounded by
  ``read_timeout_s`` (504). The kernel caps it at /proc/sys/net/core/somaxconn, and uWSGI refuses
  to start above it, so ``resolved()`` records the cap and uses min(listen, somaxconn).
- ``harakiri_s < read_timeout_s``: a worker is recycled before nginx gives up on it, so no worker
  keeps computing an answer that nobody will read.
- ``upstream_keepalive=0``: nginx's uwsgi module never marks an upstream connection reusable
  (ngx_http_uwsgi_module.c sets no ``u->keepalive``, unlike proxy_pass with HTTP/1.1 or
  fastcgi_keep_conn), and uWSGI closes after each response anyway; a ``keepalive N`` line in the
  upstream block is accepted but keeps nothing open. It stays a knob so that this can be shown.
- ``access_log=False`` / ``request_log=False``: one log line per request costs CPU on the very
  cores being measured; 5xx are still logged by uWSGI (log-5xx).
- ``lazy_apps=True``: each worker loads the model itself, after fork (the launcher waits for
  every worker's ready marker).

Limits against hostile clients (nginx holds them; tests/test_hostile.py attacks a real stack):

- ``client_header_timeout_s=10`` (nginx: 60): the whole request header must arrive within it, as
  one timer that a byte now and then does not reset, so a slowloris connection is closed after
  10 s; a real client sends its header in one packet. A connection that sends nothing is closed
  after the same time.
- ``client_body_timeout_s=10`` (nginx: 60): the longest pause between two reads of a body; a body
  announced by Content-Length and never finished is dropped after it. nginx reads the whole
  body before it passes the request on (``uwsgi_request_buffering on``), so a slow body holds
  one nginx connection, never a uWSGI worker.
- ``client_header_buffer_size="1k"``, ``large_client_header_buffers=4`` x
  ``large_client_header_buffer_size="2k"`` (nginx: 4 x 8k): a header line longer than one large
  buffer, or a header block larger than all of them, is nginx's 494, answered as a JSON 400. The
  API needs a short request line and a few short headers (no cookies, no tokens). The cap is
  what makes it safe: every header block nginx accepts fits uWSGI's ``buffer-size`` (the uwsgi
  packet grows a header line at most 10/3-fold, "a:<LF>" -> 10 bytes) and its
  ``max-vars`` (one var per header line), so no header block reaches uWSGI only to be dropped
  there as a 502.
- ``limit_conn_per_ip=2048``: requests in progress per client address (nginx ``limit_conn``,
  keyed on ``$binary_remote_addr``), 429 above it. Idle connections do not count (they meet
  the header timeout instead). It must admit the bench's own load, which comes from 127.0.0.1
  too: every scenario's ``max_in_flight`` is at most 2,000 (a test checks each scenario against
  it), and with Locust's distributed mode each process adds its own. It must also leave
  connections for others: a proxied request holds two nginx connections (client, upstream), so
  ``2 * limit_conn_per_ip < worker_connections``; hence ``worker_connections=8192`` (was 4096;
  a preallocated array, no measurable cost). 0 turns the limit off.

Shedding, off by default (``rest`` queues as the article's deployment did; :func:`protected_preset`
turns it on for a "protected" deployment). Past capacity a queue only makes every answer later,
until clients time out and retry work that uWSGI still computes; answering the excess at once
with a 503 keeps the admitted requests within their deadline:

- ``limit_conn_total=0``: requests in progress in the whole server (nginx ``limit_conn`` on a
  zone keyed on ``$server_name``, one key: all the load comes from one address, so a
  per-address limit cannot do this). Over it nginx answers ``shed_status`` itself, in about a
  millisecond, without reading the body into uWSGI. 0 = off.
- ``limit_req_rate=0`` (requests/s), ``limit_req_burst=0``, ``limit_req_nodelay=True``: a rate
  limit on the same key (nginx ``limit_req``): up to ``burst`` requests above the rate are
  admitted at once (nodelay) instead of being delayed, the rest shed. Not in the preset: a
  request of 1,000 reviews costs 1,000x one of 1 review, so no single rate fits both, while a
  concurrency limit follows the service time by itself.
- ``shed_status=503`` (or 429): what a shed request gets. The driver retries a 503 (a 5xx) and
  not a 429 (a 4xx), so this choice is also whether a shed request is retried. nginx keeps one
  ``limit_conn_status`` per location, so with ``limit_conn_total`` on, the per-address limit
  answers ``shed_status`` too.
- ``listen`` (above) is the second guard: nginx stops counting a request whose client gave up,
  but its connection may still wait in uWSGI's backlog and be computed; a backlog of
  ``limit_conn_total`` bounds that leftover work, and a full one is an immediate 502.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SOMAXCONN_PATH = Path("/proc/sys/net/core/somaxconn")

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kKmMgG]?)\s*$")
_SIZE_MULT = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


class SettingsError(ValueError):
    """A REST setting is unknown or out of range; the message says which and what is valid."""


def parse_size(value: str | int) -> int:
    """nginx-style size ('10m', '512k', '2000') -> bytes."""
    if isinstance(value, bool):
        raise SettingsError(f"size {value!r} is not a size like '10m', '512k' or 4096")
    if isinstance(value, int):
        if value < 0:
            raise SettingsError(f"size {value!r} must be >= 0")
        return value
    m = _SIZE_RE.match(str(value))
    if not m:
        raise SettingsError(f"size {value!r} is not a size like '10m', '512k' or 4096")
    return int(m.group(1)) * _SIZE_MULT[m.group(2).lower()]


def read_somaxconn(path: Path = SOMAXCONN_PATH) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class RestSettings:
    # -- addresses ---------------------------------------------------------------------------
    host: str = "127.0.0.1"                 # nginx listens here (and uWSGI, when on TCP)
    port: int = 0                           # nginx port; 0 = a free port chosen at start
    uwsgi_socket: str = "unix"              # "unix" (a socket file in the run dir) or "tcp"
    uwsgi_port: int = 0                     # uWSGI TCP port when uwsgi_socket="tcp"; 0 = free
    # -- uWSGI -------------------------------------------------------------------------------
    processes: int | None = None            # None = max(1, n_service_cpus - 1)
    threads: int = 1
    listen: int = 1024                      # accept backlog; capped by net.core.somaxconn
    harakiri_s: int = 20                    # must be < read_timeout_s
    lazy_apps: bool = True                  # load the model in each worker after fork
    uwsgi_buffer_size: int = 32768          # max size of a request's header block (uwsgi packet)
    request_log: bool = False               # uWSGI per-request log lines (5xx always logged)
    blas_threads: int = 1                   # OMP/OPENBLAS/MKL threads per worker process
    # -- nginx -------------------------------------------------------------------------------
    worker_processes: int = 1
    worker_connections: int = 8192          # per nginx worker; > 2 * limit_conn_per_ip
    nginx_backlog: int = 511                # nginx's own listen backlog (its default)
    read_timeout_s: int = 30                # uwsgi_read_timeout
    connect_timeout_s: int = 5              # uwsgi_connect_timeout (nginx caps it at 75 s)
    send_timeout_s: int = 30                # uwsgi_send_timeout
    client_max_body_size: str = "10m"       # nginx answers 413 (as JSON) above it
    client_body_buffer_size: str = "2m"     # bodies up to this stay in memory, not a temp file
    upstream_keepalive: int = 0             # 'keepalive N' in the upstream block; see docstring
    client_keepalive_timeout_s: int = 65
    client_keepalive_requests: int = 100000
    access_log: bool = False
    # -- nginx: limits against hostile clients (see the docstring for the why of each) --------
    client_header_timeout_s: int = 10       # whole header, one timer; then the socket is closed
    client_body_timeout_s: int = 10         # longest pause between two body reads
    client_header_buffer_size: str = "1k"   # first buffer for the request line + headers
    large_client_header_buffers: int = 4    # number of large header buffers...
    large_client_header_buffer_size: str = "2k"  # ...and each one's size (= longest header line)
    limit_conn_per_ip: int = 2048           # requests in progress per client address; 0 = off
    # -- nginx: shedding past capacity (off by default; see protected_preset) ----------------
    limit_conn_total: int = 0               # requests in progress in the whole server; 0 = off
    limit_req_rate: int = 0                 # requests/s for the whole server; 0 = off
    limit_req_burst: int = 0                # admitted above the rate...
    limit_req_nodelay: bool = True          # ...at once (true) or delayed to the rate (false)
    shed_status: int = 503                  # answer to a shed request: 503 or 429
    # -- application -------------------------------------------------------------------------
    max_batch: int = 2000                   # instances per POST; more -> 400
    max_text_chars: int = 100_000           # characters per review; more -> 400
    max_id_chars: int = 256
    # -- filled by resolved() ----------------------------------------------------------------
    somaxconn: int | None = None            # the kernel's cap, as read at resolve time
    listen_effective: int | None = None     # min(listen, somaxconn)
    cpus: tuple[int, ...] | None = field(default=None)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> RestSettings:
        d = dict(d or {})
        valid = cls.field_names()
        unknown = sorted(k for k in d if k not in valid)
        if unknown:
            raise SettingsError(
                f"unknown REST setting(s) {', '.join(map(repr, unknown))}; "
                f"valid keys: {', '.join(valid)}")
        if d.get("cpus") is not None:
            d["cpus"] = tuple(int(c) for c in d["cpus"])
        s = cls(**d)
        s.validate()
        return s

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["cpus"] is not None:
            d["cpus"] = list(d["cpus"])
        return d

    def replace(self, **changes: Any) -> RestSettings:
        return RestSettings.from_dict({**self.to_dict(), **changes})

    # -- defaults that depend on the machine ---------------------------------------------------
    def resolved(self, cpus: Sequence[int] | None = None) -> RestSettings:
        """Fill processes (article's rule), somaxconn and the effective backlog; keep the rest."""
        cpus_t = tuple(int(c) for c in cpus) if cpus else self.cpus
        n = len(cpus_t) if cpus_t else (os.cpu_count() or 1)
        processes = self.processes if self.processes is not None else max(1, n - 1)
        somaxconn = read_somaxconn()
        eff = min(self.listen, somaxconn) if somaxconn else self.listen
        s = dataclasses.replace(self, processes=processes, somaxconn=somaxconn,
                                listen_effective=eff, cpus=cpus_t)
        s.validate()
        return s

    # -- checks ------------------------------------------------------------------------------
    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise SettingsError(f"REST setting {msg}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        for name in ("port", "uwsgi_port", "threads", "listen", "harakiri_s", "uwsgi_buffer_size",
                     "blas_threads", "worker_processes", "worker_connections", "nginx_backlog",
                     "read_timeout_s", "connect_timeout_s", "send_timeout_s",
                     "upstream_keepalive", "client_keepalive_timeout_s",
                     "client_keepalive_requests", "max_batch", "max_text_chars", "max_id_chars",
                     "client_header_timeout_s", "client_body_timeout_s",
                     "large_client_header_buffers", "limit_conn_per_ip", "limit_conn_total",
                     "limit_req_rate", "limit_req_burst", "shed_status"):
            need(is_int(getattr(self, name)), f"{name}={getattr(self, name)!r} must be an integer")
        for name in ("lazy_apps", "request_log", "access_log", "limit_req_nodelay"):
            need(isinstance(getattr(self, name), bool),
                 f"{name}={getattr(self, name)!r} must be true or false")
        need(isinstance(self.host, str) and bool(self.host.strip()),
             f"host={self.host!r} must be an address such as '127.0.0.1'")
        for name in ("port", "uwsgi_port"):
            need(0 <= getattr(self, name) <= 65535, f"{name}={getattr(self, name)} not in 0..65535")
        need(self.uwsgi_socket in ("unix", "tcp"),
             f"uwsgi_socket={self.uwsgi_socket!r} must be 'unix' or 'tcp'")
        need(self.processes is None or (is_int(self.processes) and self.processes >= 1),
             f"processes={self.processes!r} must be >= 1 (or null = cpus - 1)")
        need(self.threads >= 1, f"threads={self.threads} must be >= 1")
        need(self.listen >= 1, f"listen={self.listen} must be >= 1")
        need(self.harakiri_s >= 1, f"harakiri_s={self.harakiri_s} must be >= 1")
        need(self.read_timeout_s >= 1 and self.send_timeout_s >= 1,
             "read_timeout_s and send_timeout_s must be >= 1")
        need(1 <= self.connect_timeout_s <= 75,
             f"connect_timeout_s={self.connect_timeout_s} must be in 1..75 (nginx's limit)")
        need(self.harakiri_s < self.read_timeout_s,
             f"harakiri_s={self.harakiri_s} must be < read_timeout_s={self.read_timeout_s}, so "
             f"no worker computes an answer nginx has stopped waiting for")
        need(self.uwsgi_buffer_size >= 4096, f"uwsgi_buffer_size={self.uwsgi_buffer_size} < 4096")
        need(self.uwsgi_buffer_size <= 65535,
             f"uwsgi_buffer_size={self.uwsgi_buffer_size} > 65535 (uwsgi packet limit)")
        need(self.blas_threads >= 1, f"blas_threads={self.blas_threads} must be >= 1")
        need(self.worker_processes >= 1, f"worker_processes={self.worker_processes} must be >= 1")
        need(self.worker_connections >= 16,
             f"worker_connections={self.worker_connections} must be >= 16")
        need(self.nginx_backlog >= 1, f"nginx_backlog={self.nginx_backlog} must be >= 1")
        need(self.upstream_keepalive >= 0, "upstream_keepalive must be >= 0")
        need(self.client_keepalive_timeout_s >= 0, "client_keepalive_timeout_s must be >= 0")
        need(self.client_keepalive_requests >= 1, "client_keepalive_requests must be >= 1")
        body = parse_size(self.client_max_body_size)
        need(body >= 1024, f"client_max_body_size={self.client_max_body_size!r} must be >= 1k")
        parse_size(self.client_body_buffer_size)
        need(self.client_header_timeout_s >= 1 and self.client_body_timeout_s >= 1,
             "client_header_timeout_s and client_body_timeout_s must be >= 1")
        need(parse_size(self.client_header_buffer_size) >= 128,
             f"client_header_buffer_size={self.client_header_buffer_size!r} must be >= 128")
        need(self.large_client_header_buffers >= 1,
             f"large_client_header_buffers={self.large_client_header_buffers} must be >= 1")
        line = parse_size(self.large_client_header_buffer_size)
        need(line >= parse_size(self.client_header_buffer_size),
             f"large_client_header_buffer_size={self.large_client_header_buffer_size!r} must be "
             f">= client_header_buffer_size={self.client_header_buffer_size!r}")
        need(self.uwsgi_packet_bound <= self.uwsgi_buffer_size,
             f"large_client_header_buffers={self.large_client_header_buffers} x "
             f"{self.large_client_header_buffer_size} lets nginx pass a header block that can "
             f"grow to {self.uwsgi_packet_bound} bytes as a uwsgi packet, over "
             f"uwsgi_buffer_size={self.uwsgi_buffer_size}; uWSGI would drop it (502)")
        need(self.limit_conn_per_ip >= 0, "limit_conn_per_ip must be >= 0 (0 = off)")
        need(2 * self.limit_conn_per_ip < self.worker_connections,
             f"limit_conn_per_ip={self.limit_conn_per_ip}: a proxied request holds two nginx "
             f"connections, so 2 x {self.limit_conn_per_ip} must be < worker_connections="
             f"{self.worker_connections}, or one address can take them all")
        need(self.limit_conn_total >= 0, "limit_conn_total must be >= 0 (0 = off)")
        need(2 * self.limit_conn_total < self.worker_connections,
             f"limit_conn_total={self.limit_conn_total}: a proxied request holds two nginx "
             f"connections, so 2 x {self.limit_conn_total} must be < worker_connections="
             f"{self.worker_connections}")
        backlog = self.listen_effective or self.listen
        need(backlog >= self.limit_conn_total,
             f"listen={backlog} (somaxconn caps it) must be >= limit_conn_total="
             f"{self.limit_conn_total}: every request nginx admits must fit uWSGI's backlog, or "
             f"it becomes a 502")
        need(self.limit_req_rate >= 0, "limit_req_rate must be >= 0 (0 = off)")
        need(self.limit_req_burst >= 0, "limit_req_burst must be >= 0")
        need(self.limit_req_rate > 0 or self.limit_req_burst == 0,
             f"limit_req_burst={self.limit_req_burst} needs limit_req_rate > 0")
        need(self.shed_status in (429, 503),
             f"shed_status={self.shed_status!r} must be 503 or 429")
        need(self.max_batch >= 1, f"max_batch={self.max_batch} must be >= 1")
        need(self.max_text_chars >= 1, f"max_text_chars={self.max_text_chars} must be >= 1")
        need(self.max_id_chars >= 1, f"max_id_chars={self.max_id_chars} must be >= 1")

    # -- derived -----------------------------------------------------------------------------
    @property
    def sheds(self) -> bool:
        """Whether nginx sheds past a server-wide limit (limit_conn_total or limit_req_rate)."""
        return bool(self.limit_conn_total or self.limit_req_rate)

    @property
    def max_body_bytes(self) -> int:
        return parse_size(self.client_max_body_size)

    @property
    def max_header_bytes(self) -> int:
        """The most header bytes nginx accepts (request line included)."""
        return self.large_client_header_buffers * parse_size(self.large_client_header_buffer_size)

    @property
    def max_header_lines(self) -> int:
        """The most header lines nginx can accept ("a:<LF>" is 3 bytes): uWSGI's max-vars."""
        return self.max_header_bytes // 3 + 1

    @property
    def uwsgi_packet_bound(self) -> int:
        """An upper bound of the uwsgi packet for any header block nginx accepts: each line
        grows at most 10/3-fold ("a:<LF>" -> 2+6+2 bytes; the request line's URI, copied into
        three vars, grows less), plus 2 KiB for the fixed vars (DOCUMENT_ROOT and the like)."""
        return self.max_header_bytes * 10 // 3 + 2048


#: Seconds one uWSGI worker spends on one of the seed's 1,000-review POSTs, end to end through
#: nginx (body read, JSON parse, model, answer). On a quiet core: 0.126 s at 2 connections,
#: 0.163 s sequential (median of 30), 0.133 s in the seed's calibration (7,500 reviews/s). On
#: this shared 2-core VM other processes routinely take half of the service's core, and then it
#: is 0.23 s (4.3 answers/s in a protected run): 16 admitted requests, sized for 0.15 s, were
#: answered after 3.9 s (median) and up to 4.95 s, at the edge of the 5 s timeout. The preset
#: takes the half-speed figure, so that a shared core still answers within half the timeout:
#: with its 10, the admitted requests took 1.4 s (median) and 4.3 s at most, with other
#: processes on 36 % of the core.
SEED_SERVICE_TIME_S = 0.25


def protected_preset(settings: RestSettings | None = None, *, cpus: Sequence[int] | None = None,
                     service_time_s: float = SEED_SERVICE_TIME_S, timeout_s: float = 5.0,
                     wait_share: float = 0.5) -> dict[str, Any]:
    """RestSettings overrides for a deployment that sheds instead of queueing past capacity.

    With P workers each taking S seconds per request, the N-th request admitted behind a full
    house is answered after about N x S / P. It should come well within the client's timeout T:
    N x S / P <= wait_share x T, so

        limit_conn_total = max(P + 1, floor(wait_share x T x P / S))

    (P + 1: every worker busy and one request ready behind it). The bench pins REST to one
    core, so P = 1, and with the seed's T = 5 s, S = 0.25 s and half of T: 10 requests, the
    last answered after about 2.5 s on a half-shared core (1.3 s on a quiet one); past them
    the seed's clients get a 503 within milliseconds instead of a timeout after 5 s. A smaller
    limit costs no throughput while clients keep more than P + 1 requests coming (the workers
    never wait), but sheds more at loads the queue could have served within the deadline.
    ``listen`` is set to the same number (see RestSettings). Sized for 1,000-review POSTs,
    the largest any scenario sends; smaller ones take less time each, so the same count only
    bounds their wait more tightly.
    """
    s = settings or RestSettings()
    workers = s.processes or s.resolved(cpus).processes or 1
    limit = max(workers + 1, int(wait_share * timeout_s * workers / service_time_s))
    return {"limit_conn_total": limit, "listen": limit, "shed_status": 503}
