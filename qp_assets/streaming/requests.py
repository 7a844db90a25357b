"""Reading VQE requests from ``vqe.requests`` by exact offset range.

The Kafka sensor plans offset ranges from watermarks; a run then reads exactly ``[start, end)`` of one
partition with ``assign`` + explicit offsets (no consumer-group commits), so correctness never depends on
a group's committed position. A message that cannot be decoded goes to ``vqe.requests.dlq`` with the
reason in its headers and is never silently dropped. A registry that cannot give an answer is not a reason
to dead-letter: no answer within the timeout, 401/403/408/429 and 5xx raise :class:`RegistryUnavailableError`
so the run retries the same range. Only bad payloads are dead-lettered: wrong magic byte, undecodable Avro,
or a schema id the registry answered is unknown (404 / 40403).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer

from qp_assets.redact import redact
from qp_assets.settings import Settings
from qp_assets.streaming.kafka_config import client_config
from qp_assets.streaming.partition_read import read_partition
from qp_assets.streaming.serde import (
    RegistryUnavailableError,
    deserialize,
    is_registry_outage,
    value_deserializer,
)
from qp_assets.streaming.topics import REQUESTS_DLQ_TOPIC

log = logging.getLogger(__name__)


def normalize_request(record: dict[str, Any]) -> dict[str, Any]:
    """Avro request record -> runner dict: ``optimizer_options`` parsed to a dict, timestamps as ms."""
    out = dict(record)
    opts = out.get("optimizer_options")
    if isinstance(opts, str):
        out["optimizer_options"] = json.loads(opts or "{}")
    submitted = out.get("submitted_at")
    if hasattr(submitted, "timestamp"):
        out["submitted_at"] = int(submitted.timestamp() * 1000)
    return out


#: Key of the request's origin in the dicts :func:`consume_range` returns (the runner dead-letters with it).
SOURCE_KEY = "_qp_source"


#: Largest request value copied whole into the dead-letter topic (bytes); larger ones are truncated.
DLQ_MAX_VALUE_BYTES = 1024 * 1024


def send_to_dead_letter(
    settings: Settings, source_topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
    error: str, dlq_topic: str = REQUESTS_DLQ_TOPIC, *, stage: str = "decode", request_id: str | None = None,
    source_timestamp_ms: int | None = None,
) -> bool:  # fmt: skip
    """Copy the original bytes to the dead-letter topic with the reason, stage (decode | admission | run)
    and origin (topic, partition, offset) in headers; True if sent.

    Exactly once per origin: a message whose origin already has an entry (its range re-read after a retry,
    a cursor reset or by a new Dagster instance) is not sent again (False). ``source_timestamp_ms`` (the
    origin message's timestamp) bounds that look-up to the recent part of the dead-letter topic.
    Requests without an origin (partition or offset -1, e.g. ``qp vqe run``) are always sent.
    """
    from qp_assets.streaming.dlq import dead_lettered_origins
    from qp_assets.streaming.publisher import _producer, discard_producer, ensure_topic

    ensure_topic(settings, dlq_topic, 1)
    origin = (source_topic, partition, offset)
    if dead_lettered_origins(settings, {origin}, dlq_topic, since_ms=source_timestamp_ms):
        log.warning("%s:%d@%d already has an entry in %s: not sent again", *origin, dlq_topic)
        return False
    producer = _producer(settings)
    headers = [
        ("qp.error", error.encode()[:4000]),
        ("qp.stage", stage.encode()),
        ("qp.source.topic", source_topic.encode()),
        ("qp.source.partition", str(partition).encode()),
        ("qp.source.offset", str(offset).encode()),
    ]
    if request_id:
        headers.append(("qp.request_id", request_id.encode()[:400]))
    if value is not None and len(value) > DLQ_MAX_VALUE_BYTES:
        # a request too large to copy whole (a 9 MB payload): its head, size and digest; the original stays
        # in the origin topic until retention, and `qp dlq replay` refuses a truncated entry
        headers += [
            ("qp.value.truncated", b"1"),
            ("qp.value.bytes", str(len(value)).encode()),
            ("qp.value.sha256", hashlib.sha256(value).hexdigest().encode()),
        ]
        value = value[:DLQ_MAX_VALUE_BYTES]
    producer.produce(dlq_topic, key=key, value=value, headers=headers)
    if producer.flush(15) != 0:
        discard_producer(settings, producer)
        raise RuntimeError(f"could not deliver {source_topic}:{partition}@{offset} to {dlq_topic}")
    log.error("sent %s:%d@%d to %s: %s", source_topic, partition, offset, dlq_topic, error)
    return True


@dataclass(frozen=True)
class RawMessage:
    """One message as stored in Kafka (nothing decoded)."""

    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


def read_range_raw(
    topic: str, partition: int, start: int, end: int, settings: Settings | None = None, *, timeout_s: float = 60.0
) -> list[RawMessage]:  # fmt: skip
    """The messages at offsets ``[start, end)`` of ``topic``/``partition``, undecoded, in offset order
    (``assign`` + explicit offset, no group commits; needs no registry). Raises TimeoutError if the range
    cannot be read within ``timeout_s`` (e.g. the offsets were deleted by retention) and RuntimeError on a
    Kafka error."""
    settings = settings or Settings.from_env()
    if end <= start:
        return []
    consumer = Consumer(
        client_config(
            settings.kafka_bootstrap_servers,
            **{
                "group.id": f"qp-range-reader-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
            },
        )
    )
    out: list[RawMessage] = []
    try:
        deadline = time.monotonic() + timeout_s
        try:
            for msg in read_partition(consumer, topic, partition, start, end, deadline):
                out.append(RawMessage(msg.offset(), msg.key(), msg.value(), msg.timestamp()[1]))
        except TimeoutError as exc:
            raise TimeoutError(f"{exc} in {timeout_s} s") from None
    finally:
        consumer.close()
    return out


def consume_range(
    topic: str, partition: int, start: int, end: int, settings: Settings | None = None, *, timeout_s: float = 60.0
) -> list[dict[str, Any]]:  # fmt: skip
    """Decoded requests at offsets ``[start, end)`` of ``topic``/``partition``, in offset order.

    Undecodable messages are dead-lettered and skipped. Raises RegistryUnavailableError when the registry
    cannot be reached (nothing is dead-lettered then; the caller retries the range), and TimeoutError if
    the range cannot be read within ``timeout_s`` (e.g. the offsets were deleted by retention).
    """
    settings = settings or Settings.from_env()
    deserializer = value_deserializer(settings.schema_registry_url)
    out: list[dict[str, Any]] = []
    dead: list[tuple[int, bytes | None, bytes | None, str, int]] = []  # sent once the whole range was read
    for msg in read_range_raw(topic, partition, start, end, settings, timeout_s=timeout_s):
        try:
            if msg.value is None:
                raise ValueError("tombstone: the message has no value")
            record = deserialize(deserializer, topic, msg.value)
            if not isinstance(record, dict):
                raise ValueError(f"request payload decoded to {type(record).__name__}, not a record")
            request = normalize_request(record)
            request[SOURCE_KEY] = source_of(
                topic, partition, msg.offset, msg.key, msg.value, msg.timestamp_ms
            )
            out.append(request)
        except Exception as exc:  # undecodable: dead-letter, never drop
            if is_registry_outage(exc):
                raise RegistryUnavailableError(
                    redact(
                        f"schema registry {settings.schema_registry_url} unavailable while decoding "
                        f"{topic}:{partition}@{msg.offset} ({exc!r}); nothing was consumed or dead-lettered"
                    )
                ) from exc
            dead.append((msg.offset, msg.key, msg.value, repr(exc), msg.timestamp_ms))
    # only after the whole range was read, and once per origin: a re-read range dead-letters nothing twice
    for offset, key, value, error, timestamp_ms in dead:
        send_to_dead_letter(
            settings, topic, partition, offset, key, value, error, source_timestamp_ms=timestamp_ms
        )
    return out


def source_of(
    topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, timestamp_ms: int = -1
) -> dict[str, Any]:
    """A request's origin, its timestamp (epoch ms) and original bytes (base64), carried to the runner for
    dead-lettering."""
    return {
        "topic": topic, "partition": partition, "offset": offset, "timestamp_ms": timestamp_ms,
        "key": None if key is None else base64.b64encode(key).decode(),
        "value": None if value is None else base64.b64encode(value).decode(),
    }  # fmt: skip


def dead_letter_request(
    settings: Settings, request: dict[str, Any], error: str, *, stage: str, default_topic: str
) -> None:
    """Dead-letter a decoded request that cannot run: its original bytes and true origin when it came
    through :func:`consume_range`, else its JSON with origin -1."""
    source = request.get(SOURCE_KEY) or {}
    rid = str(request.get("request_id") or "") or None
    if source:
        key = None if source.get("key") is None else base64.b64decode(source["key"])
        value = None if source.get("value") is None else base64.b64decode(source["value"])
    else:
        key = rid.encode() if rid else None
        value = json.dumps(request, default=str).encode()
    send_to_dead_letter(
        settings, source.get("topic", default_topic), int(source.get("partition", -1)),
        int(source.get("offset", -1)), key, value, error, stage=stage, request_id=rid,
        source_timestamp_ms=source.get("timestamp_ms"),
    )  # fmt: skip
