"""Kafka Connect + our S3 Avro sink on the real stack: landing, DLQ, and a Connect restart mid-flow.

Each test module run gets its own connector (same plugin, same settings as the production one) that
subscribes only to this run's test topics and writes under ``tests/landing-<tag>/`` in the bucket, so test
data never mixes with the ``raw/`` prefix the feature tables read.
"""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import boto3
import fastavro
import httpx
import pytest
from confluent_kafka import Consumer, Producer

from qp_assets.features.golden import as_v4, make_result
from qp_assets.settings import Settings
from qp_assets.streaming.connect import connector_config, wait_running
from qp_assets.streaming.kafka_config import client_config
from qp_assets.streaming.publisher import ensure_topic, publish_record
from qp_assets.streaming.topics import RESULT_TOPIC_REGEX, result_topic

pytestmark = [pytest.mark.services, pytest.mark.slow]
WHEN = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
TAG = uuid.uuid4().hex[:8]
PREFIX = f"tests/landing-{TAG}"
TOPICS = [f"qp_test_land_{TAG}.cfg{k}" for k in range(3)]
DLQ = f"qp_test_land_dlq_{TAG}"
CONNECTOR = f"qp-test-sink-{TAG}"


@pytest.fixture(scope="module")
def sink(stack: Settings):
    for topic in TOPICS:
        ensure_topic(stack, topic, 1)
    config = connector_config(stack)
    config.update({
        "topics.regex": rf"qp_test_land_{TAG}\.cfg[0-9]+",
        "s3.prefix": PREFIX,
        "flush.size": "50",
        "rotate.interval.ms": "2000",
        "errors.deadletterqueue.topic.name": DLQ,
    })  # fmt: skip
    url = f"{stack.kafka_connect_url}/connectors/{CONNECTOR}"
    httpx.put(f"{url}/config", json=config, timeout=30).raise_for_status()
    wait_running(stack, CONNECTOR, 90)
    yield stack
    httpx.delete(url, timeout=30)


def _s3(settings: Settings):
    return boto3.client("s3", endpoint_url=settings.s3_endpoint_url, aws_access_key_id=settings.aws_access_key_id,
                        aws_secret_access_key=settings.aws_secret_access_key, region_name=settings.aws_region)  # fmt: skip


def landed(settings: Settings) -> tuple[list[str], list[dict]]:
    """(keys, records) of every file under this run's prefix."""
    s3, keys, records = _s3(settings), [], []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=settings.bucket, Prefix=PREFIX):
        for obj in page.get("Contents", []):
            keys.append(obj["Key"])
            body = s3.get_object(Bucket=settings.bucket, Key=obj["Key"])["Body"].read()
            records.extend(fastavro.reader(io.BytesIO(body)))
    return keys, records


def _topic_of(key: str) -> str:
    return key[len(PREFIX) + 1 :].split("/")[1]


def wait_landed(settings: Settings, count: int, timeout_s: float = 120) -> tuple[list[str], list[dict]]:
    deadline = time.monotonic() + timeout_s
    while True:
        keys, records = landed(settings)
        if len(records) >= count or time.monotonic() > deadline:
            return keys, records
        time.sleep(2)


def publish(settings: Settings, start: int, count: int) -> dict[str, dict]:
    sent = {}
    for i in range(start, start + count):
        rec = make_result(i, WHEN, num_iterations=5 + i % 7, run_id=f"land-{TAG}-{i:04d}")
        topic = TOPICS[i % len(TOPICS)]
        out = publish_record(rec, settings, topic=topic, key=rec["run_id"], schema_name="vqe_result", version=3,
                             spool_on_failure=False)  # fmt: skip
        assert out.published
        sent[rec["run_id"]] = rec
    return sent


def test_production_connector_subscribes_to_every_result_topic(stack: Settings) -> None:
    import re

    regex = connector_config(stack)["topics.regex"]
    assert regex == RESULT_TOPIC_REGEX
    for major in (1, 2, 3, 4):
        assert re.fullmatch(regex, result_topic(make_result(1, WHEN), major))
    assert not re.fullmatch(regex, TOPICS[0]) and not re.fullmatch(regex, "vqe.requests")


def test_200_results_over_3_topics_land_exactly_as_published(sink: Settings) -> None:
    sent = publish(sink, 0, 200)
    keys, records = wait_landed(sink, 200)
    assert len(records) == 200
    assert Counter(r["run_id"] for r in records) == Counter(sent.keys())  # each exactly once
    for r in records:
        assert r == sent[r["run_id"]]
    assert {_topic_of(k) for k in keys} == set(TOPICS)
    today = datetime.now(UTC)
    for key in keys:
        topic = _topic_of(key)
        assert key.startswith(f"{PREFIX}/topics/{topic}/year={today:%Y}/month={today:%m}/day=")
        assert key.endswith(".avro") and f"/{topic}+0+" in key


def test_v3_and_v4_results_land_alike(sink: Settings) -> None:
    """Producers write v4 now while v3 results (older producers, spooled ones) still arrive: the sink lands
    both, each file in its writer schema, every record exactly as sent (v4 fields included)."""
    v3_topic, v4_topic = (f"qp_test_land_{TAG}.cfg{k}" for k in (30, 40))
    before = len(landed(sink)[1])
    sent = {}
    for i in range(6):
        rec = make_result(2000 + i, WHEN, num_iterations=3, run_id=f"land-{TAG}-v{3 + i % 2}-{i}")
        version, topic = (3, v3_topic) if i % 2 == 0 else (4, v4_topic)
        if version == 4:
            rec = as_v4(rec, point=i // 2)
        out = publish_record(rec, sink, topic=topic, key=rec["run_id"], schema_name="vqe_result",
                             version=version, spool_on_failure=False, topic_partitions=1)  # fmt: skip
        assert out.published
        sent[rec["run_id"]] = rec
    keys, records = wait_landed(sink, before + 6)
    mine = [r for r in records if r["run_id"] in sent]
    assert len(records) == before + 6 and len(mine) == 6
    for r in mine:
        assert r == sent[r["run_id"]]  # v3 records without, v4 records with scan/adapt/kernel fields
    assert sorted(r["scan_point"]["index"] for r in mine if "scan_point" in r) == [0, 1, 2]
    assert {_topic_of(k) for k in keys} >= {v3_topic, v4_topic}


def test_undecodable_record_goes_to_dlq_and_sink_keeps_running(sink: Settings) -> None:
    before = len(landed(sink)[1])
    producer = Producer(client_config(sink.kafka_bootstrap_servers))
    producer.produce(TOPICS[0], key=b"bad", value=b"\x01garbage-not-confluent-avro")
    producer.produce(TOPICS[1], key=b"bad-id", value=b"\x00\x00\x0f\x42\x40\x02")  # unknown schema id 1000000
    producer.flush(10)
    sent = publish(sink, 1000, 10)
    _, records = wait_landed(sink, before + 10)
    assert len(records) == before + 10
    assert set(sent) <= {r["run_id"] for r in records}
    consumer = Consumer(client_config(sink.kafka_bootstrap_servers, **{"group.id": f"t-{TAG}", "auto.offset.reset": "earliest"}))  # fmt: skip
    consumer.subscribe([DLQ])
    dead, deadline = [], time.monotonic() + 60
    while len(dead) < 2 and time.monotonic() < deadline:
        msg = consumer.poll(1)
        if msg is not None and not msg.error():
            dead.append(msg)
    consumer.close()
    assert sorted(m.value() for m in dead) == sorted(
        [b"\x01garbage-not-confluent-avro", b"\x00\x00\x0f\x42\x40\x02"]
    )
    headers = dict(dead[0].headers())
    assert headers["__connect.errors.topic"].decode().startswith(f"qp_test_land_{TAG}.cfg")
    assert wait_running(sink, CONNECTOR, 10)["tasks"][0]["state"] == "RUNNING"


def test_connect_restart_while_records_flow_loses_and_duplicates_nothing(sink: Settings) -> None:
    from qp_assets.stack import restart

    before = Counter(r["run_id"] for r in landed(sink)[1])
    sent: dict[str, dict] = {}

    def producer_loop() -> None:
        for batch in range(10):
            sent.update(publish(sink, 2000 + batch * 10, 10))
            time.sleep(1.0)

    thread = threading.Thread(target=producer_loop)
    thread.start()
    time.sleep(3)
    restart(["connect"])  # SIGTERM to Connect's process group, then start it again
    thread.join(120)
    assert len(sent) == 100
    wait_running(sink, CONNECTOR, 120)
    _, records = wait_landed(sink, sum(before.values()) + 100, timeout_s=180)
    counts = Counter(r["run_id"] for r in records)
    new = {rid: n for rid, n in counts.items() if rid not in before}
    assert set(new) == set(sent)  # nothing lost
    assert all(n == 1 for n in counts.values())  # nothing duplicated, before or after the restart
