"""The sink resumes by itself after a broker crash (kill -9), exactly once, within about a minute.

Destructive for the stack it runs on (it SIGKILLs *our* Kafka process group, found through the stack's
PID file, then calls ``ensure_up()`` exactly like ``qp stack up``). Before the fix, ``qp stack up`` failed
with "connector qp-s3-avro-sink not RUNNING within 60 s" (connector UNASSIGNED until Connect's
``scheduled.rebalance.max.delay.ms``, 300 s) and nothing landed for 5 minutes.
"""

from __future__ import annotations

import io
import os
import signal
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import fastavro
import httpx
import pytest
from confluent_kafka.admin import AdminClient

from qp_assets.features.golden import make_result
from qp_assets.settings import Settings
from qp_assets.stack import ensure_up
from qp_assets.stack.launcher import our_process_groups
from qp_assets.stack.process import group_members, port_open
from qp_assets.stack.services import s3_client
from qp_assets.streaming.connect import SINK_CONNECTOR, connector_config, connector_status, wait_running
from qp_assets.streaming.kafka_config import client_config
from qp_assets.streaming.publisher import publish_record

pytestmark = [pytest.mark.services, pytest.mark.slow]
WHEN = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
RECOVERY_TARGET_S = 60.0


def _landed(settings: Settings, prefix: str) -> list[str]:
    s3, run_ids = s3_client(settings), []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=settings.bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=settings.bucket, Key=obj["Key"])["Body"].read()
            run_ids += [r["run_id"] for r in fastavro.reader(io.BytesIO(body))]
    return run_ids


def _publish(settings: Settings, topic: str, tag: str, start: int, count: int) -> list[str]:
    sent = []
    for i in range(start, start + count):
        rec = make_result(i, WHEN, run_id=f"kill-{tag}-{i:03d}")
        out = publish_record(rec, settings, topic=topic, key=rec["run_id"], schema_name="vqe_result", version=3,
                             spool_on_failure=False, topic_partitions=1)  # fmt: skip
        assert out.published
        sent.append(rec["run_id"])
    return sent


def _wait_landed(settings: Settings, prefix: str, count: int, timeout_s: float) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        got = _landed(settings, prefix)
        if len(got) >= count or time.monotonic() > deadline:
            return got
        time.sleep(1)


def test_broker_kill_9_then_stack_up_lands_everything_exactly_once_within_a_minute(stack: Settings) -> None:
    tag = uuid.uuid4().hex[:8]
    name, prefix, topic = f"qp-test-kill-{tag}", f"tests/kill-{tag}", f"qp_test_kill_{tag}.cfg"
    config = connector_config(stack)
    config.update({"topics.regex": rf"qp_test_kill_{tag}\..*", "s3.prefix": prefix, "flush.size": "5",
                   "errors.deadletterqueue.topic.name": f"qp_test_kill_dlq_{tag}"})  # fmt: skip
    base = stack.kafka_connect_url
    try:
        httpx.put(f"{base}/connectors/{name}/config", json=config, timeout=90).raise_for_status()
        wait_running(stack, name, 90)
        before = _publish(stack, topic, tag, 0, 10)
        assert Counter(_wait_landed(stack, prefix, 10, 60)) == Counter(before)

        kafka_pgid = our_process_groups(stack)["kafka"]
        os.killpg(kafka_pgid, signal.SIGKILL)
        killed = time.monotonic()
        while group_members(kafka_pgid):
            time.sleep(0.1)
        # The launcher calls a port that still accepts "in use by another process": a SIGKILLed JVM's listener
        # can outlive its process entry for a moment. Wait for it as an operator would (launcher fix pending).
        port = int(stack.kafka_bootstrap_servers.rsplit(":", 1)[1])
        while port_open("127.0.0.1", port) and time.monotonic() - killed < 30:
            time.sleep(0.2)
        print(f"kafka port released {time.monotonic() - killed:.1f} s after the kill")
        ensure_up(
            settings=stack
        )  # = qp stack up: restarts Kafka, PUTs and waits for the production connector
        up_s = time.monotonic() - killed
        after = _publish(stack, topic, tag, 10, 10)
        got = _wait_landed(stack, prefix, 20, RECOVERY_TARGET_S + 60)
        landed_s = time.monotonic() - killed
        print(f"kill -9 -> stack up {up_s:.1f} s; all 20 results landed {landed_s:.1f} s after the kill")
        assert Counter(got) == Counter(before + after)  # nothing lost, nothing duplicated
        assert up_s < RECOVERY_TARGET_S + 30
        assert landed_s < up_s + RECOVERY_TARGET_S
        for connector in (SINK_CONNECTOR, name):
            status = connector_status(stack, connector)
            assert status["connector"]["state"] == "RUNNING"
            assert [t["state"] for t in status["tasks"]] == ["RUNNING"]
    finally:
        httpx.delete(f"{base}/connectors/{name}", timeout=90)
        admin = AdminClient(client_config(stack.kafka_bootstrap_servers))
        doomed = [t for t in (topic, f"qp_test_kill_dlq_{tag}") if t in admin.list_topics(timeout=10).topics]
        for future in admin.delete_topics(doomed, operation_timeout=10).values() if doomed else []:
            future.result(15)
        registry = stack.schema_registry_url.rstrip("/")
        httpx.delete(f"{registry}/subjects/{topic}-value", timeout=10)
        httpx.delete(f"{registry}/subjects/{topic}-value", params={"permanent": "true"}, timeout=10)
        s3 = s3_client(stack)
        for obj in s3.list_objects_v2(Bucket=stack.bucket, Prefix=prefix + "/").get("Contents", []):
            s3.delete_object(Bucket=stack.bucket, Key=obj["Key"])
