"""Registry errors are transient unless the registry says "schema not found": Python reader and Java sink.

A loopback HTTP server plays a registry that answers every request with one status (401, 429, 503, or
404/40403). The request reader raises ``RegistryUnavailableError`` and dead-letters nothing for the
transient ones, and dead-letters the record once for 40403. A sink connector pointed at a 401 registry
keeps its task RUNNING, lands nothing and dead-letters nothing; pointed back at the real registry it lands
every record exactly once.
"""

from __future__ import annotations

import dataclasses
import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import fastavro
import httpx
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from qp_assets.features.golden import make_result
from qp_assets.settings import Settings
from qp_assets.stack.services import s3_client
from qp_assets.streaming.connect import connector_config, connector_status, wait_running
from qp_assets.streaming.kafka_config import client_config
from qp_assets.streaming.publisher import ensure_topic, publish_record, publish_request
from qp_assets.streaming.requests import RegistryUnavailableError, consume_range
from tests.test_streaming_services import dead_letters_of

pytestmark = pytest.mark.services
H2 = {"name": "H2", "symbols": ["H", "H"], "coords": [[0, 0, 0], [0, 0, 0.7414]]}


class ErrorRegistry:
    """Answers every request with ``status`` and a Confluent-style error body."""

    def __init__(self, status: int, error_code: int) -> None:
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                outer.requests += 1
                data = json.dumps({"error_code": error_code, "message": f"scripted {status}"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/apis/ccompat/v7"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def request_topic(stack: Settings) -> Iterator[str]:
    topic = f"qp_test_regerr_{uuid.uuid4().hex[:8]}"
    ensure_topic(stack, topic, 1)
    yield topic
    admin = AdminClient(client_config(stack.kafka_bootstrap_servers))
    for future in admin.delete_topics([topic], operation_timeout=10).values():
        future.result(15)


@pytest.mark.parametrize(("status", "code"), [(401, 40101), (429, 42901), (503, 50301), (404, 40403)])
def test_request_reader_retries_registry_errors_and_dead_letters_only_unknown_schemas(
    stack: Settings, request_topic: str, status: int, code: int
) -> None:
    rid = f"regerr-{uuid.uuid4().hex[:8]}"
    publish_request({"request_id": rid, "molecule": H2, "seed": 1}, stack, topic=request_topic)
    registry = ErrorRegistry(status, code)
    try:
        bad = dataclasses.replace(stack, schema_registry_url=registry.url)
        if code == 40403:  # the registry answered: this schema id does not exist -> a bad payload
            assert consume_range(request_topic, 0, 0, 1, bad, timeout_s=30) == []
            (dead,) = dead_letters_of(stack, request_topic)
            assert "40403" in dead.reason or "not found" in dead.reason
        else:
            with pytest.raises(RegistryUnavailableError, match=f"{registry.url}.*{request_topic}:0@0"):
                consume_range(request_topic, 0, 0, 1, bad, timeout_s=30)
            assert registry.requests == (3 if status in (429, 503) else 1)  # retried 2x where retriable
            assert dead_letters_of(stack, request_topic) == []
            assert [r["request_id"] for r in consume_range(request_topic, 0, 0, 1, stack)] == [rid]
    finally:
        registry.close()


@pytest.mark.slow
def test_sink_with_a_401_registry_keeps_running_dead_letters_nothing_and_lands_all_once_after(
    stack: Settings,
) -> None:
    tag = uuid.uuid4().hex[:8]
    name, prefix, topic, dlq = (f"qp-test-regerr-{tag}", f"tests/regerr-{tag}", f"qp_test_regerr_{tag}.cfg",
                                f"qp_test_regerr_dlq_{tag}")  # fmt: skip
    registry = ErrorRegistry(401, 40101)
    config = connector_config(stack)
    config.update({"topics.regex": rf"qp_test_regerr_{tag}\..*", "s3.prefix": prefix, "rotate.interval.ms": "1000",
                   "s3.retry.backoff.ms": "1000", "errors.deadletterqueue.topic.name": dlq,
                   "schema.registry.url": registry.url})  # fmt: skip
    base = f"{stack.kafka_connect_url}/connectors/{name}"
    s3 = s3_client(stack)

    def landed() -> list[str]:
        ids = []
        for obj in s3.list_objects_v2(Bucket=stack.bucket, Prefix=prefix + "/").get("Contents", []):
            body = s3.get_object(Bucket=stack.bucket, Key=obj["Key"])["Body"].read()
            ids += [r["run_id"] for r in fastavro.reader(io.BytesIO(body))]
        return ids

    try:
        httpx.put(f"{base}/config", json=config, timeout=90).raise_for_status()
        wait_running(stack, name, 90)
        sent = []
        for i in range(3):
            rec = make_result(i, datetime.now(UTC), run_id=f"regerr-{tag}-{i}")
            assert publish_record(rec, stack, topic=topic, key=rec["run_id"], schema_name="vqe_result", version=3,
                                  spool_on_failure=False, topic_partitions=1).published  # fmt: skip
            sent.append(rec["run_id"])
        deadline = time.monotonic() + 20
        while registry.requests < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert registry.requests >= 3  # the sink asked, was refused, and asked again on redelivery
        time.sleep(3)
        status = connector_status(stack, name)
        assert [t["state"] for t in status["tasks"]] == ["RUNNING"]  # transient: never FAILED
        assert landed() == []
        admin = AdminClient(client_config(stack.kafka_bootstrap_servers))
        if dlq in admin.list_topics(timeout=10).topics:
            consumer = Consumer(client_config(stack.kafka_bootstrap_servers, **{"group.id": f"t-{tag}", "auto.offset.reset": "earliest"}))  # fmt: skip
            consumer.subscribe([dlq])
            msgs, end = [], time.monotonic() + 5
            while time.monotonic() < end:
                msg = consumer.poll(0.5)
                if msg is not None and not msg.error():
                    msgs.append(msg)
            consumer.close()
            assert msgs == []  # nothing dead-lettered
        config["schema.registry.url"] = stack.schema_registry_url  # credentials fixed: the registry answers
        httpx.put(f"{base}/config", json=config, timeout=90).raise_for_status()
        deadline, got = time.monotonic() + 60, []
        while len(got) < 3 and time.monotonic() < deadline:
            got = landed()
            time.sleep(1)
        assert sorted(got) == sorted(sent)  # every record exactly once
    finally:
        registry.close()
        httpx.delete(base, timeout=90)
        admin = AdminClient(client_config(stack.kafka_bootstrap_servers))
        doomed = [t for t in (topic, dlq) if t in admin.list_topics(timeout=10).topics]
        for future in admin.delete_topics(doomed, operation_timeout=10).values() if doomed else []:
            future.result(15)
        reg = stack.schema_registry_url.rstrip("/")
        httpx.delete(f"{reg}/subjects/{topic}-value", timeout=10)
        httpx.delete(f"{reg}/subjects/{topic}-value", params={"permanent": "true"}, timeout=10)
        for obj in s3.list_objects_v2(Bucket=stack.bucket, Prefix=prefix + "/").get("Contents", []):
            s3.delete_object(Bucket=stack.bucket, Key=obj["Key"])
