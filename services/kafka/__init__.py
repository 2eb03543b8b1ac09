"""The embedded Apache Kafka broker: its jars (resolved once by Maven) and one KRaft process a run.

Apache Kafka is what the users of this harness run, so it is the default broker of every local
run. Nothing is built and nothing is downloaded at run time: ``pom.xml`` beside this file names
``org.apache.kafka:kafka_2.13`` and a logging binding at pinned versions, :func:`fetch` (``make
setup``) copies their runtime jars into ``var/kafka/<version>/lib`` with a manifest of their
SHA-256, and :func:`start_kafka` runs ``kafka.Kafka`` from that classpath:

* single-node KRaft (``process.roles=broker,controller``), every listener on 127.0.0.1 on a free
  port, a fresh log directory under the run folder, formatted with a new cluster id;
* internal topics with replication 1 (offsets, transaction state: Faust's exactly-once needs the
  latter), no initial rebalance delay (a run should not wait 3 s for every group join);
* an explicit heap and G1, as Kafka's own ``kafka-server-start.sh`` sets them, pinned to the
  broker cores; SIGTERM runs Kafka's shutdown hook, the supervisor stops it by PID.

Ready means an AdminClient gets a Metadata answer naming the broker, not an open port.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from base64 import urlsafe_b64encode
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from services import procs

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
REPO_ROOT = HERE.parents[1]
MANIFEST = "manifest.json"
INSTALL_HINT = "Debian: apt-get install openjdk-17-jre-headless maven"

#: Kafka's own start script's JVM flags (bin/kafka-run-class.sh, KAFKA_JVM_PERFORMANCE_OPTS).
G1_FLAGS = ("-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true",
            # IPv4 sockets: the listeners bind 127.0.0.1 itself, not an IPv6 socket mapped to it
            "-Djava.net.preferIPv4Stack=true")

LOG4J = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.org.apache.kafka.clients=WARN
"""


@lru_cache(maxsize=1)
def kafka_version() -> str:
    """The broker version the pom pins (one source of truth for the embedded broker)."""
    m = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    if not m:
        raise procs.LaunchError(f"{POM}: no <kafka.version> property")
    return m.group(1).strip()


def cache_dir() -> Path:
    """Where the jars live: ``RVS_KAFKA_HOME`` or ``var/kafka/<version>`` in the repo."""
    override = os.environ.get("RVS_KAFKA_HOME")
    return Path(override) if override else REPO_ROOT / "var" / "kafka" / kafka_version()


def java_binary() -> str:
    """``$JAVA_HOME/bin/java`` or ``java`` on PATH; one clear line when there is none."""
    home = os.environ.get("JAVA_HOME")
    if home and os.access(Path(home) / "bin" / "java", os.X_OK):
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise procs.LaunchError(f"kafka: no Java runtime (java not on PATH, JAVA_HOME unset); "
                                f"Apache Kafka needs Java 11+ ({INSTALL_HINT}), or run with "
                                f"BROKER=tansu")
    return found


# -- the jars -------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(home: Path | None = None) -> list[Path]:
    """The jars of the cache, checked against its manifest; a clear error when any is off."""
    home = home or cache_dir()
    lib, manifest = home / "lib", home / MANIFEST
    fix = "run `make setup` (python -m services.kafka fetch) to resolve them again"
    if not manifest.is_file():
        raise procs.LaunchError(f"kafka: the broker's jars are not in {home}; {fix}")
    try:
        want = json.loads(manifest.read_text())["jars"]
    except (ValueError, KeyError, TypeError):
        raise procs.LaunchError(f"kafka: {manifest} is corrupt; {fix}") from None
    jars = []
    for name, digest in sorted(want.items()):
        jar = lib / name
        if not jar.is_file() or _sha256(jar) != digest:
            raise procs.LaunchError(f"kafka: jar cache {lib} is corrupt ({name} is missing or "
                                    f"differs from its manifest); {fix}")
        jars.append(jar)
    if not any(j.name.startswith("kafka_2.13-") for j in jars):
        raise procs.LaunchError(f"kafka: {manifest} lists no kafka_2.13 jar; {fix}")
    return jars


def fetch(*, force: bool = False, quiet: bool = False) -> Path:
    """Resolve the pinned jars with Maven into the cache (atomically); a no-op when it verifies."""
    home = cache_dir()
    if not force:
        try:
            verify(home)
            return home
        except procs.LaunchError:
            pass
    java_binary()
    mvn = shutil.which("mvn")
    if not mvn:
        raise procs.LaunchError(f"kafka: Maven (mvn) is needed once to resolve the broker's jars "
                                f"from Maven Central ({INSTALL_HINT}), or run with BROKER=tansu")
    home.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{home.name}-", dir=home.parent))
    try:
        argv = [mvn, "-B", "-q" if quiet else "-ntp", "-f", str(POM),
                "dependency:copy-dependencies", "-DincludeScope=runtime",
                f"-DoutputDirectory={staging / 'lib'}"]
        res = subprocess.run(argv, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            lines = [ln for ln in (res.stdout + res.stderr).splitlines() if "ERROR" in ln]
            why = lines[0].strip() if lines else (res.stderr or res.stdout).strip()[-300:]
            raise procs.LaunchError(f"kafka: Maven could not resolve org.apache.kafka:kafka_2.13:"
                                    f"{kafka_version()} ({why}); is Maven Central reachable "
                                    f"(proxy, ~/.m2/settings.xml)?")
        jars = sorted((staging / "lib").glob("*.jar"))
        if not any(j.name.startswith("kafka_2.13-") for j in jars):
            raise procs.LaunchError(f"kafka: Maven resolved no kafka_2.13 jar from {POM}")
        (staging / MANIFEST).write_text(json.dumps(
            {"kafka_version": kafka_version(), "jars": {j.name: _sha256(j) for j in jars}},
            indent=1, sort_keys=True))
        if home.exists():
            shutil.rmtree(home)
        staging.rename(home)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return home


# -- the broker -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class KafkaSettings:
    """Every setting the embedded broker runs with besides its listeners and log dir."""

    heap_mb: int = 1024                    # kafka-server-start.sh's -Xmx1G -Xms1G
    jvm_flags: tuple[str, ...] = G1_FLAGS
    properties: Mapping[str, str] = field(default_factory=lambda: {
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",   # 50 by default: slower start, nothing gained
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "8",
        "group.initial.rebalance.delay.ms": "0",
        # The controller keeps a killed broker's registration until its session expires and
        # refuses the restarted one meanwhile (DUPLICATE_BROKER_REGISTRATION): 9 s by default,
        # which made a broker kill a 27 s outage. Controller and broker share this process, so
        # a short session costs only a heartbeat a second on loopback.
        "broker.session.timeout.ms": "4000",
        "broker.heartbeat.interval.ms": "1000",
        "num.partitions": "1",
        "auto.create.topics.enable": "true",   # Faust creates its own internal topics this way
    })

    def to_dict(self) -> dict:
        d = asdict(self)
        d["jvm_flags"] = list(self.jvm_flags)
        d["properties"] = dict(self.properties)
        return d


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (Kafka's Uuid).

    Never one that starts with "-": the storage tool would read it as an option (one id in 64
    does; Kafka's own ``Uuid.randomUuid`` draws again for the same reason)."""
    while True:
        cid = urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def server_properties(port: int, controller_port: int, log_dir: Path,
                      settings: KafkaSettings, host: str = "127.0.0.1") -> dict[str, str]:
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dir),
        **dict(settings.properties),
    }


def _write_properties(path: Path, props: Mapping[str, str]) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))


def start_kafka(sup: procs.Supervisor, run_dir: Path | str | None = None, *, port: int = 0,
                cpus: Sequence[int] | None = None, timeout_s: float = 90.0, name: str = "kafka",
                settings: KafkaSettings | None = None, log_dir: Path | None = None):
    """Start one KRaft Apache Kafka on 127.0.0.1 as a child of ``sup``; return its ``Broker``.

    ``log_dir`` None formats a fresh one under ``run_dir`` (or beside the supervisor's logs);
    an existing formatted ``log_dir`` is reused as it is (a restart after a fault).
    """
    from services.broker import Broker, wait_answering  # noqa: PLC0415 - broker imports us lazily

    settings = settings or KafkaSettings()
    java = java_binary()
    jars = verify()
    host = "127.0.0.1"
    if port:
        procs.ensure_port_free(port, host, what="kafka broker")
    else:
        port = procs.free_port(host)
    controller_port = procs.free_port(host)
    while controller_port == port:
        controller_port = procs.free_port(host)
    base = Path(run_dir) if run_dir is not None else sup.log_dir.parent
    base.mkdir(parents=True, exist_ok=True)
    conf_dir = Path(tempfile.mkdtemp(prefix=f"{name}-conf-", dir=base))
    fresh = log_dir is None
    if fresh:
        log_dir = Path(tempfile.mkdtemp(prefix=f"{name}-data-", dir=base))
    props = server_properties(port, controller_port, log_dir, settings, host)
    _write_properties(conf_dir / "server.properties", props)
    (conf_dir / "log4j.properties").write_text(LOG4J)
    classpath = os.pathsep.join(str(j) for j in jars)
    jvm = [java, f"-Xms{settings.heap_mb}m", f"-Xmx{settings.heap_mb}m", *settings.jvm_flags,
           f"-Dlog4j.configuration=file:{conf_dir / 'log4j.properties'}", "-cp", classpath]
    cluster_id = None
    if fresh:
        cluster_id = new_cluster_id()
        format_log_dir(jvm, props, Path(log_dir), cluster_id)
    else:
        meta = (log_dir / "meta.properties")
        if meta.is_file():
            m = re.search(r"^cluster\.id=(.+)$", meta.read_text(), re.M)
            cluster_id = m.group(1).strip() if m else None
    proc = sup.start(name, [*jvm, "kafka.Kafka", str(conf_dir / "server.properties")], cpus=cpus)
    bootstrap = f"{host}:{port}"
    wait_answering(sup, proc, bootstrap, timeout_s=timeout_s, what="kafka broker",
                   bind_errors=("Address already in use", "BindException"),
                   ports=f"{host}:{port} or {controller_port} (controller)")
    return Broker(bootstrap=bootstrap, name="kafka", version=kafka_version(), pid=proc.pid,
                  cluster_id=cluster_id,
                  settings={**settings.to_dict(), "server.properties": props,
                            "log_dir": str(log_dir), "config_dir": str(conf_dir)})


#: The files ``kafka-storage format`` writes into a KRaft log dir (Kafka 3.9).
FORMATTED = ("meta.properties", "bootstrap.checkpoint")


def format_log_dir(jvm: Sequence[str], props: dict[str, str], log_dir: Path,
                   cluster_id: str) -> None:
    """Format a fresh log dir as ``kafka-storage format -t <cluster_id>`` does.

    The storage tool is a JVM of its own (2-3 s here, on every fresh broker). What it writes is
    the same for every log dir of a node id and version except two ids in ``meta.properties``:
    the cluster id and the directory id (``bootstrap.checkpoint`` holds only the metadata
    version). So it runs once per node id into a template beside the jars, and each fresh log
    dir gets the template with ids of its own."""
    template = cache_dir() / f"format-node{props['node.id']}"
    if not all((template / f).is_file() for f in FORMATTED):
        _run_storage_tool(jvm, {**props, "log.dirs": str(template)}, template)
    log_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template / "bootstrap.checkpoint", log_dir / "bootstrap.checkpoint")
    meta = (template / "meta.properties").read_text()
    meta = re.sub(r"^cluster\.id=.*$", f"cluster.id={cluster_id}", meta, flags=re.M)
    meta = re.sub(r"^directory\.id=.*$", f"directory.id={new_cluster_id()}", meta, flags=re.M)
    (log_dir / "meta.properties").write_text(meta)


def _run_storage_tool(jvm: Sequence[str], props: dict[str, str], log_dir: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="format-", dir=log_dir.parent if log_dir.parent.is_dir()
                                else None))
    try:
        _write_properties(tmp / "server.properties", {**props, "log.dirs": str(tmp / "dir")})
        fmt = subprocess.run([*jvm, "kafka.tools.StorageTool", "format", "-t", new_cluster_id(),
                              "-c", str(tmp / "server.properties")],
                             capture_output=True, text=True, check=False, timeout=120)
        if fmt.returncode != 0:
            raise procs.LaunchError(f"kafka: formatting a log dir failed: "
                                    f"{(fmt.stderr or fmt.stdout).strip()[-400:]}")
        log_dir.mkdir(parents=True, exist_ok=True)
        for f in FORMATTED:     # each file lands whole: a concurrent reader never sees half
            shutil.copyfile(tmp / "dir" / f, tmp / f"{f}.new")
            os.replace(tmp / f"{f}.new", log_dir / f)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def describe_cache() -> dict[str, Any]:
    """What ``python -m services.kafka status`` prints and a run may record."""
    home = cache_dir()
    try:
        jars = verify(home)
        return {"version": kafka_version(), "home": str(home), "jars": len(jars), "ok": True}
    except procs.LaunchError as e:
        return {"version": kafka_version(), "home": str(home), "ok": False, "error": str(e)}
