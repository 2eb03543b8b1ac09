"""services/kafka: the embedded Apache Kafka's jar cache, its set-up errors and its process."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest
import yaml

from services import kafka, procs

REPO = Path(__file__).resolve().parents[1]


def test_compose_runs_the_same_kafka_version_as_the_embedded_broker():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{kafka.kafka_version()}"


def test_cluster_id_is_a_kafka_uuid_the_storage_tool_cannot_take_for_an_option():
    ids = {kafka.new_cluster_id() for _ in range(2000)}   # ~31 would start with "-" unguarded
    assert len(ids) == 2000
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", i) for i in ids)


def test_server_properties_bind_loopback_and_keep_internal_topics_at_replication_1(tmp_path):
    props = kafka.server_properties(9100, 9101, tmp_path, kafka.KafkaSettings())
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9100,CONTROLLER://127.0.0.1:9101"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9101"
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr"):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"


def _fake_cache(home: Path) -> Path:
    (home / "lib").mkdir(parents=True)
    jar = home / "lib" / "kafka_2.13-0.0.jar"
    jar.write_bytes(b"PK\x03\x04 not really a jar")
    (home / kafka.MANIFEST).write_text(json.dumps(
        {"jars": {jar.name: kafka._sha256(jar)}}))
    return jar


def test_cache_verifies_and_a_corrupt_jar_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("RVS_KAFKA_HOME", str(tmp_path / "k"))
    with pytest.raises(procs.LaunchError, match="not in .*make setup"):
        kafka.verify()
    jar = _fake_cache(tmp_path / "k")
    assert kafka.verify() == [jar]
    jar.write_bytes(b"truncated")
    with pytest.raises(procs.LaunchError, match=r"corrupt \(kafka_2\.13-0\.0\.jar"):
        kafka.verify()
    (tmp_path / "k" / kafka.MANIFEST).write_text("{not json")
    with pytest.raises(procs.LaunchError, match="manifest.json is corrupt"):
        kafka.verify()


def test_missing_java_says_what_to_install(monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(kafka.shutil, "which", lambda _name: None)
    with pytest.raises(procs.LaunchError, match="openjdk-17-jre-headless") as e:
        kafka.java_binary()
    assert "\n" not in str(e.value)


def _on_path(tmp_path: Path, name: str, script: str) -> None:
    exe = tmp_path / "bin" / name
    exe.parent.mkdir(exist_ok=True)
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)


def test_unreachable_maven_repository_is_one_line_and_keeps_the_old_cache(tmp_path, monkeypatch):
    """A Maven failure names the artifact and the cause; the cache it would replace survives."""
    _on_path(tmp_path, "mvn", "echo '[ERROR] Failed to execute goal: Could not transfer "
                              "artifact org.apache.kafka:kafka_2.13: Connection refused'; exit 1\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("RVS_KAFKA_HOME", str(tmp_path / "k"))
    jar = _fake_cache(tmp_path / "k")
    with pytest.raises(procs.LaunchError, match=r"kafka_2\.13:.*Connection refused.*reachable"):
        kafka.fetch(force=True)
    assert kafka.verify() == [jar]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "k"]  # no staging left


@pytest.mark.stack
def test_kafka_formats_a_fresh_log_dir_and_restarts_on_it(tmp_path):
    """The same log dir serves a restart (the broker faults use it): a topic survives."""
    from confluent_kafka.admin import AdminClient

    from services.broker import create_topics

    with procs.Supervisor(tmp_path / "logs") as sup:
        b = kafka.start_kafka(sup, tmp_path)
        log_dir = Path(b.settings["log_dir"])
        assert (log_dir / "meta.properties").is_file() and log_dir.parent == tmp_path
        assert b.settings["server.properties"]["log.dirs"] == str(log_dir)
        create_topics(b.bootstrap, {"keep": 2})
        sup.stop_all()
        assert not procs.group_alive(b.pid)
        b2 = kafka.start_kafka(sup, tmp_path, log_dir=log_dir, name="kafka-again")
        assert b2.cluster_id == b.cluster_id
        md = AdminClient({"bootstrap.servers": b2.bootstrap}).list_topics(timeout=10)
        assert len(md.topics["keep"].partitions) == 2
