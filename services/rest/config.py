"""Render ``uwsgi.ini`` and ``nginx.conf`` from a ``RestSettings`` into a run dir.

Both files are built here in code from the settings object; nothing is hand-edited and nothing
outside the run dir is read or written (no /etc/nginx, no /var): nginx runs in the foreground
as a child (``daemon off``) with its pid file, error log and temp paths in the run dir, and the
uwsgi params are written inline instead of including /etc/nginx/uwsgi_params.

    python -m services.rest.config render --out DIR [--set key=value ...] [--cpus 0]

prints the paths it wrote (the compose deployment reuses the same renderer).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pwd
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import orjson

from services.procs import free_port
from services.rest.settings import RestSettings, SettingsError

REPO_ROOT = Path(__file__).resolve().parents[2]
#: sun_path is 108 bytes including the NUL, but uWSGI 2.0.30 already rejects a 107-byte path with
#: "invalid socket name"; stay well below both.
UNIX_SOCKET_MAX = 100

#: What nginx passes to uWSGI (the content of nginx's stock uwsgi_params, written inline).
UWSGI_PARAMS = (
    ("QUERY_STRING", "$query_string"),
    ("REQUEST_METHOD", "$request_method"),
    ("CONTENT_TYPE", "$content_type"),
    ("CONTENT_LENGTH", "$content_length"),
    ("REQUEST_URI", "$request_uri"),
    ("PATH_INFO", "$document_uri"),
    ("DOCUMENT_ROOT", "$document_root"),
    ("SERVER_PROTOCOL", "$server_protocol"),
    ("REQUEST_SCHEME", "$scheme"),
    ("HTTPS", "$https if_not_empty"),
    ("REMOTE_ADDR", "$remote_addr"),
    ("REMOTE_PORT", "$remote_port"),
    ("SERVER_PORT", "$server_port"),
    ("SERVER_NAME", "$server_name"),
)

#: Errors nginx itself may answer; each gets a JSON body instead of nginx's HTML page.
#: (With uwsgi_intercept_errors off, the app's own JSON errors pass through untouched.)
ERROR_PREFIX = "/_rvs_error/"
NGINX_ERRORS = {
    400: "bad request (rejected by nginx: malformed HTTP)",
    404: "not found",
    405: "method not allowed",
    408: "request timed out while nginx was reading it",
    413: "request body is over the limit of {limit} (client_max_body_size)",
    414: "request URI too long",
    429: "too many requests in progress from this address (limit_conn_per_ip={limit_conn})",
    494: "request header too large",
    500: "internal error in nginx",
    502: "the service could not take the request (uWSGI backlog full, or no worker is up)",
    503: "the service is unavailable",
    504: "the service did not answer within {read_timeout}s (uwsgi_read_timeout)",
}


@dataclass(frozen=True)
class Rendered:
    run_dir: Path
    uwsgi_ini: Path
    nginx_conf: Path
    settings_json: Path
    uwsgi_log: Path
    nginx_error_log: Path
    nginx_pid: Path
    ready_dir: Path
    port: int                 # nginx port (concrete)
    uwsgi_bind: str           # what uWSGI binds: a socket path, or host:port
    nginx_upstream: str       # what nginx connects to: unix:<path> or host:port
    settings: RestSettings    # resolved, with the concrete ports

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    def paths(self) -> dict[str, str]:
        return {"uwsgi_ini": str(self.uwsgi_ini), "nginx_conf": str(self.nginx_conf),
                "settings_json": str(self.settings_json), "uwsgi_log": str(self.uwsgi_log),
                "nginx_error_log": str(self.nginx_error_log), "nginx_pid": str(self.nginx_pid),
                "url": self.url, "uwsgi_bind": self.uwsgi_bind}


def _ini_value(v: object) -> str:
    s = str(v)
    if "\n" in s:
        raise SettingsError(f"value {s!r} can't go into uwsgi.ini (newline)")
    return s


def _nginx_str(s: str) -> str:
    """A single-quoted nginx string."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def render_uwsgi_ini(s: RestSettings, *, bind: str, settings_json: Path, log_path: Path,
                     ready_dir: Path, repo_root: Path = REPO_ROOT) -> str:
    assert s.processes is not None and s.listen_effective is not None, "settings not resolved"
    blas = str(s.blas_threads)
    lines: list[tuple[str, object]] = [
        ("strict", "true"),              # unknown option = error, not a silent no-op
        ("master", "true"),
        ("die-on-term", "true"),         # SIGTERM to the master stops everything (not a reload)
        ("need-app", "true"),            # a model that fails to load is a failed start
        ("vacuum", "true"),
        ("chdir", repo_root),
        ("pythonpath", repo_root),
        ("module", "services.rest.wsgi:application"),
        ("single-interpreter", "true"),
        ("enable-threads", "true"),
        ("socket", bind),
        ("chmod-socket", "600"),
        ("listen", s.listen_effective),
        ("processes", s.processes),
        ("threads", s.threads),
        ("lazy-apps", "true" if s.lazy_apps else "false"),
        ("harakiri", s.harakiri_s),
        ("buffer-size", s.uwsgi_buffer_size),
        # uWSGI's default (64 vars) drops a request with more header lines than that (a 502);
        # nginx's header buffers bound the lines it can pass, so allow all of them
        ("max-vars", s.max_header_lines + len(UWSGI_PARAMS)),
        ("disable-logging", "false" if s.request_log else "true"),
        ("log-5xx", "true"),
        ("log-master", "true"),          # workers' stdout/stderr (Python logging) via loggers
        ("logger", "stdio"),
        ("logger", f"file:{log_path}"),
        ("procname-prefix-spaced", "rvs-rest"),
        ("env", f"RVS_REST_SETTINGS_FILE={settings_json}"),
        ("env", f"RVS_REST_READY_DIR={ready_dir}"),
        ("env", f"OMP_NUM_THREADS={blas}"),
        ("env", f"OPENBLAS_NUM_THREADS={blas}"),
        ("env", f"MKL_NUM_THREADS={blas}"),
    ]
    out = ["; rendered by services/rest/config.py from RestSettings; do not edit", "[uwsgi]"]
    out += [f"{k} = {_ini_value(v)}" for k, v in lines]
    return "\n".join(out) + "\n"


def render_nginx_conf(s: RestSettings, *, port: int, upstream: str, run_dir: Path) -> str:
    tmp = run_dir / "nginx-tmp"
    limit = s.client_max_body_size
    user_line = ""
    if os.geteuid() == 0:
        # As root the master would hand workers to 'nobody', who may not reach the run dir
        # or the socket; keep them as the invoking user (this server binds loopback only).
        user = pwd.getpwuid(os.geteuid()).pw_name
        grp = pwd.getpwuid(os.geteuid()).pw_gid
        user_line = f"user {user} {_group_name(grp)};\n"
    keepalive = f"        keepalive {s.upstream_keepalive};\n" if s.upstream_keepalive else ""
    params = "".join(f"            uwsgi_param {k} {v};\n" for k, v in UWSGI_PARAMS)
    # URI targets, not named locations: a request whose line could not be parsed has no URI,
    # and nginx then fails a redirect to a named location with a 500 ("empty URI").
    error_pages = "".join(f"        error_page {code} {ERROR_PREFIX}{code};\n"
                          for code in NGINX_ERRORS)
    error_locs = ""
    for code, msg in NGINX_ERRORS.items():
        if s.sheds and code == s.shed_status:
            msg = shed_message(s)
        body = orjson.dumps({"error": msg.format(limit=limit, read_timeout=s.read_timeout_s,
                                                 limit_conn=s.limit_conn_per_ip)})
        status = 400 if code == 494 else code
        error_locs += (f"        location = {ERROR_PREFIX}{code} {{\n"
                       f"            internal;\n"
                       f"            default_type application/json;\n"
                       f"            return {status} {_nginx_str(body.decode())};\n"
                       f"        }}\n")
    access = f"access_log {run_dir / 'nginx-access.log'};" if s.access_log else "access_log off;"
    # requests in progress per client address; the zone (1 MB: ~16,000 addresses) is shared by
    # the workers. Off at 0. See RestSettings for why the default admits the bench's own load.
    # Shedding: limits for the whole server, keyed on $server_name (one key: the bench's load
    # comes from one address). nginx has one limit_conn_status per location, so with the total
    # limit on, the per-address limit answers shed_status too.
    limit_zone, limits = "", []
    if s.limit_conn_per_ip:
        limit_zone += "    limit_conn_zone $binary_remote_addr zone=rvs_per_ip:1m;\n"
        limits.append(f"limit_conn rvs_per_ip {s.limit_conn_per_ip};")
    if s.limit_conn_total:
        limit_zone += "    limit_conn_zone $server_name zone=rvs_total:1m;\n"
        limits.append(f"limit_conn rvs_total {s.limit_conn_total};")
    if s.limit_conn_per_ip or s.limit_conn_total:
        limits.append(f"limit_conn_status {s.shed_status if s.limit_conn_total else 429};")
    if s.limit_req_rate:
        limit_zone += (f"    limit_req_zone $server_name zone=rvs_rate:1m "
                       f"rate={s.limit_req_rate}r/s;\n")
        nodelay = " nodelay" if s.limit_req_nodelay else ""
        limits += [f"limit_req zone=rvs_rate burst={s.limit_req_burst}{nodelay};",
                   f"limit_req_status {s.shed_status};"]
    limit_conn = "".join(f"        {line}\n" for line in limits)
    return f"""# rendered by services/rest/config.py from RestSettings; do not edit
{user_line}daemon off;
master_process on;
worker_processes {s.worker_processes};
worker_rlimit_nofile {max(1024, 2 * s.worker_connections + 64)};
pid {run_dir / 'nginx.pid'};
error_log {run_dir / 'nginx-error.log'} warn;

events {{
    worker_connections {s.worker_connections};
}}

http {{
    {access}
    server_tokens off;
    default_type application/json;
    sendfile off;
    tcp_nodelay on;
    keepalive_timeout {s.client_keepalive_timeout_s}s;
    keepalive_requests {s.client_keepalive_requests};
    client_max_body_size {s.client_max_body_size};
    client_body_buffer_size {s.client_body_buffer_size};
    # hostile clients: a slow header or body is cut off by these timers (then reset, not
    # lingering in FIN_WAIT), an oversized header block is a 494 (answered as a JSON 400)
    client_header_timeout {s.client_header_timeout_s}s;
    client_body_timeout {s.client_body_timeout_s}s;
    reset_timedout_connection on;
    client_header_buffer_size {s.client_header_buffer_size};
    large_client_header_buffers {s.large_client_header_buffers} {s.large_client_header_buffer_size};
{limit_zone}    client_body_temp_path {tmp / 'body'};
    proxy_temp_path {tmp / 'proxy'};
    fastcgi_temp_path {tmp / 'fastcgi'};
    uwsgi_temp_path {tmp / 'uwsgi'};
    scgi_temp_path {tmp / 'scgi'};

    upstream rest_uwsgi {{
        server {upstream};
{keepalive}    }}

    server {{
        listen {s.host}:{port} backlog={s.nginx_backlog};
        server_name _;
{limit_conn}{error_pages}
        location / {{
            uwsgi_pass rest_uwsgi;
            uwsgi_connect_timeout {s.connect_timeout_s}s;
            uwsgi_send_timeout {s.send_timeout_s}s;
            uwsgi_read_timeout {s.read_timeout_s}s;
            uwsgi_buffer_size 16k;
            uwsgi_buffers 16 16k;
            uwsgi_busy_buffers_size 32k;
            uwsgi_intercept_errors off;
            # the whole body is read by nginx before uWSGI sees the request, so a slow body
            # holds an nginx connection, never a worker (nginx's default, stated on purpose)
            uwsgi_request_buffering on;
{params}        }}

{error_locs}    }}
}}
"""


def shed_message(s: RestSettings) -> str:
    """The JSON error of a shed request: which limits can have shed it."""
    limits = []
    if s.limit_conn_total:
        limits.append(f"{s.limit_conn_total} requests in progress (limit_conn_total)")
    if s.limit_req_rate:
        limits.append(f"{s.limit_req_rate} requests/s with a burst of {s.limit_req_burst} "
                      f"(limit_req_rate)")
    if s.limit_conn_per_ip and (s.limit_conn_total or s.shed_status == 429):
        limits.append(f"{s.limit_conn_per_ip} in progress from one address (limit_conn_per_ip)")
    return ("shed at once: the service is at its limit of " + " or ".join(limits)
            + "; try again later")


def _group_name(gid: int) -> str:
    import grp
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def unix_socket_path(run_dir: Path) -> Path:
    """The uWSGI socket: in the run dir, or (deep run dirs, e.g. under pytest's tmp) a short
    per-run-dir name in the temp dir. uWSGI's ``vacuum`` removes it when the master exits."""
    sock = run_dir / "uwsgi.sock"
    if len(str(sock)) <= UNIX_SOCKET_MAX:
        return sock
    digest = hashlib.sha1(str(run_dir).encode()).hexdigest()[:16]
    sock = Path(tempfile.gettempdir()) / f"rvs-uwsgi-{digest}.sock"
    if len(str(sock)) > UNIX_SOCKET_MAX:
        raise SettingsError(f"unix socket path {sock} is longer than {UNIX_SOCKET_MAX} bytes; "
                            f"set TMPDIR to a shorter folder or use uwsgi_socket='tcp'")
    return sock


def render(settings: RestSettings, run_dir: Path | str, *, cpus: list[int] | None = None,
           repo_root: Path = REPO_ROOT) -> Rendered:
    """Resolve ``settings`` (machine defaults, free ports for port 0) and write both configs,
    the effective settings (JSON, read by the app) and the temp dirs into ``run_dir``."""
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    s = settings if settings.processes is not None and settings.listen_effective is not None \
        else settings.resolved(cpus)
    port = s.port or free_port(s.host)
    if s.uwsgi_socket == "unix":
        sock = unix_socket_path(run_dir)
        bind, upstream = str(sock), f"unix:{sock}"
        uport = s.uwsgi_port
    else:
        uport = s.uwsgi_port or free_port(s.host)
        bind = upstream = f"{s.host}:{uport}"
    s = s.replace(port=port, uwsgi_port=uport)

    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (run_dir / "nginx-tmp" / sub).mkdir(parents=True, exist_ok=True)
    ready_dir = run_dir / "uwsgi-ready"
    ready_dir.mkdir(exist_ok=True)
    for old in ready_dir.iterdir():
        old.unlink()

    settings_json = run_dir / "rest-settings.json"
    settings_json.write_bytes(orjson.dumps(s.to_dict(), option=orjson.OPT_INDENT_2))
    uwsgi_log = run_dir / "uwsgi.log"
    uwsgi_ini = run_dir / "uwsgi.ini"
    uwsgi_ini.write_text(render_uwsgi_ini(s, bind=bind, settings_json=settings_json,
                                          log_path=uwsgi_log, ready_dir=ready_dir,
                                          repo_root=repo_root))
    nginx_conf = run_dir / "nginx.conf"
    nginx_conf.write_text(render_nginx_conf(s, port=port, upstream=upstream, run_dir=run_dir))
    return Rendered(run_dir=run_dir, uwsgi_ini=uwsgi_ini, nginx_conf=nginx_conf,
                    settings_json=settings_json, uwsgi_log=uwsgi_log,
                    nginx_error_log=run_dir / "nginx-error.log",
                    nginx_pid=run_dir / "nginx.pid", ready_dir=ready_dir, port=port,
                    uwsgi_bind=bind, nginx_upstream=upstream, settings=s)


def _parse_set(items: list[str]) -> dict:
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise SettingsError(f"--set {item!r}: expected key=value")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = orjson.loads(v)
        except orjson.JSONDecodeError:
            out[k.strip()] = v  # a bare string such as unix or 10m
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m services.rest.config")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render", help="write uwsgi.ini and nginx.conf into --out")
    r.add_argument("--out", required=True, type=Path)
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting (repeatable); values are JSON or bare strings")
    r.add_argument("--cpus", default=None, help="service cpus, e.g. 0 or 0-1 (for defaults)")
    args = ap.parse_args(argv)
    try:
        from services.procs import parse_cpus
        cpus = parse_cpus(args.cpus)
        rendered = render(RestSettings.from_dict(_parse_set(args.set)), args.out,
                          cpus=list(cpus) if cpus else None)
    except SettingsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for k, v in rendered.paths().items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
