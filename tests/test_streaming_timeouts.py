"""Every client of a dependency is bounded: a server that accepts connections and never answers.

``stalled`` is a real loopback TCP server that accepts every connection and never sends a byte (the
failure that hung ``load_request_batch`` forever: confluent-kafka's registry client had no timeout).
Each test points one client at it and measures how long the call takes to give up, and checks that the
error names the service. The registry tests also check the follow-up path: the result is spooled (0600)
and replayed exactly once when the registry is back; a request read is retried, never dead-lettered.
"""

from __future__ import annotations

import dataclasses
import socket
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from qp_assets.features.golden import make_result
from qp_assets.settings import Settings
from qp_assets.streaming.kafka_config import client_config
from qp_assets.streaming.publisher import ensure_topic, publish_record, publish_request, replay_spool
from qp_assets.streaming.requests import RegistryUnavailableError, consume_range
from tests.test_streaming_services import dead_letters_of

WHEN = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)
H2 = {"name": "H2", "symbols": ["H", "H"], "coords": [[0, 0, 0], [0, 0, 0.7414]]}


class StalledServer:
    """Accepts TCP connections on 127.0.0.1 and never answers (keeps them open until closed)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(conn)  # never read, never written

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def stalled() -> Iterator[StalledServer]:
    server = StalledServer()
    yield server
    server.close()


def _timed(fn, *args, **kwargs):
    start = time.monotonic()
    try:
        return fn(*args, **kwargs), None, time.monotonic() - start
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return None, exc, time.monotonic() - start


def _delete_topics(settings: Settings, *topics: str) -> None:
    admin = AdminClient(client_config(settings.kafka_bootstrap_servers))
    for future in admin.delete_topics(list(topics), operation_timeout=10, request_timeout=10).values():
        future.result(15)


def _delete_subject(settings: Settings, subject: str) -> None:
    base = settings.schema_registry_url.rstrip("/")
    httpx.delete(f"{base}/subjects/{subject}", timeout=10)
    httpx.delete(f"{base}/subjects/{subject}", params={"permanent": "true"}, timeout=10)


@pytest.mark.services
def test_publish_with_a_stalled_registry_is_released_naming_it_and_spooled_0600(
    stack: Settings, stalled: StalledServer, tmp_path
) -> None:
    settings = dataclasses.replace(stack, runtime_dir=tmp_path)
    stalled_registry = f"http://127.0.0.1:{stalled.port}/apis/ccompat/v7"
    down = dataclasses.replace(settings, schema_registry_url=stalled_registry)
    topic = f"qp_test_stall_{uuid.uuid4().hex[:8]}"
    record = make_result(5, WHEN, run_id=f"stall-{uuid.uuid4().hex[:8]}")
    try:
        outcome, exc, elapsed = _timed(
            publish_record, record, down, topic=topic, key=record["run_id"], schema_name="vqe_result",
            version=3, topic_partitions=1,
        )  # fmt: skip
        assert exc is None, exc  # never raises: spooled
        print(f"publish with a stalled registry released after {elapsed:.1f} s")
        assert elapsed < 90
        assert stalled.accepted, "the client never connected to the stalled registry"
        assert not outcome.published
        assert f"schema registry at {stalled_registry}" in outcome.error and "Timeout" in outcome.error
        path = outcome.spool_path
        assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        # the registry back: the spooled result is published once and the spool is empty
        assert replay_spool(settings) == (1, 0)
        assert not path.exists() and replay_spool(settings) == (0, 0)
        consumer = Consumer(client_config(stack.kafka_bootstrap_servers, **{"group.id": f"t-{topic}", "auto.offset.reset": "earliest"}))  # fmt: skip
        consumer.subscribe([topic])
        keys, deadline = [], time.monotonic() + 20
        while time.monotonic() < deadline and len(keys) < 2:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                keys.append(msg.key().decode())
            elif keys and msg is None:
                break
        consumer.close()
        assert keys == [record["run_id"]]
    finally:
        _delete_topics(stack, topic)
        _delete_subject(stack, f"{topic}-value")


@pytest.mark.services
def test_reading_requests_with_a_stalled_registry_raises_naming_it_and_dead_letters_nothing(
    stack: Settings, stalled: StalledServer
) -> None:
    topic = f"qp_test_stall_req_{uuid.uuid4().hex[:8]}"
    ensure_topic(stack, topic, 1)
    try:
        rid = f"stall-{uuid.uuid4().hex[:8]}"
        publish_request({"request_id": rid, "molecule": H2, "seed": 1}, stack, topic=topic)
        stalled_registry = f"http://127.0.0.1:{stalled.port}/apis/ccompat/v7"
        down = dataclasses.replace(stack, schema_registry_url=stalled_registry)
        _, exc, elapsed = _timed(consume_range, topic, 0, 0, 1, down, timeout_s=60)
        print(f"request read with a stalled registry released after {elapsed:.1f} s")
        assert isinstance(exc, RegistryUnavailableError), exc
        assert elapsed < 30 and stalled_registry in str(exc) and f"{topic}:0@0" in str(exc)
        assert dead_letters_of(stack, topic) == []
        assert [r["request_id"] for r in consume_range(topic, 0, 0, 1, stack)] == [rid]  # retry works
    finally:
        _delete_topics(stack, topic)


def test_connect_rest_stalled_raises_connect_error_naming_it(stalled: StalledServer, monkeypatch) -> None:
    from qp_assets.streaming import connect

    monkeypatch.setattr(connect, "REST_TIMEOUT_S", 3.0)
    settings = dataclasses.replace(Settings.from_env(), kafka_connect_url=f"http://127.0.0.1:{stalled.port}")
    _, exc, elapsed = _timed(connect.connector_status, settings)  # its own 10 s bound
    assert isinstance(
        exc, connect.ConnectError
    ) and f"Kafka Connect REST at http://127.0.0.1:{stalled.port}" in str(exc)
    assert 9 < elapsed < 15
    _, exc, elapsed = _timed(connect.ensure_connectors, settings)  # PUT: REST_TIMEOUT_S
    assert isinstance(exc, connect.ConnectError) and "PUT /connectors/" in str(exc) and elapsed < 6


def test_s3_clients_stalled_fail_within_their_bound_naming_the_endpoint(stalled: StalledServer) -> None:
    from qp_assets.resources.core import BoundedS3Resource
    from qp_assets.stack.services import s3_client

    endpoint = f"http://127.0.0.1:{stalled.port}"
    resource = BoundedS3Resource(endpoint_url=endpoint, aws_access_key_id="k", aws_secret_access_key="s",
                                 region_name="us-east-1", max_attempts=2, read_timeout_s=2)  # fmt: skip
    _, exc, elapsed = _timed(resource.get_client().list_objects_v2, Bucket="b")
    assert exc is not None and endpoint in str(exc) and "timeout" in str(exc).lower()
    # measured: ~2.4 s per attempt and read timeout of 2 s (botocore opens a second connection once)
    assert elapsed < 2 * (2 * 2 + 1)
    settings = dataclasses.replace(Settings.from_env(), s3_endpoint_url=endpoint)
    _, exc, elapsed = _timed(s3_client(settings).list_buckets)  # the stack's probe client: 10 s, 1 attempt
    assert exc is not None and endpoint in str(exc) and elapsed < 2 * 10 + 2


def test_pushgateway_stalled_push_returns_false_within_its_timeout(stalled: StalledServer) -> None:
    from qp_assets.monitoring.pipeline_metrics import push_pipeline_metrics

    ok, exc, elapsed = _timed(push_pipeline_metrics, f"127.0.0.1:{stalled.port}", kafka_lag=0, timeout_s=2.0)
    assert exc is None and ok is False and elapsed < 3


def test_prometheus_stalled_query_times_out(stalled: StalledServer) -> None:
    from qp_assets.monitoring.dashboards import prometheus_metric_names

    _, exc, elapsed = _timed(prometheus_metric_names, f"http://127.0.0.1:{stalled.port}", timeout_s=2.0)
    assert isinstance(exc, TimeoutError | OSError) and elapsed < 3


def test_smtp_stalled_send_times_out(stalled: StalledServer) -> None:
    from qp_assets.resources.core import SmtpResource

    smtp = SmtpResource(host="127.0.0.1", port=stalled.port, timeout_s=2.0)
    _, exc, elapsed = _timed(smtp.send, "subject", "body")
    assert isinstance(exc, TimeoutError) and f"SMTP server 127.0.0.1:{stalled.port}" in str(exc)
    assert elapsed < 3


def test_kafka_admin_stalled_raises_naming_the_brokers(stalled: StalledServer) -> None:
    settings = dataclasses.replace(Settings.from_env(), kafka_bootstrap_servers=f"127.0.0.1:{stalled.port}")
    _, exc, elapsed = _timed(ensure_topic, settings, "qp_never_created", 1)
    assert exc is not None and f"Kafka at 127.0.0.1:{stalled.port}" in str(exc)
    assert elapsed < 15


def test_registry_client_is_built_in_one_place_with_a_timeout() -> None:
    """No module builds a SchemaRegistryClient bare: only the factory in qp_assets.streaming.serde."""
    from pathlib import Path

    from qp_assets.resources.core import SchemaRegistryResource
    from qp_assets.settings import PROJECT_ROOT
    from qp_assets.streaming.serde import registry, registry_client

    offenders = []
    for root in ("qp_assets", "benchmarks"):
        for path in sorted((PROJECT_ROOT / root).rglob("*.py")):
            text = path.read_text()
            if "SchemaRegistryClient(" in text and path != PROJECT_ROOT / "qp_assets/streaming/serde.py":
                offenders.append(str(Path(path).relative_to(PROJECT_ROOT)))
    assert offenders == []
    assert registry_client("http://127.0.0.1:1")._rest_client.timeout == 10.0
    assert registry("http://127.0.0.1:2").client._rest_client.timeout == 10.0
    assert (
        SchemaRegistryResource(url="http://127.0.0.1:3", timeout_s=4.0).client()._rest_client.timeout == 4.0
    )


class RecordingRegistry:
    """A minimal Confluent-API registry on loopback: serves one schema id, records every request path."""

    def __init__(self, schema_id: int, schema: str, status: int = 200, body: dict | None = None) -> None:
        import json
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                outer.paths.append(self.path)
                if status != 200:
                    code, payload = status, body or {"error_code": status * 100 + 1, "message": "no"}
                elif self.path.split("?")[0] == f"/schemas/ids/{schema_id}":
                    code, payload = 200, {"schema": schema}
                else:
                    code, payload = 404, {"error_code": 40403, "message": "Schema not found"}
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _framed(schema_id: int, record: dict, schema: str) -> bytes:
    import io
    import json
    import struct

    import fastavro

    buf = io.BytesIO()
    buf.write(b"\x00" + struct.pack(">I", schema_id))
    fastavro.schemaless_writer(buf, fastavro.parse_schema(json.loads(schema)), record)
    return buf.getvalue()


def test_deserializer_asks_only_for_the_schema_by_id_with_the_topic_subject() -> None:
    from qp_assets.streaming.publisher import request_record
    from qp_assets.streaming.schemas import schema_text
    from qp_assets.streaming.serde import deserialize, value_deserializer

    schema = schema_text("vqe_request")
    record = request_record({"request_id": "r-assoc", "molecule": H2})
    reg = RecordingRegistry(41, schema)
    try:
        decoded = deserialize(value_deserializer(reg.url), "vqe.requests", _framed(41, record, schema))
        assert decoded["request_id"] == "r-assoc"
        # no GET /associations/..., no latest-version lookups: one request, the writer schema by id
        assert reg.paths == ["/schemas/ids/41?subject=vqe.requests-value"]
        deserialize(value_deserializer(reg.url), "vqe.requests", _framed(41, record, schema))
        assert len(reg.paths) == 1  # cached per process
    finally:
        reg.close()


@pytest.mark.parametrize(
    ("status", "body", "transient"),
    [
        (401, {"error_code": 40101, "message": "unauthorized"}, True),
        (403, {"error_code": 40301, "message": "forbidden"}, True),
        (429, {"error_code": 42901, "message": "slow down"}, True),
        (500, {"error_code": 50001, "message": "boom"}, True),
        (503, {"error_code": 50301, "message": "unavailable"}, True),
        (404, {"message": "HTTP 404 Not Found"}, True),  # wrong URL / proxy: not the registry's answer
        (404, {"error_code": 40403, "message": "Schema 41 not found."}, False),  # a bad payload
    ],
)
def test_registry_errors_are_transient_except_schema_not_found(
    status: int, body: dict, transient: bool
) -> None:
    from qp_assets.streaming.schemas import schema_text
    from qp_assets.streaming.serde import is_registry_outage, value_deserializer

    schema = schema_text("vqe_request")
    reg = RecordingRegistry(41, schema, status=status, body=body)
    try:
        deserializer = value_deserializer(reg.url)
        _, exc, elapsed = _timed(deserializer, "vqe.requests", b"\x00\x00\x00\x00\x29payload")
        assert exc is not None and is_registry_outage(exc) is transient
        assert isinstance(exc, RegistryUnavailableError) is transient
        if transient:
            assert reg.url in str(exc)
        assert elapsed < 10  # 429/5xx: 2 retries with <= 1 s backoff
    finally:
        reg.close()
