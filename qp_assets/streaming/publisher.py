"""Publishing VQE results and requests to Kafka.

A result counts as published only when Kafka acknowledged it (idempotent producer, ``acks=all``,
zstd compression, bounded delivery timeout). If Kafka or the registry cannot be reached, the result is
spooled to ``<runtime dir>/spool/<run_id>.json`` (directory 0700, files 0600: results are private) and
``qp results replay`` republishes it later; the feature tables are keyed by ``run_id``, so a replay can never
duplicate rows. Every step is bounded: registry calls by ``QP_REGISTRY_TIMEOUT_S`` (10 s), topic creation
by ``ADMIN_TIMEOUT_S``, the acknowledgement by ``QP_KAFKA_DELIVERY_TIMEOUT_MS`` (30 s).

A result topic is created (idempotently, once per process) before its first publish, so it exists
with the intended partition count even where brokers do not auto-create topics; the Connect sink's regex
subscription discovers it within its ``metadata.max.age.ms`` (see docs/streaming.md).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from qp_assets.settings import Settings, load_env
from qp_assets.streaming.kafka_config import AuthFailureWatch, client_config
from qp_assets.streaming.schemas import REQUEST_SCHEMA, RESULT_SCHEMA, latest_version
from qp_assets.streaming.serde import SchemaIncompatibleError, ValueSerializer
from qp_assets.streaming.topics import REQUESTS_TOPIC, RESULT_TOPIC_PREFIX, result_topic

log = logging.getLogger(__name__)

REQUEST_PARTITIONS = 3
RESULT_PARTITIONS = 1  # one sink task; per-configuration topics are low-volume
ADMIN_TIMEOUT_S = 10.0  # each AdminClient request (metadata, create_topics)


def delivery_timeout_ms() -> int:
    """Upper bound for one publish (``QP_KAFKA_DELIVERY_TIMEOUT_MS``, default 30 s)."""
    return load_env().kafka_delivery_timeout_ms


class PublishError(RuntimeError):
    """Kafka did not acknowledge a record within the delivery timeout."""


class SpoolWriteError(PublishError):
    """A record could be neither published nor spooled (disk full, file size limit, read-only ``QP_HOME``).

    Never swallowed: the caller's run fails, so nothing is reported as done that is not stored anywhere
    (the request sensor's range retry runs the request again once the disk has room)."""


class RecordTooLargeError(PublishError):
    """Kafka refused the record for its size (``message.max.bytes`` of the producer, broker or topic).

    Not an outage: a replay would be refused again, so such a record is never spooled. The runner
    dead-letters the request with this reason (stage ``publish``)."""


@dataclass(frozen=True)
class PublishOutcome:
    """What happened to one record: published (topic/partition/offset) or spooled (path)."""

    published: bool
    topic: str
    key: str
    partition: int | None = None
    offset: int | None = None
    spool_path: Path | None = None
    error: str | None = None


def producer_config(settings: Settings) -> dict[str, Any]:
    timeout = delivery_timeout_ms()
    return client_config(
        settings.kafka_bootstrap_servers,
        **{
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "zstd",
            "linger.ms": 5,
            "retries": 10,
            "retry.backoff.ms": 200,
            "delivery.timeout.ms": timeout,
            "message.max.bytes": 8 * 1024 * 1024,
        },
    )


_PRODUCERS: dict[str, Producer] = {}  # keyed by the full client configuration
_SERIALIZERS: dict[tuple[str, str, str, int], ValueSerializer] = {}
_PRODUCER_LOCK = threading.Lock()  # a publish and prepare_publish's thread build one producer, not two
#: Seconds prepare_publish waits for the producer's first metadata answer.
CONNECT_TIMEOUT_S = 10.0


def _producer(settings: Settings) -> Producer:
    """One producer per distinct client configuration (endpoint, security, timeouts) per process."""
    config = producer_config(settings)
    key = repr(sorted(config.items()))
    with _PRODUCER_LOCK:  # creating one does no network I/O: never held while waiting for Kafka
        if key not in _PRODUCERS:
            _PRODUCERS[key] = Producer(config)
        return _PRODUCERS[key]


def discard_producer(settings: Settings, producer: Producer) -> None:
    """Forget ``producer`` (this process's cached producer for ``settings``) after a delivery failed: the next
    publish builds a new one, with a new connection and a new idempotent-producer id.

    An idempotent librdkafka producer whose messages timed out must bump its epoch before it sends again,
    and one that cannot (its broker paused, fenced or restarted meanwhile) may time out every later message
    too; a long-lived process (the daemon's code server, a test session, a benchmark) would then fail each
    publish until it restarts. Messages still queued in the old producer are purged (their delivery reports
    say so); one already sent may still be written by the broker: the feature tables keep one row per
    ``request_id`` whatever a retry publishes again.
    """
    with _PRODUCER_LOCK:
        for key, cached in list(_PRODUCERS.items()):
            if cached is producer:
                del _PRODUCERS[key]
    try:
        producer.purge(in_queue=True, in_flight=True, blocking=False)
        producer.poll(0)
    except Exception as exc:  # a producer in a fatal state may refuse even this; it is dropped all the same
        log.debug("purging a discarded producer for %s: %s", settings.kafka_bootstrap_servers, exc)


def close_producers(timeout_s: float = 5.0) -> int:
    """Flush (at most ``timeout_s`` seconds each) and drop this process's cached producers, whose librdkafka
    threads then end; returns how many messages were still undelivered. For a process that stops the
    brokers it published to (a benchmark's own stack): else each producer logs a refused connection every
    second until the process exits."""
    with _PRODUCER_LOCK:
        producers = list(_PRODUCERS.values())
        _PRODUCERS.clear()
    return sum(producer.flush(timeout_s) for producer in producers)


def serializer(settings: Settings, topic: str, schema_name: str, version: int) -> ValueSerializer:
    """The cached serializer of (registry, topic, schema, version). Built without a lock: building one asks
    the registry, and a publish must not wait behind prepare_publish's call to a stalled registry (at worst
    both ask once)."""
    key = (settings.schema_registry_url, topic, schema_name, version)
    if key not in _SERIALIZERS:
        _SERIALIZERS[key] = ValueSerializer(settings.schema_registry_url, topic, schema_name, version)
    return _SERIALIZERS[key]


def prepare_publish(settings: Settings, topic: str | None) -> None:
    """Do now what this process's first publish of a result to ``topic`` would do before it sends: the topic
    exists (created if missing, :func:`ensure_topic_once`), its serializer holds the writer schema's registry
    id, and the producer is connected (broker metadata; the idempotent producer's id comes with the
    connection). ``topic`` None (a GPU/auto request, topic known only after the run): the producer only.

    A run worker calls it in a background thread while it simulates: the first publish then costs about
    0.1 s instead of 0.6-0.7 s (2-core VM). Each step is bounded (``ADMIN_TIMEOUT_S``, the registry
    client's timeout, :data:`CONNECT_TIMEOUT_S`) and raises what it raises; the publish repeats what failed.
    """
    if topic is not None:
        ensure_topic_once(settings, topic, RESULT_PARTITIONS)
        serializer(settings, topic, RESULT_SCHEMA, latest_version(RESULT_SCHEMA))
    _producer(settings).list_topics(topic, timeout=CONNECT_TIMEOUT_S)


#: Seconds a new producer may take to find ``topic``'s leader before a failed publish is retried with it.
LEADER_CHECK_TIMEOUT_S = 5.0


def produce_acked(
    settings: Settings, topic: str, key: str, value: bytes, timestamp_ms: int | None = None
) -> tuple[int, int]:
    """Produce one record and wait for Kafka's acknowledgement; return (partition, offset).

    ``timestamp_ms`` (epoch ms) becomes the record's Kafka timestamp (CreateTime); None: the producer's now.
    A delivery that failed (PublishError) is tried once more, with a new producer, when that producer finds
    a leader for every partition of ``topic`` within :data:`LEADER_CHECK_TIMEOUT_S`: the broker is up, and
    the old producer was the problem. Otherwise (Kafka down, the topic leaderless) the PublishError is
    raised after at most that many more seconds, and the caller spools.
    """
    try:
        return _produce_once(settings, topic, key, value, timestamp_ms)
    except PublishError as first:
        if not topic_has_leaders(settings, topic):
            raise
        log.warning("%s; Kafka has a leader for %s: sending %s again with a new producer", first, topic, key)
    return _produce_once(settings, topic, key, value, timestamp_ms)


def topic_has_leaders(settings: Settings, topic: str, timeout_s: float | None = None) -> bool:
    """True when this process's producer (built now if the last one was discarded) gets ``topic``'s metadata
    within ``timeout_s`` (None: :data:`LEADER_CHECK_TIMEOUT_S`) with a leader for each of its partitions;
    any error or timeout: False."""
    try:
        metadata = _producer(settings).list_topics(topic, timeout=timeout_s or LEADER_CHECK_TIMEOUT_S)
    except Exception:  # KafkaException: no broker answered in time
        return False
    found = metadata.topics.get(topic)
    return bool(
        found is not None
        and found.error is None
        and found.partitions
        and all(p.leader >= 0 for p in found.partitions.values())
    )


def _produce_once(
    settings: Settings, topic: str, key: str, value: bytes, timestamp_ms: int | None = None
) -> tuple[int, int]:
    """One attempt of :func:`produce_acked` with this process's producer (discarded when it fails)."""
    producer = _producer(settings)
    report: dict[str, Any] = {}

    def on_delivery(err: Any, msg: Any) -> None:
        report["err"], report["msg"] = err, msg

    extra = {"timestamp": int(timestamp_ms)} if timestamp_ms is not None else {}
    try:
        producer.produce(topic, key=key.encode(), value=value, on_delivery=on_delivery, **extra)
    except KafkaException as exc:
        if exc.args and getattr(exc.args[0], "code", lambda: None)() == KafkaError.MSG_SIZE_TOO_LARGE:
            raise RecordTooLargeError(
                f"{topic} key {key}: {len(value)} bytes refused by the producer (message.max.bytes): {exc}"
            ) from exc
        raise
    deadline = time.monotonic() + delivery_timeout_ms() / 1000 + 5
    while "err" not in report and time.monotonic() < deadline:
        producer.poll(0.1)
    if "err" not in report:
        discard_producer(settings, producer)
        raise PublishError(f"no delivery report for {topic} key {key} within {delivery_timeout_ms()} ms")
    if report["err"] is not None and report["err"].code() == KafkaError.MSG_SIZE_TOO_LARGE:
        raise RecordTooLargeError(
            f"{topic} key {key}: {len(value)} bytes refused by Kafka (message.max.bytes): {report['err']}"
        )
    if report["err"] is not None:
        discard_producer(settings, producer)
        raise PublishError(f"Kafka did not acknowledge {topic} key {key}: {report['err']}")
    return report["msg"].partition(), report["msg"].offset()


def _json_default(value: Any) -> Any:
    """Datetimes (Avro timestamp-millis) as epoch milliseconds, so a spooled record re-serializes."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(round(value.timestamp() * 1000))
    raise TypeError(f"cannot spool a value of type {type(value).__name__}")


def spool_dir(settings: Settings) -> Path:
    """``<runtime dir>/spool``, readable by the owner only (results can be unpublished science)."""
    path = settings.runtime_dir / "spool"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, created 0600 (never readable by others, even briefly)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def publish_record(
    record: dict[str, Any],
    settings: Settings,
    *,
    topic: str,
    key: str,
    schema_name: str,
    version: int,
    spool_on_failure: bool = True,
    topic_partitions: int | None = None,
    timestamp_ms: int | None = None,
) -> PublishOutcome:
    """Serialize ``record`` with ``schema_name`` v``version`` and publish it; spool it if Kafka/registry fail.

    ``topic_partitions``: create ``topic`` with that many partitions first (once per process) if missing.
    ``timestamp_ms``: the Kafka timestamp (a result's event time); kept in the spool entry for the replay.
    An incompatible schema or a record Kafka refuses for its size is never spooled (replaying cannot fix
    it): it raises SchemaIncompatibleError / RecordTooLargeError.
    """
    try:
        value = serializer(settings, topic, schema_name, version)(record)
        if topic_partitions:
            ensure_topic_once(settings, topic, topic_partitions)
        partition, offset = produce_acked(settings, topic, key, value, timestamp_ms)
    except (SchemaIncompatibleError, RecordTooLargeError):
        raise  # replaying cannot fix either: never spooled
    except Exception as exc:  # Kafka or registry unreachable, timeouts
        if not spool_on_failure:
            raise
        path = spool_dir(settings) / f"{key}.json"
        entry = {
            "topic": topic, "key": key, "schema": schema_name, "version": version, "record": record,
            "timestamp_ms": timestamp_ms,
        }  # fmt: skip
        try:
            write_private(path, json.dumps(entry, default=_json_default))
        except OSError as full:
            raise SpoolWriteError(
                f"could not publish {key} to {topic} ({exc}) nor spool it to {path}: "
                f"{full.strerror or full} (disk full under QP_HOME={settings.runtime_dir}?); nothing stored"
            ) from full
        log.warning("could not publish %s to %s (%s); spooled to %s", key, topic, exc, path)
        return PublishOutcome(False, topic, key, spool_path=path, error=str(exc))
    log.debug("published %s to %s[%d]@%d", key, topic, partition, offset)
    return PublishOutcome(True, topic, key, partition, offset)


def publish_result(
    result: Any,
    settings: Settings | None = None,
    *,
    spool_on_failure: bool = True,
    version: int | None = None,
) -> PublishOutcome:
    """Publish a ``VQEResult`` (or its record dict) to ``vqe_result_v<N>.<configuration suffix>``.

    The Kafka timestamp is the result's ``event_time``, also when it is replayed from the spool later: the
    sink files a result under the day (and hour) of its own event time, the day its feature build keeps.
    """
    settings = settings or Settings.from_env()
    record = result if isinstance(result, dict) else result.to_record()
    version = version or latest_version(RESULT_SCHEMA)
    topic = result_topic(record, version)
    return publish_record(
        record, settings, topic=topic, key=record["run_id"], schema_name=RESULT_SCHEMA, version=version,
        spool_on_failure=spool_on_failure, topic_partitions=RESULT_PARTITIONS,
        timestamp_ms=event_time_ms(record),
    )  # fmt: skip


def event_time_ms(record: dict[str, Any]) -> int | None:
    """A result record's ``event_time`` as epoch ms (datetime, or ms as spooled), None if absent."""
    value = record.get("event_time")
    if isinstance(value, datetime):
        return _json_default(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    return None


def ensure_topic(settings: Settings, topic: str, partitions: int) -> None:
    """Create ``topic`` if it does not exist (idempotent; replication factor: the brokers' default).

    Bounded: each admin request gives up after ADMIN_TIMEOUT_S with a KafkaException naming the brokers.
    """
    watch = AuthFailureWatch()
    admin = AdminClient(
        client_config(settings.kafka_bootstrap_servers, **{"socket.timeout.ms": 10_000, "error_cb": watch})
    )
    deadline = time.monotonic() + ADMIN_TIMEOUT_S
    while True:  # 1 s slices, so refused credentials are reported in ~1 s, not after the whole timeout
        try:
            existing = admin.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic()))).topics
            break
        except KafkaException as exc:
            admin.poll(0)  # serve the queued error callbacks
            refused = watch.describe(settings.kafka_bootstrap_servers)
            if refused:
                raise KafkaException(refused) from exc
            if time.monotonic() >= deadline:
                raise KafkaException(
                    f"Kafka at {settings.kafka_bootstrap_servers} did not answer a metadata request "
                    f"within {ADMIN_TIMEOUT_S:.0f} s: {exc}"
                ) from exc
    if topic in existing:
        return
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=-1)],
        request_timeout=ADMIN_TIMEOUT_S,
        operation_timeout=ADMIN_TIMEOUT_S,
    )
    try:
        futures[topic].result(ADMIN_TIMEOUT_S + 5)
    except KafkaException as exc:
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise


_TOPICS_ENSURED: set[tuple[str, str]] = set()


def ensure_topic_once(settings: Settings, topic: str, partitions: int) -> None:
    """:func:`ensure_topic` at most once per (brokers, topic) and process (then only on failure again)."""
    key = (settings.kafka_bootstrap_servers, topic)
    if key not in _TOPICS_ENSURED:
        ensure_topic(settings, topic, partitions)
        _TOPICS_ENSURED.add(key)


def request_record(request: dict[str, Any]) -> dict[str, Any]:
    """Normalize a request dict (flat VQE config beside ``molecule``) to the vqe_request Avro record."""
    from qp_assets.vqe.config import VQEConfig
    from qp_assets.vqe.molecule import Molecule

    molecule = Molecule.from_dict(request["molecule"]).to_dict()
    scan = request.get("scan")
    if scan is not None:  # validated (indices, distances, point count) before anything is published
        from qp_assets.vqe.scan import scan_request

        i, j, distances, warm = scan_request(Molecule.from_dict(request["molecule"]), scan)
        scan = {"atoms": [i, j], "start": distances[0], "stop": distances[-1], "points": len(distances),
                "warm_start": warm}  # fmt: skip
    config_fields = {
        k: v
        for k, v in request.items()
        if k not in ("request_id", "molecule", "submitted_at", "scan", "force")
    }
    if isinstance(config_fields.get("optimizer_options"), str):  # already in Avro form
        config_fields["optimizer_options"] = json.loads(config_fields["optimizer_options"] or "{}")
    config = VQEConfig.from_dict(config_fields).to_dict()
    config["optimizer_options"] = json.dumps(config["optimizer_options"], sort_keys=True)
    return {
        "request_id": str(request.get("request_id") or uuid.uuid4()),
        "molecule": {"masses": None, **molecule},
        **config,
        "scan": scan,
        "submitted_at": int(request.get("submitted_at") or time.time() * 1000),
        "force": bool(request.get("force", False)),
    }


def publish_request(
    request: dict[str, Any], settings: Settings | None = None, *, topic: str = REQUESTS_TOPIC
) -> PublishOutcome:
    """Validate and publish one VQE request to ``vqe.requests`` (keyed by request_id; never spooled)."""
    settings = settings or Settings.from_env()
    record = request_record(request)
    ensure_topic(settings, topic, REQUEST_PARTITIONS)
    return publish_record(
        record, settings, topic=topic, key=record["request_id"], schema_name=REQUEST_SCHEMA,
        version=latest_version(REQUEST_SCHEMA), spool_on_failure=False,
    )  # fmt: skip


def publish_requests(
    requests: list[dict[str, Any]], settings: Settings | None = None, *, topic: str = REQUESTS_TOPIC
) -> list[PublishOutcome]:
    """:func:`publish_request` for many requests: all validated first (nothing published if one is
    invalid), the topic checked once, then each published and acknowledged in order (never spooled)."""
    settings = settings or Settings.from_env()
    records = [request_record(r) for r in requests]
    ensure_topic(settings, topic, REQUEST_PARTITIONS)
    version = latest_version(REQUEST_SCHEMA)
    return [
        publish_record(
            record,
            settings,
            topic=topic,
            key=record["request_id"],
            schema_name=REQUEST_SCHEMA,
            version=version,
            spool_on_failure=False,
        )  # fmt: skip
        for record in records
    ]


def replay_spool(settings: Settings | None = None) -> tuple[int, int]:
    """Republish every spooled record; delete each spool file only after Kafka acknowledged it.

    Each record keeps its Kafka timestamp (the spool entry's ``timestamp_ms``; for a result spooled by an
    older version, its ``event_time``). A spool file that cannot be parsed is skipped, kept and reported
    (WARNING naming it; counted as still spooled): one corrupt file never stops the replay of the others.
    Returns (published, still spooled).
    """
    settings = settings or Settings.from_env()
    published = failed = 0
    for path in sorted(spool_dir(settings).glob("*.json")):
        try:
            entry = json.loads(path.read_text())
            topic, key, record = entry["topic"], entry["key"], entry["record"]
            schema, version = entry["schema"], entry["version"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            failed += 1
            log.warning("spool file %s is unreadable, skipped and kept: %s", path, exc)
            continue
        timestamp_ms = entry.get("timestamp_ms")
        if timestamp_ms is None and topic.startswith(RESULT_TOPIC_PREFIX) and isinstance(record, dict):
            timestamp_ms = event_time_ms(record)
        try:
            value = serializer(settings, topic, schema, version)(record)
            if topic.startswith(RESULT_TOPIC_PREFIX):
                ensure_topic_once(settings, topic, RESULT_PARTITIONS)
            produce_acked(settings, topic, key, value, timestamp_ms)
        except Exception as exc:
            failed += 1
            log.warning("replay of %s failed, kept in spool: %s", path.name, exc)
            continue
        path.unlink()
        published += 1
        log.info("replayed %s to %s", key, topic)
    return published, failed
