"""Security pass-through against a real broker listener that requires SASL/SCRAM-SHA-512.

A second, test-only KRaft broker (the stack's Kafka jars, ports 19092/19093, 256 MB heap) is formatted with
a SCRAM user and stopped at the end. Producing through ``publish_record`` with the ``KAFKA_*`` security
variables works with the right password and is refused (spooled) with a wrong one.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from qp_assets.features.golden import make_result
from qp_assets.settings import Settings
from qp_assets.stack.process import spawn, stop_group
from qp_assets.stack.services import java_executable, kafka_random_uuid
from qp_assets.streaming.kafka_config import client_config
from qp_assets.streaming.publisher import publish_record

pytestmark = [pytest.mark.services, pytest.mark.slow]
PORT, CONTROLLER_PORT = 19092, 19093
USER, PASSWORD = "qp-scram-user", "local-test-only-" + uuid.uuid4().hex[:8]

SERVER_PROPERTIES = """
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller}
listeners=SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=SASL_PLAINTEXT://127.0.0.1:{port}
listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="{user}" password="{password}";
log.dirs={logs}
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
"""


@pytest.fixture(scope="module")
def scram_broker(stack: Settings, tmp_path_factory: pytest.TempPathFactory):
    lib = stack.runtime_dir / "lib" / "kafka"
    assert lib.is_dir(), "the stack's Kafka jars are needed"
    home = tmp_path_factory.mktemp("scram-broker")
    props = home / "server.properties"
    props.write_text(SERVER_PROPERTIES.format(port=PORT, controller=CONTROLLER_PORT, user=USER, password=PASSWORD,
                                              logs=home / "logs"))  # fmt: skip
    log4j = stack.runtime_dir / "conf" / "kafka" / "log4j2.properties"
    java = [java_executable(), "-Xmx256m", "-XX:TieredStopAtLevel=1", f"-Dlog4j2.configurationFile=file:{log4j}",
            "-cp", f"{lib}/*"]  # fmt: skip
    subprocess.run(
        [*java, "kafka.tools.StorageTool", "format", "--standalone", "-t", kafka_random_uuid(), "-c", str(props),
         "--add-scram", f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    # spawn: own session and SIGTERM at its default (CI's pytest ignores SIGTERM; a JVM inheriting that
    # ignores it too, and the teardown then waited its whole grace: 30.0 s in CI run 14)
    proc = spawn([*java, "kafka.Kafka", str(props)], home / "broker.log", dict(os.environ), home)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"SCRAM broker died; see {home / 'broker.log'}"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", PORT)) == 0:
                break
        time.sleep(1)
    yield dataclasses.replace(stack, kafka_bootstrap_servers=f"127.0.0.1:{PORT}")
    forced = stop_group(proc.pid, grace_seconds=30)
    proc.wait(10)
    assert not forced, (
        f"the SCRAM broker ignored SIGTERM and was killed after 30 s; see {home / 'broker.log'}"
    )


def _scram_env(monkeypatch: pytest.MonkeyPatch, password: str) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", USER)
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", password)
    monkeypatch.setenv("QP_KAFKA_DELIVERY_TIMEOUT_MS", "20000")


def test_publish_over_sasl_scram_with_the_right_password(
    scram_broker: Settings, monkeypatch, tmp_path: Path
) -> None:
    _scram_env(monkeypatch, PASSWORD)
    settings = dataclasses.replace(scram_broker, runtime_dir=tmp_path)
    topic = f"qp_test_scram_{uuid.uuid4().hex[:8]}"
    record = make_result(1, datetime(2026, 11, 23, tzinfo=UTC), run_id=f"scram-{uuid.uuid4().hex[:8]}")
    out = publish_record(record, settings, topic=topic, key=record["run_id"], schema_name="vqe_result", version=3,
                         spool_on_failure=False)  # fmt: skip
    assert out.published and out.offset == 0
    consumer = Consumer(client_config(settings.kafka_bootstrap_servers, **{"group.id": "scram-test", "auto.offset.reset": "earliest", "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": USER, "sasl.password": PASSWORD}))  # fmt: skip
    consumer.subscribe([topic])
    msg, deadline = None, time.monotonic() + 30
    while msg is None and time.monotonic() < deadline:
        candidate = consumer.poll(1)
        msg = candidate if candidate is not None and not candidate.error() else None
    consumer.close()
    assert msg is not None and msg.key().decode() == record["run_id"]


def test_wrong_password_is_refused_and_the_result_is_spooled(
    scram_broker: Settings, monkeypatch, tmp_path
) -> None:
    _scram_env(monkeypatch, "wrong-password")
    monkeypatch.setenv("QP_KAFKA_DELIVERY_TIMEOUT_MS", "5000")
    settings = dataclasses.replace(scram_broker, runtime_dir=tmp_path)
    record = make_result(2, datetime(2026, 11, 23, tzinfo=UTC), run_id=f"scram-bad-{uuid.uuid4().hex[:8]}")
    out = publish_record(record, settings, topic="qp_test_scram_refused", key=record["run_id"],
                         schema_name="vqe_result", version=3)  # fmt: skip
    assert not out.published and out.spool_path is not None and out.spool_path.exists()
    assert (
        "Authentication" in (out.error or "")
        or "SASL" in (out.error or "")
        or "timed out" in (out.error or "")
    )
