"""Entry points of the container images: the same project code as the embedded path, set by env.

    python -m services.docker.entry model            # train into $RVS_MODEL_DIR unless a valid
                                                     # artifact of this data is already there
    python -m services.docker.entry topics           # create requests / predictions / requests.dlq
    python -m services.docker.entry rest             # render uwsgi.ini + nginx.conf, exec uWSGI
    python -m services.docker.entry stream           # one Faust worker (scale with containers)
    python -m services.docker.entry health rest|stream
    python -m services.docker.entry settings rest|stream   # print the effective settings (JSON)
    python -m services.docker.entry bench [SCENARIO|PATH ...|--default|--all] [bench flags]

Settings come from environment variables named after the fields of the settings objects:
``RVS_REST_<FIELD>`` for :class:`services.rest.settings.RestSettings` and ``RVS_STREAM_<FIELD>``
for :class:`services.stream.settings.StreamSettings` (``RVS_REST_PROCESSES=2``,
``RVS_STREAM_BOOTSTRAP=kafka:9092``, ``RVS_STREAM_PARTITIONS=6`` ...). A value is read as JSON
when it parses (numbers, true/false, null, objects), else as a plain string. A variable with the
prefix that names no field is an error that lists the valid names, so a typo never goes unseen.

The REST config files are written by the project's own renderer (``python -m services.rest.config
render``), never by hand: the nginx container reads the nginx.conf that the ``rest`` container
rendered into the volume they share, next to the uWSGI unix socket.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import struct
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

REST_PREFIX = "RVS_REST_"
STREAM_PREFIX = "RVS_STREAM_"
#: Variables with a settings prefix that are plumbing, not settings (set by uwsgi.ini's env lines).
NOT_SETTINGS = {"RVS_REST_SETTINGS_FILE", "RVS_REST_READY_DIR"}

#: Where the rest container renders its configs and binds its socket (a volume shared with nginx).
DEFAULT_RUN_DIR = "/run/rvs/rest"
#: The compose deployment's REST defaults: nginx must be reachable from the other containers.
REST_COMPOSE_DEFAULTS = {"host": "0.0.0.0", "port": 8080, "uwsgi_socket": "unix"}


class EntryError(RuntimeError):
    """A container cannot start as configured; the message says which variable to fix."""


# -- env -> settings -------------------------------------------------------------------------------
def parse_value(raw: str) -> Any:
    """An env value: JSON when it parses (``2``, ``true``, ``null``, ``{"a": 1}``), else the string."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def settings_from_env(prefix: str, field_names: Iterable[str],
                      environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``{field: value}`` for every ``<prefix><FIELD>`` variable; unknown ones are an error."""
    environ = os.environ if environ is None else environ
    valid = {f.upper(): f for f in field_names}
    out: dict[str, Any] = {}
    unknown: list[str] = []
    for key in sorted(environ):
        if not key.startswith(prefix) or key in NOT_SETTINGS:
            continue
        name = key[len(prefix):]
        if name not in valid:
            unknown.append(key)
            continue
        out[valid[name]] = parse_value(environ[key])
    if unknown:
        raise EntryError(
            f"unknown setting variable(s) {', '.join(unknown)}; valid: "
            f"{', '.join(prefix + n for n in sorted(valid))}")
    return out


def cpu_budget() -> float:
    """CPUs this container may use: its cpuset, capped by its CFS quota (``cpus:`` in compose)."""
    n = float(len(os.sched_getaffinity(0)))
    quota = _cgroup_quota()
    return min(n, quota) if quota else n


def _cgroup_quota() -> float | None:
    try:  # cgroup v2: "max 100000" or "200000 100000"
        q, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if q == "max" else int(q) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        q = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if q <= 0 else q / period
    except (OSError, ValueError):
        return None


def default_processes(budget: float | None = None) -> int:
    """The article's rule on the container's CPU budget: max(1, cpus - 1)."""
    budget = cpu_budget() if budget is None else budget
    return max(1, math.ceil(budget - 1e-9) - 1)


def rest_overrides(environ: Mapping[str, str] | None = None,
                   budget: float | None = None) -> dict[str, Any]:
    """The RestSettings overrides the rest container renders with (compose defaults + env)."""
    from services.rest.settings import RestSettings

    env = settings_from_env(REST_PREFIX, RestSettings.field_names(), environ)
    out = {**REST_COMPOSE_DEFAULTS, **env}
    if out.get("processes") is None:
        out["processes"] = default_processes(budget)
    RestSettings.from_dict(out)  # validate now: a bad variable fails with the settings' message
    return out


def stream_settings(environ: Mapping[str, str] | None = None):
    """The StreamSettings of one worker container (``workers`` = 1: scale with containers)."""
    from services.stream.settings import StreamSettings

    env = settings_from_env(STREAM_PREFIX, StreamSettings.field_names(), environ)
    env.setdefault("workers", 1)
    return StreamSettings.from_dict(env)


def worker_name(environ: Mapping[str, str] | None = None) -> str:
    """Unique per replica: the container's hostname (its short id) unless RVS_WORKER_NAME says."""
    environ = os.environ if environ is None else environ
    return environ.get("RVS_WORKER_NAME") or socket.gethostname()


def run_dir(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get("RVS_COMPOSE_RUN_DIR") or DEFAULT_RUN_DIR)


# -- commands --------------------------------------------------------------------------------------
def cmd_model(_args: argparse.Namespace) -> int:
    """Train the artifact into $RVS_MODEL_DIR unless one of this training data is already there."""
    from services.model import ModelError, data_dir, model_dir, sha256_of
    from services.model.artifact import load_artifact
    from services.model.data import split_path

    out = model_dir()
    try:
        train_csv = split_path("train")
    except Exception as e:  # noqa: BLE001 - DataSourceError: say what to mount
        raise EntryError(f"{e} (compose mounts ${{RVS_DATA_DIR:-../shared/data/imdb}} "
                         f"read-only at {data_dir()})") from None
    try:
        info = load_artifact(out).info
    except ModelError as e:
        print(f"[model] no usable artifact in {out} ({str(e).splitlines()[0]}): training",
              flush=True)
    else:
        if info.get("train_sha256") == sha256_of(train_csv):
            print(f"[model] artifact in {out} is up to date (test_accuracy "
                  f"{info.get('test_accuracy')}); nothing to do", flush=True)
            share_artifact(out)
            return 0
        print(f"[model] artifact in {out} was trained on other data: retraining", flush=True)
    from services.model.train import main as train_main

    rc = train_main(["--out", str(out)])
    if rc == 0:
        share_artifact(out)
    return rc


def share_artifact(folder: Path) -> None:
    """Make the artifact readable by every container's user (the trainer writes it 0600; the
    load generator runs as the invoking user so that it can write ./results)."""
    for p in Path(folder).iterdir():
        if p.is_file():
            p.chmod(0o644)


def cmd_topics(_args: argparse.Namespace) -> int:
    """Create the stream topics with explicit partitions (names and count from RVS_STREAM_*)."""
    from services.broker import create_topics, metadata_ok

    s = stream_settings()
    replication = int(os.environ.get("RVS_TOPIC_REPLICATION_FACTOR") or 1)
    min_isr = os.environ.get("RVS_TOPIC_MIN_ISR") or ""
    config = {"min.insync.replicas": str(int(min_isr))} if min_isr else {}
    deadline = time.monotonic() + 60
    while not metadata_ok(s.bootstrap):
        if time.monotonic() > deadline:
            raise EntryError(f"no Kafka answers at RVS_STREAM_BOOTSTRAP={s.bootstrap}")
        time.sleep(1)
    create_topics(s.bootstrap, s.topics(), replication=replication, config=config)
    for name, parts in s.topics().items():
        print(f"[topics] {name}: {parts} partitions, replication {replication}"
              f"{f', min.insync.replicas {min_isr}' if min_isr else ''} on {s.bootstrap}",
              flush=True)
    return 0


def cmd_rest(_args: argparse.Namespace) -> int:
    """Render the configs with the project's renderer, then become uWSGI (PID 1's child: tini)."""
    from services.rest import config
    from services.rest.launch import uwsgi_argv

    out = run_dir()
    overrides = rest_overrides()
    argv = ["render", "--out", str(out)]
    for key, value in overrides.items():
        argv += ["--set", f"{key}={json.dumps(value)}"]
    rc = config.main(argv)
    if rc:
        return rc
    sock = out / "uwsgi.sock"
    if sock.is_socket() or sock.exists():
        sock.unlink()  # left by a previous uWSGI of this container (the volume outlives it)
    exe = uwsgi_argv()
    sys.stdout.flush()
    os.execv(exe[0], [*exe, "--ini", str(out / "uwsgi.ini")])
    return 0  # not reached


def cmd_stream(_args: argparse.Namespace) -> int:
    """Write this worker's settings file and become one Faust worker."""
    s = stream_settings()
    name = worker_name()
    base = Path(os.environ.get("RVS_COMPOSE_STREAM_DIR") or "/tmp/rvs-stream")
    base.mkdir(parents=True, exist_ok=True)
    path = base / "stream-settings.json"
    path.write_text(json.dumps(s.to_dict(), indent=2, default=str))
    print(f"[stream] worker {name}: {s.bootstrap} {s.topic_requests} -> {s.topic_predictions} "
          f"({s.partitions} partitions, shape {s.shape}, fetch_max_wait_ms "
          f"{s.fetch_max_wait_ms}); settings in {path}", flush=True)
    argv = [sys.executable, "-m", "services.stream", "worker", "--settings", str(path),
            "--name", name, "--datadir", str(base / f"faust-{name}")]
    os.execv(sys.executable, argv)
    return 0  # not reached


# -- health checks ---------------------------------------------------------------------------------
def uwsgi_packet(path: str = "/healthz", method: str = "GET") -> bytes:
    """A uwsgi-protocol request (modifier1 0: WSGI), as nginx's uwsgi_pass sends it."""
    env = {"REQUEST_METHOD": method, "REQUEST_URI": path, "PATH_INFO": path, "QUERY_STRING": "",
           "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "localhost", "SERVER_PORT": "8080",
           "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "localhost", "REQUEST_SCHEME": "http"}
    body = b"".join(struct.pack("<H", len(k)) + k.encode() + struct.pack("<H", len(v)) + v.encode()
                    for k, v in env.items())
    return struct.pack("<BHB", 0, len(body), 0) + body


def health_rest(folder: Path | None = None, timeout: float = 3.0) -> tuple[bool, str]:
    """GET /healthz straight to uWSGI (not through nginx), over the socket the renderer chose."""
    folder = folder or run_dir()
    sock_path = folder / "uwsgi.sock"
    try:
        if sock_path.exists():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: Any = str(sock_path)
        else:
            cfg = json.loads((folder / "rest-settings.json").read_text())
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = ("127.0.0.1", int(cfg["uwsgi_port"]))
        with s:
            s.settimeout(timeout)
            s.connect(address)
            s.sendall(uwsgi_packet())
            data = b""
            while b"\r\n" not in data and len(data) < 4096:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except (OSError, ValueError, KeyError) as e:
        return False, f"uWSGI not answering in {folder}: {e}"
    status = data.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    parts = status.split()
    return (len(parts) >= 2 and parts[1] == "200"), f"GET /healthz -> {status or 'no answer'}"


def judge_stream_member(members: Sequence[Any], state: str, *, client_id: str,
                        my_ips: set[str], topic: str, partitions: int) -> tuple[bool, str]:
    """Is this worker serving? ``members`` as confluent-kafka's DescribeConsumerGroups gives them.

    Healthy = it is a member of the group (found by its client id, ``<app_id>-<worker name>``, or
    by its address) and owns >= 1 partition of ``topic``. When the broker's answer carries no
    parseable assignment, membership of a stable group with no more members than partitions
    counts: the assignor then gives every member a partition.
    """
    for m in members:
        if m.client_id != client_id and str(m.host).lstrip("/") not in my_ips:
            continue
        assignment = getattr(m, "assignment", None)
        tps = [tp for tp in (getattr(assignment, "topic_partitions", None) or [])
               if tp.topic == topic]
        if tps:
            return True, f"{client_id} owns {topic} partitions {sorted(tp.partition for tp in tps)}"
        if len(members) > partitions:
            return False, (f"{client_id} is in the group but owns no partition of {topic!r}: "
                           f"{len(members)} workers > {partitions} partitions")
        if not (getattr(assignment, "topic_partitions", None) or []) and state.upper() == "STABLE":
            return True, f"{client_id} is a member of the stable group ({len(members)} members)"
        return False, f"{client_id} is in the group (state {state}) but owns no partition yet"
    return False, f"{client_id} not (yet) in the group (state {state}, {len(members)} members)"


def health_stream(timeout: float = 5.0) -> tuple[bool, str]:
    """This Faust worker is in the consumer group and owns a partition of ``requests``."""
    from confluent_kafka.admin import AdminClient

    s = stream_settings()
    client_id = f"{s.app_id}-{worker_name()}"
    try:
        my_ips = {socket.gethostbyname(socket.gethostname())}
    except OSError:
        my_ips = set()
    admin = AdminClient({"bootstrap.servers": s.bootstrap, "log_level": 3,
                         "socket.timeout.ms": int(timeout * 1000)})
    try:
        desc = admin.describe_consumer_groups([s.app_id], request_timeout=timeout)[s.app_id] \
            .result(timeout=timeout)
    except Exception as e:  # noqa: BLE001 - group not known yet, broker away
        return False, f"group {s.app_id!r} not described: {e}"
    state = str(getattr(desc.state, "name", desc.state))
    return judge_stream_member(list(desc.members), state, client_id=client_id, my_ips=my_ips,
                               topic=s.topic_requests, partitions=s.partitions)


def cmd_health(args: argparse.Namespace) -> int:
    ok, why = health_rest() if args.what == "rest" else health_stream()
    print(("healthy: " if ok else "unhealthy: ") + why, flush=True)
    return 0 if ok else 1


def cmd_settings(args: argparse.Namespace) -> int:
    if args.what == "rest":
        from services.rest.settings import RestSettings

        doc = RestSettings.from_dict(rest_overrides()).to_dict()
    else:
        doc = stream_settings().to_dict()
    print(json.dumps(doc, indent=2, default=str))
    return 0


# -- the load generator ----------------------------------------------------------------------------
def bench_argv(args: Sequence[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """``python -m bench run --target compose ...`` with scenario names turned into paths.

    In an installed image the scenarios are not next to the package, so names (and --default /
    --all) resolve against ``$RVS_SCENARIO_DIR`` here; addresses and results folder come from
    RVS_BENCH_BOOTSTRAP / RVS_BENCH_URL / RVS_BENCH_RESULTS unless given as flags.
    """
    from bench.__main__ import DEFAULT_SCENARIOS

    environ = os.environ if environ is None else environ
    folder = Path(environ.get("RVS_SCENARIO_DIR") or "/opt/rvs/scenarios")
    names: list[str] = []
    rest: list[str] = []
    it = iter(args)
    for a in it:
        if a == "--default":
            names += DEFAULT_SCENARIOS
        elif a == "--all":
            names += sorted(p.stem for p in folder.glob("*.yaml"))
        elif a.startswith("-"):
            rest.append(a)
            if "=" not in a and a not in ("--no-report", "--no-ceiling"):
                rest.append(next(it, ""))
        else:
            names.append(a)
    if not names:
        names = list(DEFAULT_SCENARIOS)
    paths = [n if ("/" in n or n.endswith((".yaml", ".yml"))) else str(folder / f"{n}.yaml")
             for n in names]
    flags = {"--bootstrap": environ.get("RVS_BENCH_BOOTSTRAP"), "--url": environ.get("RVS_BENCH_URL"),
             "--results": environ.get("RVS_BENCH_RESULTS")}
    given = {a.split("=", 1)[0] for a in rest}
    argv = [sys.executable, "-m", "bench", "run", "--target", "compose"]
    for flag, value in flags.items():
        if value and flag not in given:
            argv += [flag, value]
    return argv + rest + paths


def cmd_bench(args: argparse.Namespace) -> int:
    argv = bench_argv(args.args)
    print("[bench] " + " ".join(argv[1:]), flush=True)
    os.execv(sys.executable, argv)
    return 0  # not reached


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m services.docker.entry", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("model", help="train the model artifact if missing or stale").set_defaults(
        fn=cmd_model)
    sub.add_parser("topics", help="create the stream topics").set_defaults(fn=cmd_topics)
    sub.add_parser("rest", help="render the configs and run uWSGI").set_defaults(fn=cmd_rest)
    sub.add_parser("stream", help="run one Faust worker").set_defaults(fn=cmd_stream)
    h = sub.add_parser("health", help="exit 0 when healthy")
    h.add_argument("what", choices=["rest", "stream"])
    h.set_defaults(fn=cmd_health)
    st = sub.add_parser("settings", help="print the effective settings from the environment")
    st.add_argument("what", choices=["rest", "stream"])
    st.set_defaults(fn=cmd_settings)
    b = sub.add_parser("bench", help="python -m bench run --target compose, scenarios by name")
    b.add_argument("args", nargs=argparse.REMAINDER)
    b.set_defaults(fn=cmd_bench)
    args = p.parse_args(argv)
    from services.procs import LaunchError

    try:
        return args.fn(args)
    except (EntryError, LaunchError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
