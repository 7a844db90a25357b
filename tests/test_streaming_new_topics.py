"""A configuration never seen before lands in seconds: its topic is created after the sink started.

The sink subscribes with ``topics.regex``; a consumer sees topics created after it started only on a
metadata refresh (``metadata.max.age.ms``, default 300 s: new configurations used to take 120-300 s to land).
The production connector overrides it to 5 s. This test runs a connector with the production config (only
the regex, the S3 prefix and the DLQ are its own), waits until its consumer is up with no matching topic,
then publishes to two fresh topics and measures publish -> object in S3, asserting exact object and
record counts. It removes its connector, topics, subjects and objects.
"""

from __future__ import annotations

import io
import time
import uuid
from datetime import UTC, datetime

import fastavro
import httpx
import pytest
from confluent_kafka.admin import AdminClient

from qp_assets.features.golden import make_result
from qp_assets.settings import Settings
from qp_assets.stack.services import s3_client
from qp_assets.streaming.connect import connector_config, wait_running
from qp_assets.streaming.kafka_config import client_config
from qp_assets.streaming.publisher import RESULT_PARTITIONS, publish_record

pytestmark = [pytest.mark.services, pytest.mark.slow]
WHEN = datetime(2026, 11, 29, 7, 0, tzinfo=UTC)
LANDING_TARGET_S = 30.0


def sink_config(settings: Settings, tag: str, prefix: str) -> dict[str, str]:
    config = connector_config(settings)
    config.update({
        "topics.regex": rf"qp_test_new_{tag}\..*",
        "s3.prefix": prefix,
        "errors.deadletterqueue.topic.name": f"qp_test_new_dlq_{tag}",
    })  # fmt: skip
    return config


def landed(settings: Settings, prefix: str) -> dict[str, list[dict]]:
    """{object key: records} under ``prefix``."""
    s3, out = s3_client(settings), {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=settings.bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=settings.bucket, Key=obj["Key"])["Body"].read()
            out[obj["Key"]] = list(fastavro.reader(io.BytesIO(body)))
    return out


def publish(settings: Settings, topic: str, count: int, tag: str) -> list[str]:
    run_ids = []
    for i in range(count):
        rec = make_result(i, WHEN, run_id=f"new-{tag}-{topic[-4:]}-{i}")
        out = publish_record(rec, settings, topic=topic, key=rec["run_id"], schema_name="vqe_result", version=3,
                             spool_on_failure=False, topic_partitions=RESULT_PARTITIONS)  # fmt: skip
        assert out.published
        run_ids.append(rec["run_id"])
    return run_ids


def wait_for_topic(
    settings: Settings, prefix: str, topic: str, records: int, timeout_s: float
) -> float | None:
    """Seconds until ``records`` records of ``topic`` are in S3 (None if not within ``timeout_s``)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        got = sum(len(v) for k, v in landed(settings, prefix).items() if f"/topics/{topic}/" in k)
        if got >= records:
            return time.monotonic() - start
        time.sleep(0.5)
    return None


def cleanup(settings: Settings, connector: str, topics: list[str], prefix: str) -> None:
    httpx.delete(f"{settings.kafka_connect_url}/connectors/{connector}", timeout=30)
    admin = AdminClient(client_config(settings.kafka_bootstrap_servers))
    existing = set(admin.list_topics(timeout=10).topics)
    doomed = [t for t in topics if t in existing]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=10, request_timeout=10).values():
            future.result(15)
    base = settings.schema_registry_url.rstrip("/")
    for topic in topics:
        httpx.delete(f"{base}/subjects/{topic}-value", timeout=10)
        httpx.delete(f"{base}/subjects/{topic}-value", params={"permanent": "true"}, timeout=10)
    s3 = s3_client(settings)
    for key in landed(settings, prefix):
        s3.delete_object(Bucket=settings.bucket, Key=key)


def test_production_connector_refreshes_topic_metadata_every_5_s(stack: Settings) -> None:
    assert connector_config(stack)["consumer.override.metadata.max.age.ms"] == "2000"


def test_topics_created_after_the_sink_started_land_within_30_s(stack: Settings) -> None:
    tag = uuid.uuid4().hex[:8]
    connector, prefix = f"qp-test-new-{tag}", f"tests/new-{tag}"
    topics = [f"qp_test_new_{tag}.cfg{k}-{uuid.uuid4().hex[:4]}" for k in range(2)]
    dlq = f"qp_test_new_dlq_{tag}"
    try:
        resp = httpx.put(f"{stack.kafka_connect_url}/connectors/{connector}/config",
                         json=sink_config(stack, tag, prefix), timeout=90)  # fmt: skip
        resp.raise_for_status()
        wait_running(stack, connector, 90)
        time.sleep(5)  # its consumer has joined and fetched metadata: no topic matches yet
        figures = []
        for k, topic in enumerate(topics):
            sent = publish(stack, topic, 3 + k, tag)
            seconds = wait_for_topic(stack, prefix, topic, len(sent), LANDING_TARGET_S + 30)
            print(f"{topic}: {len(sent)} results created+published -> landed in {seconds} s")
            figures.append(seconds)
            files = {key: recs for key, recs in landed(stack, prefix).items() if f"/topics/{topic}/" in key}
            assert len(files) == 1  # one file: exactly the records sent, nothing else
            (records,) = files.values()
            assert sorted(r["run_id"] for r in records) == sorted(sent)
        assert all(s is not None and s < LANDING_TARGET_S for s in figures), figures
        # for comparison: the same on a topic the sink already consumes (no discovery, no rebalance)
        sent = publish(stack, topics[0], 2, f"{tag}x")
        seconds = wait_for_topic(stack, prefix, topics[0], 3 + len(sent), LANDING_TARGET_S + 30)
        print(f"{topics[0]} (existing): {len(sent)} results published -> landed in {seconds} s")
        records = [
            r for key, recs in landed(stack, prefix).items() if f"/topics/{topics[0]}/" in key for r in recs
        ]
        assert len(records) == 5 and set(sent) <= {r["run_id"] for r in records}
    finally:
        cleanup(stack, connector, [*topics, dlq], prefix)
