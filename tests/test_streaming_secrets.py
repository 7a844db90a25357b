"""No secret over an API: the sink's S3 credentials reach the task through the worker's config provider.

The connector config holds ``${env:AWS_SECRET_ACCESS_KEY}``; the test asserts the secret string is absent
from Connect's REST answers (connector and task configs), from ``_connect-configs`` and from the worker log
written while the connector ran, and that the sink still authenticates to S3 (a record lands).
"""

from __future__ import annotations

import io
import time
import uuid
from datetime import UTC, datetime

import fastavro
import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from qp_assets.features.golden import make_result
from qp_assets.settings import Settings
from qp_assets.stack.services import s3_client
from qp_assets.streaming.connect import SINK_CONNECTOR, connector_config, wait_running
from qp_assets.streaming.kafka_config import client_config
from qp_assets.streaming.publisher import publish_record

pytestmark = [pytest.mark.services, pytest.mark.slow]
WHEN = datetime(2026, 11, 29, 7, 30, tzinfo=UTC)


def _config_topic_values(settings: Settings, names: set[str]) -> list[bytes]:
    """Values of every ``_connect-configs`` record whose key mentions one of ``names``."""
    consumer = Consumer(client_config(settings.kafka_bootstrap_servers, **{"group.id": f"t-{uuid.uuid4()}", "enable.auto.commit": False}))  # fmt: skip
    _, high = consumer.get_watermark_offsets(TopicPartition("_connect-configs", 0), timeout=10)
    consumer.assign([TopicPartition("_connect-configs", 0, 0)])
    values, deadline = [], time.monotonic() + 30
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        key = (msg.key() or b"").decode()
        if any(name in key for name in names):
            values.append(msg.value() or b"")
        if msg.offset() >= high - 1:
            break
    consumer.close()
    return values


def test_s3_secret_is_in_no_connect_api_topic_or_log_and_the_sink_still_lands(stack: Settings) -> None:
    secret = stack.aws_secret_access_key.encode()
    assert len(secret) >= 8
    tag = uuid.uuid4().hex[:8]
    name, prefix, topic = f"qp-test-secret-{tag}", f"tests/secret-{tag}", f"qp_test_secret_{tag}.cfg"
    config = connector_config(stack)
    assert config["s3.secret.access.key"] == "${env:AWS_SECRET_ACCESS_KEY}"
    assert stack.aws_secret_access_key not in str(config)
    config.update({"topics.regex": rf"qp_test_secret_{tag}\..*", "s3.prefix": prefix,
                   "rotate.interval.ms": "1000", "errors.deadletterqueue.topic.name": f"qp_test_secret_dlq_{tag}"})  # fmt: skip
    log_file = stack.runtime_dir / "logs" / "connect.log"
    log_start = log_file.stat().st_size
    base = stack.kafka_connect_url
    try:
        httpx.put(f"{base}/connectors/{name}/config", json=config, timeout=90).raise_for_status()
        wait_running(stack, name, 90)
        rec = make_result(1, WHEN, run_id=f"secret-{tag}")
        assert publish_record(rec, stack, topic=topic, key=rec["run_id"], schema_name="vqe_result", version=3,
                              spool_on_failure=False, topic_partitions=1).published  # fmt: skip
        s3, deadline, keys = s3_client(stack), time.monotonic() + 60, []
        while not keys and time.monotonic() < deadline:
            keys = [
                o["Key"] for o in s3.list_objects_v2(Bucket=stack.bucket, Prefix=prefix).get("Contents", [])
            ]
            time.sleep(1)
        assert len(keys) == 1  # the task authenticated with the resolved credentials
        body = s3.get_object(Bucket=stack.bucket, Key=keys[0])["Body"].read()
        assert [r["run_id"] for r in fastavro.reader(io.BytesIO(body))] == [rec["run_id"]]

        answers = [
            httpx.get(f"{base}/connectors/{name}/config", timeout=10),
            httpx.get(f"{base}/connectors/{name}/tasks", timeout=10),
            httpx.get(f"{base}/connectors/{name}", timeout=10),
            httpx.get(f"{base}/connectors/{SINK_CONNECTOR}/config", timeout=10),
            httpx.get(f"{base}/connectors", params={"expand": ["info", "status"]}, timeout=10),
        ]
        for resp in answers:
            assert resp.status_code == 200 and secret not in resp.content, resp.url
        assert b"${env:AWS_SECRET_ACCESS_KEY}" in answers[0].content
        stored = _config_topic_values(stack, {name})
        assert len(stored) >= 2  # the connector config and its task config(s)
        assert all(secret not in value for value in stored)
        with open(log_file, "rb") as handle:
            handle.seek(log_start)
            assert secret not in handle.read()
    finally:
        httpx.delete(f"{base}/connectors/{name}", timeout=30)
        admin = AdminClient(client_config(stack.kafka_bootstrap_servers))
        doomed = [
            t for t in (topic, f"qp_test_secret_dlq_{tag}") if t in admin.list_topics(timeout=10).topics
        ]
        for future in admin.delete_topics(doomed, operation_timeout=10).values() if doomed else []:
            future.result(15)
        registry = stack.schema_registry_url.rstrip("/")
        httpx.delete(f"{registry}/subjects/{topic}-value", timeout=10)
        httpx.delete(f"{registry}/subjects/{topic}-value", params={"permanent": "true"}, timeout=10)
        s3 = s3_client(stack)
        for obj in s3.list_objects_v2(Bucket=stack.bucket, Prefix=prefix).get("Contents", []):
            s3.delete_object(Bucket=stack.bucket, Key=obj["Key"])
