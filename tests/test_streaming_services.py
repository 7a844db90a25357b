"""Streaming against the real stack: registry compatibility, publish/consume, spool + replay, DLQ.

Test topics do not match the Connect sink's ``vqe_result_v<N>.`` pattern, so nothing here lands in the
bucket that the feature tables are built from.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer

from qp_assets.features.golden import as_v4, make_result
from qp_assets.settings import Settings
from qp_assets.streaming.dlq import DlqEntry, read_entries
from qp_assets.streaming.kafka_config import client_config
from qp_assets.streaming.publisher import ensure_topic, publish_record, publish_request, replay_spool
from qp_assets.streaming.requests import RegistryUnavailableError, consume_range
from qp_assets.streaming.schemas import schema_dict, schema_text
from qp_assets.streaming.serde import SchemaIncompatibleError, deserialize, registry, value_deserializer
from tests.test_streaming_units import _as_version

pytestmark = pytest.mark.services
WHEN = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
H2 = {"name": "H2", "symbols": ["H", "H"], "coords": [[0, 0, 0], [0, 0, 0.7414]]}


def dead_letters_of(settings: Settings, topic: str) -> list[DlqEntry]:
    """Entries of the request dead-letter topic whose origin is ``topic``, read to the topic's end (no wait:
    ``consume_range`` flushed what it dead-lettered before it returned)."""
    return [e for e in read_entries(settings) if e.origin[0] == topic]


def test_schema_history_registers_under_backward_and_incompatible_change_is_rejected(stack: Settings) -> None:
    subject = f"qp-test-evolution-{uuid.uuid4().hex[:8]}-value"
    reg = registry(stack.schema_registry_url)
    ids = [reg.register(subject, schema_text("vqe_result", v)) for v in (1, 2, 3)]
    assert len(set(ids)) == 3
    assert reg.compatibility(subject) == "BACKWARD"
    broken = schema_dict("vqe_result", 3)
    broken["fields"].append({"name": "required_without_default", "type": "string"})
    with pytest.raises(SchemaIncompatibleError, match=subject):
        reg.register(subject, json.dumps(broken))


def test_records_of_every_version_decode_with_the_v3_reader(stack: Settings) -> None:
    tag = uuid.uuid4().hex[:8]
    published = {}
    for version in (1, 2, 3, 4):
        topic = f"qp_test_results_{tag}.v{version}"
        record = make_result(version, WHEN, run_id=f"evo-{tag}-{version}")
        record = as_v4(record) if version == 4 else _as_version(record, version)
        out = publish_record(record, stack, topic=topic, key=record["run_id"], schema_name="vqe_result",
                             version=version, spool_on_failure=False)  # fmt: skip
        assert out.published and out.offset == 0
        published[topic] = record
    reader = value_deserializer(stack.schema_registry_url, schema_text("vqe_result", 3))
    for topic, record in published.items():
        (msg,) = read_entries(stack, topic)  # every message of the topic, low to high watermark
        decoded = deserialize(reader, topic, msg.value)
        assert decoded["run_id"] == record["run_id"]
        assert [it["energy"] for it in decoded["iterations"]] == [it["energy"] for it in record["iterations"]]
        assert "cumulative_min_energy" in decoded["iterations"][0]
        assert (
            "scan_id" not in decoded and "kernel" not in decoded["backend"]
        )  # v4 fields: not in the v3 reader


def test_kafka_down_spools_and_replay_publishes_exactly_once(stack: Settings, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("QP_KAFKA_DELIVERY_TIMEOUT_MS", "3000")
    settings = dataclasses.replace(stack, runtime_dir=tmp_path)
    down = dataclasses.replace(settings, kafka_bootstrap_servers="127.0.0.1:1")
    topic = f"qp_test_spool_{uuid.uuid4().hex[:8]}"
    ensure_topic(settings, topic, 1)
    record = make_result(11, WHEN, run_id=f"spool-{uuid.uuid4().hex[:8]}")
    outcome = publish_record(
        record, down, topic=topic, key=record["run_id"], schema_name="vqe_result", version=3
    )
    assert not outcome.published and outcome.spool_path and outcome.spool_path.exists()
    assert replay_spool(down) == (0, 1)  # still down: kept
    assert replay_spool(settings) == (1, 0)
    assert not outcome.spool_path.exists()
    assert replay_spool(settings) == (0, 0)  # nothing left: replaying again publishes nothing
    msgs = read_entries(settings, topic)  # to the topic's end: a duplicate would be there
    assert [m.key.decode() for m in msgs] == [record["run_id"]]


def test_requests_read_by_exact_offset_range_and_garbage_goes_to_dlq(stack: Settings) -> None:
    topic = f"qp_test_requests_{uuid.uuid4().hex[:8]}"
    ensure_topic(stack, topic, 1)
    rid = f"range-{uuid.uuid4().hex[:8]}"
    first = publish_request({"request_id": rid + "-a", "molecule": H2, "seed": 1}, stack, topic=topic)
    producer = Producer(client_config(stack.kafka_bootstrap_servers))
    producer.produce(topic, key=b"garbage", value=b"\x00\x00\x00\x00\x01not-avro")
    producer.flush(10)
    second = publish_request({"request_id": rid + "-b", "molecule": H2, "seed": 2}, stack, topic=topic)
    third = publish_request({"request_id": rid + "-c", "molecule": H2, "seed": 3}, stack, topic=topic)
    assert (first.offset, second.offset, third.offset) == (0, 2, 3)
    got = consume_range(topic, 0, 0, 3, stack)  # exactly [0, 3): the third request is not part of it
    assert [r["request_id"] for r in got] == [rid + "-a", rid + "-b"]
    assert got[0]["seed"] == 1 and got[0]["optimizer_options"] == {} and got[0]["molecule"]["name"] == "H2"
    assert [r["request_id"] for r in consume_range(topic, 0, 3, 4, stack)] == [rid + "-c"]
    ours = dead_letters_of(stack, topic)
    assert len(ours) == 1  # the garbage message, dead-lettered once by the read covering offset 1
    assert ours[0].value == b"\x00\x00\x00\x00\x01not-avro" and ours[0].headers["qp.source.offset"] == "1"
    assert "qp.error" in ours[0].headers


def test_registry_outage_while_reading_requests_raises_and_dead_letters_nothing(stack: Settings) -> None:
    topic = f"qp_test_requests_{uuid.uuid4().hex[:8]}"
    ensure_topic(stack, topic, 1)
    rid = f"outage-{uuid.uuid4().hex[:8]}"
    publish_request({"request_id": rid, "molecule": H2, "seed": 1}, stack, topic=topic)
    # a fresh registry URL (no cached schema) on a port where nothing listens: the registry is "down"
    down = dataclasses.replace(stack, schema_registry_url="http://127.0.0.1:1/apis/ccompat/v7")
    with pytest.raises(RegistryUnavailableError, match=f"{topic}:0@0"):
        consume_range(topic, 0, 0, 1, down, timeout_s=30)
    assert dead_letters_of(stack, topic) == []
    # the registry back: the same range reads the request (nothing was lost)
    assert [r["request_id"] for r in consume_range(topic, 0, 0, 1, stack)] == [rid]
