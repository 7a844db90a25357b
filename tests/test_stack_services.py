"""Real-service tests of the local stack (no mocks): health, Kafka, registry, S3, PushGateway -> Prometheus."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from qp_assets.settings import Settings
from qp_assets.stack import SERVICE_ORDER, status
from qp_assets.streaming.kafka_config import client_config

pytestmark = pytest.mark.services


def test_every_service_healthy_after_up(stack: Settings) -> None:
    rows = {row.name: row for row in status(settings=stack)}
    assert list(rows) == SERVICE_ORDER
    for name, row in rows.items():
        assert row.state in ("healthy", "external-healthy"), f"{name}: {row.state} (log {row.log_file})"


@pytest.mark.timeout(90)
def test_kafka_create_topic_produce_consume_exactly_1000(stack: Settings) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"qp-stack-test-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(client_config(stack.kafka_bootstrap_servers))
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    futures[topic].result(timeout=30)
    try:
        producer = Producer(client_config(stack.kafka_bootstrap_servers, **{"linger.ms": 5}))
        sent = [f"record-{i}" for i in range(1000)]
        for i, value in enumerate(sent):
            producer.produce(topic, key=str(i).encode(), value=value.encode())
        assert producer.flush(30) == 0

        consumer = Consumer(
            client_config(
                stack.kafka_bootstrap_servers,
                **{
                    "group.id": f"qp-stack-test-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                },
            )
        )
        consumer.assign([TopicPartition(topic, 0, 0)])
        received: list[str] = []
        deadline = time.monotonic() + 45
        while len(received) < 1000 and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=500, timeout=1.0):
                assert msg.error() is None, msg.error()
                received.append(msg.value().decode())
        # nothing beyond the 1,000 records arrives
        extra = consumer.consume(num_messages=10, timeout=1.0)
        consumer.close()
        assert received == sent
        assert extra == []
    finally:
        admin.delete_topics([topic])[topic].result(timeout=30)


@pytest.mark.timeout(60)
def test_registry_register_serialize_deserialize(stack: Settings) -> None:
    from confluent_kafka.schema_registry import Schema, topic_subject_name_strategy
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    from qp_assets.streaming.serde import registry_client

    subject_topic = f"qp-stack-test-{uuid.uuid4().hex[:8]}"
    schema_str = json.dumps(
        {
            "type": "record",
            "name": "StackProbe",
            "namespace": "qp.test",
            "fields": [
                {"name": "molecule", "type": "string"},
                {"name": "energy_hartree", "type": "double"},
                {"name": "iterations", "type": "int"},
            ],
        }
    )
    client = registry_client(stack.schema_registry_url)
    subject = f"{subject_topic}-value"
    schema_id = client.register_schema(subject, Schema(schema_str, "AVRO"))
    assert schema_id > 0
    # compatibility endpoint used by the streaming area
    resp = httpx.put(
        f"{stack.schema_registry_url}/config/{subject}", json={"compatibility": "BACKWARD"}, timeout=10
    )
    assert resp.status_code == 200, resp.text
    assert (
        httpx.get(f"{stack.schema_registry_url}/config/{subject}", timeout=10).json()["compatibilityLevel"]
        == "BACKWARD"
    )

    ctx = SerializationContext(subject_topic, MessageField.VALUE)
    record = {"molecule": "H2", "energy_hartree": -1.137283834, "iterations": 42}
    payload = AvroSerializer(client, schema_str)(record, ctx)
    assert payload[0] == 0 and int.from_bytes(payload[1:5], "big") == schema_id
    # a fresh client (empty cache) must resolve the id through the registry, configured as the platform's
    # deserializer is (serde.ValueDeserializer): topic-name subjects. confluent-kafka's default strategy
    # first asks Apicurio for associations, a call it can leave unanswered (issue 13; this test once
    # failed on that read timeout in CI)
    fresh = registry_client(stack.schema_registry_url)
    decoded = AvroDeserializer(fresh, conf={"subject.name.strategy": topic_subject_name_strategy})(
        payload, ctx
    )
    assert decoded == record
    client.delete_subject(subject)
    client.delete_subject(subject, permanent=True)


@pytest.mark.timeout(60)
def test_s3_put_list_get(stack: Settings) -> None:
    from qp_assets.stack.services import s3_client

    client = s3_client(stack)
    key = f"tests/stack/{uuid.uuid4().hex}.bin"
    body = uuid.uuid4().bytes * 1000
    client.put_object(Bucket=stack.bucket, Key=key, Body=body)
    try:
        listed = client.list_objects_v2(Bucket=stack.bucket, Prefix="tests/stack/")
        assert key in [obj["Key"] for obj in listed.get("Contents", [])]
        assert client.get_object(Bucket=stack.bucket, Key=key)["Body"].read() == body
    finally:
        client.delete_object(Bucket=stack.bucket, Key=key)


@pytest.mark.timeout(60)
def test_s3_store_volume_limit_is_fixed_and_new_buckets_take_writes(stack: Settings) -> None:
    """The store's volume limit does not shrink with the disk's free space (CI failed on it: with 3 GB free,
    weed mini allowed 3 volumes and a PutObject into a test's new bucket got a bare InternalError)."""
    from qp_assets.stack.services import s3_client
    from qp_assets.stack.services.base import StackContext
    from qp_assets.stack.services.seaweedfs import VOLUME_MAX

    master = StackContext(stack).seaweed_internal_ports["master.port"]
    topology = httpx.get(f"http://127.0.0.1:{master}/dir/status", timeout=10).json()["Topology"]
    assert topology["Max"] == VOLUME_MAX, topology
    client = s3_client(stack)
    buckets = [f"qp-test-volumes-{uuid.uuid4().hex[:8]}-{i}" for i in range(3)]
    try:
        for bucket in buckets:  # each bucket is a collection with volumes of its own
            client.create_bucket(Bucket=bucket)
            client.put_object(Bucket=bucket, Key="k.bin", Body=b"x" * 1000)
            assert client.get_object(Bucket=bucket, Key="k.bin")["Body"].read() == b"x" * 1000
    finally:
        for bucket in buckets:
            try:
                client.delete_object(Bucket=bucket, Key="k.bin")
                client.delete_bucket(Bucket=bucket)
            except client.exceptions.ClientError:
                pass


def test_spark_connect_scratch_lives_in_the_runtime_dir(stack: Settings) -> None:
    """The Spark Connect server's jar copies (about 120 MB per start) go to ``<runtime>/tmp/spark-connect``,
    emptied at each start, not to ``/tmp`` where every restart left a copy behind."""
    scratch = stack.runtime_dir / "tmp" / "spark-connect"
    copies = list(scratch.glob("spark-*/userFiles-*"))
    assert len(copies) == 1, copies
    assert sum(f.stat().st_size for f in copies[0].rglob("*") if f.is_file()) > 10_000_000


@pytest.mark.timeout(60)
def test_pushgateway_metric_read_back_from_prometheus(stack: Settings) -> None:
    from prometheus_client import CollectorRegistry, Gauge, delete_from_gateway, push_to_gateway

    job = f"qp_stack_test_{uuid.uuid4().hex[:8]}"
    value = 1234.5
    registry = CollectorRegistry()
    Gauge("qp_stack_probe_value", "stack test probe", registry=registry).set(value)
    push_to_gateway(stack.pushgateway_url, job=job, registry=registry)
    try:
        query = f'qp_stack_probe_value{{job="{job}"}}'
        deadline = time.monotonic() + 30
        result: list = []
        while time.monotonic() < deadline:
            resp = httpx.get(f"{stack.prometheus_url}/api/v1/query", params={"query": query}, timeout=5)
            resp.raise_for_status()
            result = resp.json()["data"]["result"]
            if result:
                break
            time.sleep(1)
        assert result, f"{query} not scraped by Prometheus within 30 s"
        assert float(result[0]["value"][1]) == value
        assert result[0]["metric"]["job"] == job  # honor_labels keeps the pushed job label
    finally:
        delete_from_gateway(stack.pushgateway_url, job=job)
