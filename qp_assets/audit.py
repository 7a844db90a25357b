"""``qp audit DAY``: reconcile one UTC day of VQE requests against every place they can end.

The platform's invariant: every ``request_id`` ends as exactly one row in Iceberg
``quantum_features.vqe_results`` (its latest result) or exactly one entry in ``vqe.requests.dlq`` (with the
reason). For every request of ``DAY`` (a message on ``vqe.requests`` whose ``submitted_at``, or the Kafka
timestamp when the record has none or cannot be decoded, falls on the day) this module traces:

* the request message (partition, offset) - read by Kafka timestamp with ``offsets_for_times``;
* result messages on every ``vqe_result_v<N>.*`` topic (topic, partition, offset, run_id);
* landed objects under ``raw/topics/<topic>/year=/month=/day=/`` of the day and the ``lookahead_days``
  after it (a run finishes after its request), read with fastavro to find their run/request ids;
* rows of ``vqe_results`` with that ``request_id`` in *any* day (one PyIceberg scan, request ids as filter);
* ``vqe.requests.dlq`` entries (key = request_id; undecodable requests by source partition/offset).

and reports the violations: missing (neither row nor DLQ entry, with the furthest stage reached: no
result, result published but not landed, landed but not in Iceberg), duplicated rows, both a row and a DLQ
entry, several DLQ entries, a row that is not the request's latest landed result, an undecodable request
that was not dead-lettered.

Read-only: nothing is consumed with a group, committed, dead-lettered or written. Every network call is
bounded: Kafka metadata/offset lookups and reads (``timeout_s`` each, one overall read deadline), the
registry client (its own timeout), S3 (the stack's bounded client: 2 s connect, 10 s read) and the
Iceberg data files (PyArrow S3 connect/request timeouts).
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from qp_assets.cli_errors import iso_day, reported
from qp_assets.landing import RAW_PREFIX, day_prefix
from qp_assets.redact import redact
from qp_assets.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_LOOKAHEAD_DAYS = 2
DEFAULT_SLACK_S = 3600.0  # producer clock vs submitted_at: read this much around the day


# ---------------------------------------------------------------------------------------------- data


@dataclass
class ResultRef:
    topic: str
    partition: int
    offset: int
    run_id: str
    event_time_ms: int | None


@dataclass
class RowRef:
    run_id: str
    event_date: str
    event_time_ms: int | None


@dataclass
class DlqRef:
    partition: int
    offset: int
    reason: str
    source_partition: int | None
    source_offset: int | None
    source_topic: str | None = None


@dataclass
class RequestTrace:
    """Where one request of the day is, and what is wrong with it (``violations`` empty = fine)."""

    request_id: str | None
    partition: int
    offset: int
    timestamp_ms: int
    submitted_at_ms: int | None
    molecule: str | None = None
    decode_error: str | None = None
    key: str | None = (
        None  # the message key (request_id for every producer of ours), kept for undecodable ones
    )
    duplicates: list[tuple[int, int]] = field(default_factory=list)  # other (partition, offset) of the id
    results: list[ResultRef] = field(default_factory=list)
    landed: dict[str, list[str]] = field(default_factory=dict)  # run_id -> object keys
    rows: list[RowRef] = field(default_factory=list)
    dlq: list[DlqRef] = field(default_factory=list)
    status: str = ""
    violations: list[str] = field(default_factory=list)
    scan_of: str | None = None  # a scan point: the scan request's id (its DLQ entries count for every point)

    @property
    def label(self) -> str:
        return self.request_id or f"<undecodable {self.partition}@{self.offset} key={self.key!r}>"


@dataclass
class AuditReport:
    day: str
    requests: list[RequestTrace]
    counts: dict[str, int]
    violations: list[dict[str, str]]
    sources: dict[str, Any]
    duration_s: float

    @property
    def green(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "green": self.green,
            "counts": self.counts,
            "violations": self.violations,
            "sources": self.sources,
            "duration_s": round(self.duration_s, 2),
            "requests": [asdict(r) for r in self.requests],
        }


class AuditError(RuntimeError):
    """A source could not be read (service unreachable, timeout): the audit cannot decide."""


# ---------------------------------------------------------------------------------------------- helpers


def day_window_ms(day: date) -> tuple[int, int]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return int(start.timestamp() * 1000), int((start + timedelta(days=1)).timestamp() * 1000)


def _ms(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp() * 1000)
    if isinstance(value, int | float):
        return int(value)
    return None


def _headers(msg: Any) -> dict[str, str]:
    return {k: (v or b"").decode("utf8", "replace") for k, v in (msg.headers() or [])}


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text not in (None, "") else None
    except ValueError:
        return None


@dataclass
class _Msg:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]


class KafkaWindowReader:
    """Reads the messages of a topic produced within a time window, by partition and explicit offsets
    (``offsets_for_times`` + ``assign``; no group subscription, no commits). Every call is bounded."""

    def __init__(self, settings: Settings, timeout_s: float = 10.0, read_budget_s: float = 120.0) -> None:
        from confluent_kafka import Consumer

        from qp_assets.streaming.kafka_config import client_config

        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + read_budget_s
        self.read_budget_s = read_budget_s
        self.bootstrap = settings.kafka_bootstrap_servers
        self.consumer = Consumer(
            client_config(
                settings.kafka_bootstrap_servers,
                **{
                    "group.id": f"qp-audit-{uuid.uuid4()}",  # never subscribes or commits
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "enable.partition.eof": True,
                    "isolation.level": "read_committed",
                    "socket.timeout.ms": int(timeout_s * 1000),
                    "session.timeout.ms": 45000,
                },
            )
        )

    def close(self) -> None:
        self.consumer.close()

    def topics(self, pattern: str | None = None, name: str | None = None) -> dict[str, list[int]]:
        """Topic -> partitions (all topics matching ``pattern``, or just ``name``)."""
        from confluent_kafka import KafkaException

        try:
            meta = self.consumer.list_topics(name, timeout=self.timeout_s)
        except KafkaException as exc:
            raise AuditError(
                f"Kafka at {self.bootstrap}: no metadata within {self.timeout_s} s ({exc})"
            ) from exc
        out = {}
        for topic, tmeta in meta.topics.items():
            if tmeta.error is not None or not tmeta.partitions:
                continue
            if (name is not None and topic == name) or (pattern is not None and re.fullmatch(pattern, topic)):
                out[topic] = sorted(tmeta.partitions)
        return out

    def read(self, topic: str, partitions: Iterable[int], start_ms: int, end_ms: int | None) -> list[_Msg]:
        """Messages of ``topic`` with Kafka timestamps in ``[start_ms, end_ms)`` (``end_ms`` None: up to the
        current end). Offsets are found with ``offsets_for_times``; records are then filtered by timestamp."""
        from confluent_kafka import KafkaException, TopicPartition

        from qp_assets.streaming.partition_read import read_partition

        out: list[_Msg] = []
        for partition in partitions:
            try:
                low, high = self.consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=self.timeout_s, cached=False
                )
                begin = self._offset_at(topic, partition, start_ms, high)
                # timestamps need not follow offsets (CreateTime of a late producer, a result replayed
                # with its event time): the first offset at start_ms is exact in any order (earliest
                # offset stamped >= start_ms), an "offset at end_ms" is not, so read to the end and filter
                stop = high
            except KafkaException as exc:
                raise AuditError(f"Kafka {topic}[{partition}]: offset lookup failed ({exc})") from exc
            begin = max(begin, low)
            if stop <= begin:
                continue
            try:
                for msg in read_partition(self.consumer, topic, partition, begin, stop, self.deadline):
                    ts = msg.timestamp()[1]
                    if start_ms <= ts and (end_ms is None or ts < end_ms):
                        out.append(
                            _Msg(topic, partition, msg.offset(), ts, msg.key(), msg.value(), _headers(msg))
                        )
            except TimeoutError as exc:
                raise AuditError(f"Kafka: {exc} within the {self.read_budget_s:.0f} s read budget") from None
            except RuntimeError as exc:
                raise AuditError(f"Kafka: {exc}") from None
        return out

    def _offset_at(self, topic: str, partition: int, ts_ms: int, high: int) -> int:
        from confluent_kafka import TopicPartition

        found = self.consumer.offsets_for_times(
            [TopicPartition(topic, partition, ts_ms)], timeout=self.timeout_s
        )
        offset = found[0].offset
        return high if offset < 0 else offset


# ---------------------------------------------------------------------------------------------- sources


def read_day_requests(
    reader: KafkaWindowReader, settings: Settings, day: date, slack_s: float, topic: str
) -> list[RequestTrace]:
    """Requests of ``day``: decoded like the runner does (registry writer schema, ``normalize_request``), kept when
    ``submitted_at`` (else the Kafka timestamp) is on the day. Undecodable messages are kept by timestamp."""
    from qp_assets.streaming.requests import normalize_request
    from qp_assets.streaming.serde import deserialize, value_deserializer

    deserializer = value_deserializer(settings.schema_registry_url)  # one client: schemas cached by id

    start, end = day_window_ms(day)
    slack = int(slack_s * 1000)
    parts = reader.topics(name=topic).get(topic, [])
    traces = []
    for msg in reader.read(topic, parts, start - slack, end + slack):
        try:
            record = deserialize(deserializer, topic, msg.value or b"")
            if not isinstance(record, dict):
                raise ValueError(f"request payload decoded to {type(record).__name__}, not a record")
            record = normalize_request(record)
        except Exception as exc:  # undecodable: it should be in the DLQ by partition/offset
            from qp_assets.streaming.serde import is_registry_outage

            if is_registry_outage(exc):
                raise AuditError(
                    redact(f"schema registry {settings.schema_registry_url} unavailable: {exc!r}")
                ) from exc
            if start <= msg.timestamp_ms < end:
                key = msg.key.decode("utf8", "replace") if msg.key else None
                traces.append(
                    RequestTrace(
                        None,
                        msg.partition,
                        msg.offset,
                        msg.timestamp_ms,
                        None,
                        decode_error=repr(exc),
                        key=key,
                    )
                )
            continue
        submitted = _ms(record.get("submitted_at"))
        when = submitted if submitted is not None else msg.timestamp_ms
        if not start <= when < end:
            continue
        traces += request_traces(record, msg.partition, msg.offset, msg.timestamp_ms, submitted)
    return traces


def request_traces(
    record: dict[str, Any], partition: int, offset: int, timestamp_ms: int, submitted_ms: int | None
) -> list[RequestTrace]:
    """The traces one decoded request expects: one, or for a scan request one per point (request id
    ``<id>#<index>``, see ``qp_assets.vqe.scan.point_request_id``; each point ends as its own row)."""
    molecule = record.get("molecule")
    name = molecule.get("name") if isinstance(molecule, dict) else None
    rid = str(record.get("request_id")) if record.get("request_id") else None
    scan = record.get("scan")
    if rid and isinstance(scan, dict) and isinstance(scan.get("points"), int) and scan["points"] > 0:
        from qp_assets.vqe.scan import point_request_id

        return [
            RequestTrace(
                point_request_id(rid, k),
                partition,
                offset,
                timestamp_ms,
                submitted_ms,
                molecule=name,
                scan_of=rid,
            )  # fmt: skip
            for k in range(scan["points"])
        ]
    return [RequestTrace(rid, partition, offset, timestamp_ms, submitted_ms, molecule=name)]


def attach_dlq(
    unique: list[RequestTrace], dlq: list[tuple[str | None, DlqRef]], requests_topic: str | None = None
) -> None:
    """Give each trace its dead-letter entries: by request id; a scan request's entry (its own id: refused
    as a whole) to every one of its points; an undecodable request's by source partition/offset of
    ``requests_topic`` (an entry naming another source topic, e.g. a private test topic sharing the
    dead-letter topic, is not this request's)."""
    first = {t.request_id: t for t in unique if t.request_id}
    points_of: dict[str, list[RequestTrace]] = defaultdict(list)
    for t in unique:
        if t.scan_of:
            points_of[t.scan_of].append(t)
    for rid, ref in dlq:
        if rid in first:
            first[rid].dlq.append(ref)
            continue
        if rid in points_of:
            for t in points_of[rid]:
                t.dlq.append(ref)
            continue
        if requests_topic and ref.source_topic and ref.source_topic != requests_topic:
            continue
        for t in unique:  # undecodable requests: by source partition/offset
            if t.request_id is None and (ref.source_partition, ref.source_offset) == (t.partition, t.offset):
                t.dlq.append(ref)


def read_dlq(
    reader: KafkaWindowReader, start_ms: int, end_ms: int | None, topic: str
) -> list[tuple[str | None, DlqRef]]:
    """(request_id or None, entry) of the dead-letter topic in the window; the id is the message key (both
    dead-letter paths key by request id) or, for a JSON value, its ``request_id``."""
    parts = reader.topics(name=topic).get(topic, [])
    out = []
    for msg in reader.read(topic, parts, start_ms, end_ms):
        request_id = msg.key.decode("utf8", "replace") if msg.key else None
        if not request_id and msg.value:
            try:
                request_id = json.loads(msg.value).get("request_id")
            except (ValueError, AttributeError):
                request_id = None
        ref = DlqRef(
            msg.partition,
            msg.offset,
            msg.headers.get("qp.error", ""),
            _int_or_none(msg.headers.get("qp.source.partition")),
            _int_or_none(msg.headers.get("qp.source.offset")),
            msg.headers.get("qp.source.topic") or None,
        )
        out.append((request_id or None, ref))
    return out


def read_results(
    reader: KafkaWindowReader, settings: Settings, start_ms: int, end_ms: int | None
) -> tuple[list[tuple[str | None, ResultRef]], list[str]]:
    """(request_id, result) of every result topic in the window, and the topics read."""
    from qp_assets.streaming.serde import deserialize, is_registry_outage, value_deserializer
    from qp_assets.streaming.topics import RESULT_TOPIC_REGEX

    deserializer = value_deserializer(settings.schema_registry_url)
    topics = reader.topics(pattern=RESULT_TOPIC_REGEX)
    out = []
    for topic, parts in sorted(topics.items()):
        for msg in reader.read(topic, parts, start_ms, end_ms):
            try:
                record = deserialize(deserializer, topic, msg.value)
            except Exception as exc:
                if is_registry_outage(exc):
                    raise AuditError(
                        redact(f"schema registry {settings.schema_registry_url} unavailable: {exc!r}")
                    ) from exc
                log.warning("undecodable result %s[%d]@%d: %s", topic, msg.partition, msg.offset, exc)
                continue
            ref = ResultRef(
                topic, msg.partition, msg.offset, str(record.get("run_id")), _ms(record.get("event_time"))
            )
            out.append((record.get("request_id"), ref))
    return out, sorted(topics)


#: Landed objects read at once by :func:`read_landed` (one GET each; the S3 client's pool holds 10).
LANDED_READERS = 8


def read_landed(settings: Settings, days: list[date]) -> tuple[dict[str, tuple[str | None, str]], int]:
    """run_id -> (request_id, object key) of every landed Avro file under the day folders of ``days``
    (listing with ``sensors.landing``'s helpers, the platform's bounded S3 client), and the object count."""
    import fastavro
    from botocore.exceptions import BotoCoreError, ClientError

    from qp_assets.s3 import s3_client
    from qp_assets.sensors.landing import list_topics

    client = s3_client(settings)
    found: dict[str, tuple[str | None, str]] = {}

    def fetch(key: str) -> bytes:
        return client.get_object(Bucket=settings.bucket, Key=key)["Body"].read()

    try:
        keys = []
        for topic in list_topics(client, settings.bucket, RAW_PREFIX):
            for day in days:
                pages = client.get_paginator("list_objects_v2").paginate(
                    Bucket=settings.bucket, Prefix=day_prefix(topic, day)
                )
                for page in pages:
                    for obj in page.get("Contents", []):
                        name = obj["Key"].rsplit("/", 1)[-1]
                        if not name.startswith((".", "_")) and name.endswith(".avro"):
                            keys.append(obj["Key"])
        # small objects, one GET each: several at once (the client is thread-safe, each call bounded)
        with ThreadPoolExecutor(max_workers=LANDED_READERS) as pool:
            for key, body in zip(keys, pool.map(fetch, keys), strict=True):
                try:
                    for rec in fastavro.reader(io.BytesIO(body)):
                        found.setdefault(str(rec.get("run_id")), (rec.get("request_id"), key))
                except Exception as exc:  # a foreign or corrupt object: say so, keep going
                    log.warning("cannot read landed object s3://%s/%s: %s", settings.bucket, key, exc)
    except (BotoCoreError, ClientError) as exc:
        raise AuditError(f"S3 at {settings.s3_endpoint_url} (bucket {settings.bucket}): {exc}") from exc
    return found, len(keys)


def read_rows_for(settings: Settings, request_ids: set[str], timeout_s: float) -> list[dict[str, Any]]:
    """``vqe_results`` rows (request_id, run_id, event_date, event_time) of ``request_ids`` in any day."""
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
    from pyiceberg.expressions import In

    from qp_assets.features.catalog import load_feature_table

    if not request_ids:
        return []
    uri = settings.iceberg_catalog_uri
    for scheme in ("jdbc:sqlite:", "sqlite:///"):
        if uri.startswith(scheme) and not Path(uri[len(scheme) :]).exists():
            return []  # no feature build ever ran on this runtime: no catalog file, no table, no rows
    try:
        table = load_feature_table("vqe_results", settings)
    except (NoSuchTableError, NoSuchNamespaceError):
        return []
    # bound the data-file reads (PyArrow S3 filesystem; the SQLite/Postgres catalog is local or its own pool)
    table.io.properties.setdefault("s3.connect-timeout", str(timeout_s))
    table.io.properties.setdefault("s3.request-timeout", str(timeout_s * 3))
    try:
        arrow = table.scan(
            row_filter=In("request_id", request_ids),
            selected_fields=("request_id", "run_id", "event_date", "event_time"),
        ).to_arrow()
    except OSError as exc:
        raise AuditError(f"Iceberg data files at {settings.iceberg_warehouse}: {exc}") from exc
    return arrow.to_pylist()


# ---------------------------------------------------------------------------------------------- audit


def evaluate(traces: list[RequestTrace]) -> list[dict[str, str]]:
    """Set ``status`` and ``violations`` of every trace; returns one dict per violation."""
    out = []
    for t in traces:
        t.violations = []
        if t.request_id is None:
            if not t.dlq:
                t.violations.append(
                    ("undecodable_not_in_dlq", f"undecodable request not dead-lettered ({t.decode_error})")
                )
            elif len(t.dlq) > 1:
                offsets = [d.offset for d in t.dlq]
                t.violations.append(("duplicated_dlq", f"{len(t.dlq)} DLQ entries (offsets {offsets})"))
            t.status = "violation" if t.violations else "dlq"
        else:
            rows, dlq = t.rows, t.dlq
            if len(rows) > 1:
                where = ", ".join(f"{r.run_id} ({r.event_date})" for r in rows)
                t.violations.append(("duplicated_rows", f"{len(rows)} rows in vqe_results: {where}"))
            if rows and dlq:
                t.violations.append(
                    ("row_and_dlq", f"row {rows[0].run_id} and DLQ entry ({dlq[0].reason[:120]})")
                )
            if len(dlq) > 1 and not rows:
                t.violations.append(
                    ("duplicated_dlq", f"{len(dlq)} DLQ entries (offsets {[d.offset for d in dlq]})")
                )
            if not rows and not dlq:
                published = [r.run_id for r in t.results]
                landed = list(t.landed)
                if landed:
                    t.violations.append(
                        ("landed_not_in_iceberg", f"landed ({', '.join(landed)}) but no vqe_results row")
                    )
                elif published:
                    where = ", ".join(f"{r.topic}[{r.partition}]@{r.offset}" for r in t.results)
                    t.violations.append(
                        ("published_not_landed", f"result published ({where}) but not landed")
                    )
                else:
                    t.violations.append(("missing", "no result, no row, no DLQ entry"))
            if len(rows) == 1 and not dlq and t.landed:
                latest = max(
                    (r for r in t.results if r.run_id in t.landed),
                    key=lambda r: ((r.event_time_ms or 0), r.run_id),
                    default=None,
                )
                if latest is not None and latest.run_id != rows[0].run_id:
                    t.violations.append(
                        (
                            "not_latest",
                            f"row {rows[0].run_id} is not the latest landed result {latest.run_id}",
                        )
                    )
            t.status = "violation" if t.violations else ("row" if rows else "dlq")
        for kind, detail in t.violations:
            out.append(
                {
                    "kind": kind,
                    "request_id": t.label,
                    "partition": str(t.partition),
                    "offset": str(t.offset),
                    "detail": detail,
                }
            )
        t.violations = [f"{k}: {d}" for k, d in t.violations]
    return out


def audit_day(
    day: date,
    settings: Settings | None = None,
    *,
    lookahead_days: int = DEFAULT_LOOKAHEAD_DAYS,
    slack_s: float = DEFAULT_SLACK_S,
    timeout_s: float = 10.0,
    read_budget_s: float = 300.0,
    requests_topic: str | None = None,
    dlq_topic: str | None = None,
    request_id_prefix: str = "",
) -> AuditReport:
    """Trace every request of ``day`` (UTC) and check the invariant (see the module doc).

    ``request_id_prefix`` limits the audit to requests whose id (for undecodable ones: message key) starts
    with it, e.g. one Airflow batch (``airflow-<ts>-``) or one test's requests.
    """
    from qp_assets.streaming.topics import REQUESTS_DLQ_TOPIC, REQUESTS_TOPIC

    started = time.monotonic()
    settings = settings or Settings.from_env()
    requests_topic = requests_topic or REQUESTS_TOPIC
    dlq_topic = dlq_topic or REQUESTS_DLQ_TOPIC
    if lookahead_days < 0:
        raise ValueError(f"lookahead_days: must be >= 0, got {lookahead_days}")
    start, end = day_window_ms(day)
    after_end = end + lookahead_days * 86_400_000
    horizon = None if after_end > time.time() * 1000 else after_end  # up to now when the window is open
    reader = KafkaWindowReader(settings, timeout_s=timeout_s, read_budget_s=read_budget_s)
    try:
        traces = read_day_requests(reader, settings, day, slack_s, requests_topic)
        if request_id_prefix:
            traces = [t for t in traces if (t.request_id or t.key or "").startswith(request_id_prefix)]
        window_start = start - int(slack_s * 1000)
        dlq = read_dlq(reader, window_start, horizon, dlq_topic)
        results, result_topics = read_results(reader, settings, window_start, horizon)
    finally:
        reader.close()
    landing_days = [day + timedelta(days=i) for i in range(-1, lookahead_days + 1)]
    landed, objects = read_landed(settings, landing_days)

    by_id: dict[str, list[RequestTrace]] = defaultdict(list)
    for t in traces:
        if t.request_id:
            by_id[t.request_id].append(t)
    # one trace per request_id: the first message; re-submissions of the same id are listed on it
    unique: list[RequestTrace] = []
    for t in traces:
        if t.request_id is None:
            unique.append(t)
        elif by_id[t.request_id][0] is t:
            t.duplicates = [(o.partition, o.offset) for o in by_id[t.request_id][1:]]
            unique.append(t)
    first = {rid: ts[0] for rid, ts in by_id.items()}
    for rid, ref in results:
        if rid in first:
            first[rid].results.append(ref)
    for run_id, (rid, key) in landed.items():
        if rid in first:
            first[rid].landed.setdefault(run_id, []).append(key)
    attach_dlq(unique, dlq, requests_topic)
    for row in read_rows_for(settings, set(first), timeout_s):
        first[row["request_id"]].rows.append(
            RowRef(row["run_id"], str(row["event_date"]), _ms(row["event_time"]))
        )
    violations = evaluate(unique)
    counts = {
        "requests": len(unique),
        "undecodable": sum(1 for t in unique if t.request_id is None),
        "resubmitted_ids": sum(1 for t in unique if t.duplicates),
        "results_published": sum(1 for t in unique if t.results),
        "result_messages": sum(len(t.results) for t in unique),
        "results_landed": sum(1 for t in unique if t.landed),
        "iceberg_rows": sum(len(t.rows) for t in unique),
        "dlq_entries": sum(len(t.dlq) for t in unique),
        "ok_row": sum(1 for t in unique if t.status == "row"),
        "ok_dlq": sum(1 for t in unique if t.status == "dlq"),
        "violating_requests": sum(1 for t in unique if t.status == "violation"),
    }
    sources = {
        "requests_topic": requests_topic,
        "dlq_topic": dlq_topic,
        "result_topics": result_topics,
        "landing_days": [d.isoformat() for d in landing_days],
        "landed_objects_read": objects,
        "bucket": settings.bucket,
        "table": "quantum_features.vqe_results",
        "request_id_prefix": request_id_prefix,
    }
    return AuditReport(day.isoformat(), unique, counts, violations, sources, time.monotonic() - started)


def format_report(report: AuditReport, show_all: bool = False) -> str:
    """Counts table, then one line per violation (and, with ``show_all``, one line per request)."""
    c = report.counts
    lines = [
        f"audit {report.day} (UTC): {'GREEN' if report.green else 'VIOLATIONS'} in {report.duration_s:.1f} s",
        "",
        f"{'requests':<22}{c['requests']:>6}   ({c['undecodable']} undecodable, {c['resubmitted_ids']} ids submitted more than once)",
        f"{'results published':<22}{c['results_published']:>6}   ({c['result_messages']} result messages)",
        f"{'results landed':<22}{c['results_landed']:>6}",
        f"{'vqe_results rows':<22}{c['iceberg_rows']:>6}",
        f"{'DLQ entries':<22}{c['dlq_entries']:>6}",
        f"{'ok: one row':<22}{c['ok_row']:>6}",
        f"{'ok: one DLQ entry':<22}{c['ok_dlq']:>6}",
        f"{'violating requests':<22}{c['violating_requests']:>6}",
    ]
    if report.violations:
        lines.append("")
        lines += [
            f"VIOLATION {v['kind']:<22} {v['request_id']}  (vqe.requests[{v['partition']}]@{v['offset']}): {v['detail']}"
            for v in report.violations
        ]
    if show_all:
        lines.append("")
        for t in report.requests:
            results = ", ".join(f"{r.topic}[{r.partition}]@{r.offset}={r.run_id}" for r in t.results) or "-"
            landed = ", ".join(k for keys in t.landed.values() for k in keys) or "-"
            rows = ", ".join(f"{r.run_id}@{r.event_date}" for r in t.rows) or "-"
            dlq = ", ".join(f"@{d.offset} {d.reason[:60]}" for d in t.dlq) or "-"
            lines.append(
                f"{t.status:<9} {t.label}  request [{t.partition}]@{t.offset}  results {results}  "
                f"landed {landed}  rows {rows}  dlq {dlq}"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- CLI


def _run(args: Any) -> int:
    with reported(usage=(AuditError,), failure=()):
        report = audit_day(
            args.day,
            lookahead_days=args.lookahead_days,
            slack_s=args.slack_minutes * 60.0,
            timeout_s=args.timeout,
            request_id_prefix=args.request_id_prefix,
        )
    if args.json:
        print(json.dumps(report.to_json(), indent=2, default=str))
    else:
        print(format_report(report, show_all=args.all))
    return 0 if report.green else 1


def register(subparsers: Any) -> None:
    """Add ``qp audit DAY``."""
    p = subparsers.add_parser(
        "audit",
        help="reconcile one day's requests: one vqe_results row or one DLQ entry each",
        description="For every request on vqe.requests submitted on DAY (UTC): its Kafka request, result "
        "message(s), landed S3 object(s), vqe_results row(s) and DLQ entry. Exit 0 when every request ends as "
        "exactly one row or exactly one DLQ entry, 1 with the violations listed, 2 when a source cannot be read.",
    )
    p.add_argument("day", type=iso_day, metavar="DAY", help="UTC day YYYY-MM-DD")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    p.add_argument("--all", action="store_true", help="also print one line per request (where it is)")
    p.add_argument(
        "--lookahead-days",
        type=int,
        default=DEFAULT_LOOKAHEAD_DAYS,
        help=f"days after DAY in which results/landings/DLQ entries are looked for (default {DEFAULT_LOOKAHEAD_DAYS})",
    )
    p.add_argument(
        "--slack-minutes",
        type=float,
        default=DEFAULT_SLACK_S / 60,
        help="Kafka timestamps read around the day, for producer clock skew (default 60)",
    )
    p.add_argument(
        "--request-id-prefix", default="", help="only requests whose id starts with this (e.g. airflow-<ts>-)"
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per network call (default 10)")
    p.set_defaults(handler=_run)
