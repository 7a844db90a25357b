"""Destructive stack tests: full down/up with persistence checks (sorts last; brings the stack back up).

State written before ``down`` (a topic with 100 records, a registered schema, an S3 object) must all
be readable after ``up``; ``down`` must leave no process of ours alive.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from qp_assets.settings import Settings
from qp_assets.stack import down, ensure_up, our_process_groups, process
from qp_assets.stack.services import s3_client
from qp_assets.streaming.kafka_config import client_config

pytestmark = [pytest.mark.services, pytest.mark.slow]

N_RECORDS = 100


def _consume_all(settings: Settings, topic: str, expected: int, timeout_s: float = 45) -> list[str]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        client_config(
            settings.kafka_bootstrap_servers,
            **{
                "group.id": f"qp-restart-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
            },
        )
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[str] = []
    deadline = time.monotonic() + timeout_s
    while len(values) < expected and time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=500, timeout=1.0):
            if msg.error() is None:
                values.append(msg.value().decode())
    values.extend(m.value().decode() for m in consumer.consume(num_messages=10, timeout=1.0) if not m.error())
    consumer.close()
    return values


@pytest.mark.timeout(420)
def test_down_leaves_nothing_and_state_survives_up(stack: Settings) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    from confluent_kafka.schema_registry import Schema

    from qp_assets.streaming.serde import registry_client

    tag = uuid.uuid4().hex[:8]
    topic = f"qp-restart-test-{tag}"
    subject = f"{topic}-value"
    key = f"tests/restart/{tag}.txt"
    schema_str = json.dumps(
        {
            "type": "record",
            "name": "RestartProbe",
            "namespace": "qp.test",
            "fields": [{"name": "n", "type": "int"}],
        }
    )

    # --- write state into every stateful service
    admin = AdminClient(client_config(stack.kafka_bootstrap_servers))
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(timeout=30)
    producer = Producer(client_config(stack.kafka_bootstrap_servers, **{"acks": "all"}))
    sent = [f"{tag}-{i}" for i in range(N_RECORDS)]
    for value in sent:
        producer.produce(topic, value=value.encode())
    assert producer.flush(30) == 0
    registry = registry_client(stack.schema_registry_url)
    schema_id = registry.register_schema(subject, Schema(schema_str, "AVRO"))
    s3 = s3_client(stack)
    s3.put_object(Bucket=stack.bucket, Key=key, Body=tag.encode())

    # --- down: no process of ours may survive
    groups = our_process_groups(stack)
    assert groups, "stack fixture should have started services"
    try:
        down(settings=stack)
        for name, pgid in groups.items():
            assert process.group_members(pgid) == [], f"{name} (pgid {pgid}) still running after down"
    finally:
        ensure_up(settings=stack)  # always leave the shared stack running for the rest of the session

    # --- state after up
    try:
        assert _consume_all(stack, topic, N_RECORDS) == sent
        fresh = registry_client(stack.schema_registry_url)
        assert json.loads(fresh.get_schema(schema_id).schema_str) == json.loads(schema_str)
        assert fresh.get_latest_version(subject).schema_id == schema_id
        assert s3_client(stack).get_object(Bucket=stack.bucket, Key=key)["Body"].read() == tag.encode()
    finally:
        admin = AdminClient(client_config(stack.kafka_bootstrap_servers))
        admin.delete_topics([topic])[topic].result(timeout=30)
        registry = registry_client(stack.schema_registry_url)
        registry.delete_subject(subject)
        registry.delete_subject(subject, permanent=True)
        s3_client(stack).delete_object(Bucket=stack.bucket, Key=key)
