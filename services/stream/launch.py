"""Start the stream deployment: topics, N Faust worker processes (pinned), end-to-end readiness.

    with Supervisor(run_dir / "logs") as sup:
        broker = start_broker(sup, run_dir, cpus=[1])
        ep = start(sup, StreamSettings(), run_dir, bootstrap=broker.bootstrap, cpus=[0])

Ready means really ready: every worker has joined the consumer group (each reports its assigned
partitions and group generation in ``<datadir>/assignment.json``: Tansu's DescribeGroups shows no
members, so the broker can't tell us) and one probe request per partition of ``requests`` was
answered on ``predictions``. Probe ids start with ``__probe__``
(:data:`PROBE_PREFIX`): a driver reading ``predictions`` must ignore them.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson

from services import procs
from services.broker import create_topics
from services.procs import LaunchError, NotReady, Proc, Supervisor
from services.stream.settings import StreamSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
PROBE_PREFIX = "__probe__"


@dataclass
class StreamEndpoint:
    bootstrap: str
    topics: dict[str, str]          # role ("requests", "predictions", "dlq") -> topic name
    worker_pids: list[int]
    settings: dict                  # StreamSettings.to_dict() of what runs (effective)
    versions: dict
    group_id: str = ""
    ready_s: float | None = None
    procs: list[Proc] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("procs", None)
        return d


def versions(engine: str = "faust") -> dict:
    import aiokafka
    import confluent_kafka
    import faust

    return {"engine": engine, "faust-streaming": faust.__version__,
            "aiokafka": aiokafka.__version__, "confluent-kafka": confluent_kafka.version()[0],
            "librdkafka": confluent_kafka.libversion()[0], "orjson": orjson.__version__,
            "python": sys.version.split()[0]}


def worker_argv(settings_file: Path, name: str, datadir: Path, engine: str = "faust") -> list[str]:
    """The command of one worker: ``worker`` (Faust) or ``lean``, with the same options, so that
    a restart (:func:`restart_worker`, bench/faults.py) reruns either from its argv alone."""
    cmd = "lean" if engine == "lean" else "worker"
    return [sys.executable, "-m", "services.stream", cmd, "--settings", str(settings_file),
            "--name", name, "--datadir", str(datadir)]


def start(sup: Supervisor, settings: StreamSettings, run_dir: Path | str, *,
          bootstrap: str | None = None, cpus: Sequence[int] | str | None = None,
          timeout_s: float = 30.0) -> StreamEndpoint:
    """Create the topics, start ``settings.workers`` workers pinned to ``cpus``, wait until an
    end-to-end probe is answered (or fail with one line + the log tail)."""
    pin = procs.parse_cpus(cpus) if cpus is not None else None
    s = settings.replace(bootstrap=bootstrap) if bootstrap else settings
    s = s.resolved(len(pin) if pin else None)
    if s.partitions < s.workers:
        raise LaunchError(f"stream: partitions ({s.partitions}) < workers ({s.workers}); "
                          f"raise stream.partitions")
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    create_topics(s.bootstrap, s.topics())
    settings_file = run_dir / "stream-settings.json"
    settings_file.write_text(json.dumps(s.to_dict(), indent=2, sort_keys=True) + "\n")

    env = worker_env()
    t0 = time.monotonic()
    started: list[Proc] = []
    datadirs = [run_dir / f"faust-worker-{i}" for i in range(s.workers)]
    for i, datadir in enumerate(datadirs):
        (datadir / ASSIGNMENT_FILE).unlink(missing_ok=True)
        started.append(sup.start(f"stream-worker-{i}",
                                 worker_argv(settings_file, f"worker-{i}", datadir, s.engine),
                                 env=env, cwd=REPO_ROOT, cpus=pin))
    try:
        wait_ready(s, started, datadirs, timeout_s=timeout_s)
    except LaunchError:
        for p in started:
            sup.stop(p)
        raise
    return StreamEndpoint(
        bootstrap=s.bootstrap,
        topics={"requests": s.topic_requests, "predictions": s.topic_predictions,
                "dlq": s.topic_dlq},
        worker_pids=[p.pid for p in started], settings=s.to_dict(), versions=versions(s.engine),
        group_id=s.app_id, ready_s=round(time.monotonic() - t0, 3), procs=started)


def worker_env() -> dict[str, str]:
    """The environment every worker process gets (also on a restart)."""
    return {"PYTHONUNBUFFERED": "1", "PYTHONPATH": _pythonpath(),
            # one model call per core: no BLAS thread pools fighting over pinned cores
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def worker_datadir(proc: Proc) -> Path:
    """The Faust data dir of a worker started by :func:`start` (from its argv)."""
    return Path(proc.argv[proc.argv.index("--datadir") + 1])


def restart_worker(sup: Supervisor, old: Proc, *, stop_timeout: float = 10.0) -> Proc:
    """Stop ``old`` (SIGTERM to its group, SIGKILL after ``stop_timeout``; a no-op if it is
    already dead) and start the same worker again, with the same argv, environment and cores,
    under the same Supervisor (so it is stopped by PID at the end like the first one). Its
    ``assignment.json`` is removed first, so :func:`group_complete` tells when it is back."""
    sup.stop(old, timeout=stop_timeout)
    (worker_datadir(old) / ASSIGNMENT_FILE).unlink(missing_ok=True)
    return sup.start(old.name, old.argv, env=worker_env(), cwd=REPO_ROOT, cpus=old.cpus)


def _pythonpath() -> str:
    cur = os.environ.get("PYTHONPATH", "")
    return str(REPO_ROOT) + (os.pathsep + cur if cur else "")


# -- readiness ------------------------------------------------------------------------------------
ASSIGNMENT_FILE = "assignment.json"  # written by each worker after a rebalance (app.py)


def assignments(datadirs: Sequence[Path]) -> list[dict | None]:
    out: list[dict | None] = []
    for d in datadirs:
        try:
            out.append(orjson.loads((Path(d) / ASSIGNMENT_FILE).read_bytes()))
        except (OSError, orjson.JSONDecodeError):
            out.append(None)
    return out


def group_complete(docs: Sequence[dict | None], partitions: int) -> tuple[bool, str]:
    """All workers report the same generation and together own every partition, each once."""
    if any(d is None for d in docs):
        return False, f"{sum(d is not None for d in docs)}/{len(docs)} workers have partitions"
    gens = {d["generation"] for d in docs}
    owned = [p for d in docs for p in d["partitions"]]
    if len(gens) != 1:
        return False, f"workers in different group generations {sorted(gens, key=str)}"
    if sorted(owned) != list(range(partitions)):
        return False, f"partitions owned {sorted(owned)} != 0..{partitions - 1}"
    idle = sum(1 for d in docs if not d["partitions"])
    if idle and partitions >= len(docs):
        return False, f"{idle} worker(s) without a partition"
    return True, "ok"


def _hint(s: StreamSettings, log_tail: str) -> str:
    if "InitProducerId" in log_tail and s.processing_guarantee == "exactly_once":
        return (" (exactly_once needs a broker with idempotent/transactional producers: "
                "Tansu has none; use at_least_once or the default embedded broker, Apache Kafka)")
    if "No module named" in log_tail or "ModelNotFoundError" in log_tail:
        return " (the worker could not load the model: run `make model`)"
    return ""


def wait_ready(s: StreamSettings, workers: list[Proc], datadirs: Sequence[Path], *,
               timeout_s: float = 30.0) -> float:
    """Block until all workers are in the group and a probe per partition is answered."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    t0 = time.monotonic()
    deadline = t0 + timeout_s

    def check_alive(what: str) -> None:
        for p in workers:
            if not p.alive():
                tail = p.log_tail(25)
                raise NotReady(f"{p.name} exited with code {p.popen.returncode} before {what}"
                               f"{_hint(s, p.log_tail(300))}; see {p.log_path}:\n{tail}")

    def timed_out(what: str) -> NotReady:
        p = workers[0]
        return NotReady(f"stream workers not ready after {timeout_s:.0f}s ({what}); "
                        f"see {p.log_path}:\n{p.log_tail(25)}")

    # 1. every worker joined the group (else a later join would rebalance under load)
    while True:
        check_alive("joining the consumer group")
        ok, why = group_complete(assignments(datadirs), s.partitions)
        if ok:
            break
        if time.monotonic() > deadline:
            raise timed_out(f"consumer group {s.app_id!r}: {why}")
        time.sleep(0.1)

    # 2. one probe per partition of `requests`, answered on `predictions`
    run = uuid.uuid4().hex[:8]
    probes = {f"{PROBE_PREFIX}{run}-{p}": p for p in range(s.partitions)}
    producer = Producer({"bootstrap.servers": s.bootstrap, "linger.ms": 0, "log_level": 3})
    consumer = Consumer({"bootstrap.servers": s.bootstrap, "group.id": f"{s.app_id}-probe-{run}",
                         "enable.auto.commit": False, "log_level": 3, "fetch.wait.max.ms": 20})
    try:
        md = consumer.list_topics(s.topic_predictions, timeout=10)
        parts = sorted(md.topics[s.topic_predictions].partitions)
        consumer.assign([TopicPartition(s.topic_predictions, p, 0) for p in parts])
        for pid, part in probes.items():
            producer.produce(s.topic_requests, key=pid.encode(), partition=part,
                             value=orjson.dumps({"id": pid, "text": "a probe: is this served?",
                                                 "sent_at": time.time()}))
        producer.flush(10)
        pending = set(probes)
        while pending:
            check_alive("answering a probe request")
            if time.monotonic() > deadline:
                raise timed_out(f"{len(pending)}/{len(probes)} probe requests unanswered on "
                                f"{s.topic_predictions!r}")
            msg = consumer.poll(0.1)
            if msg is None or msg.error():
                continue
            try:
                rid = orjson.loads(msg.value()).get("id")
            except (orjson.JSONDecodeError, AttributeError):
                continue
            pending.discard(rid)
    finally:
        consumer.close()
    return time.monotonic() - t0
