"""Pipeline health gauges for the PushGateway: Kafka consumer lag, landed files per day, feature rows per day.

Pushed under ``job="quantum_pipeline_health"``, one PushGateway group per component (and day) and
``source`` (default ``qp``), so pushing one component never wipes another:

- ``component=kafka``: ``quantum_pipeline_kafka_lag{consumer_group, topic}`` (messages not yet consumed,
  summed over partitions), e.g. the Kafka Connect S3 sink's group ``connect-<connector>``.
- ``component=landing, day=YYYY-MM-DD``: ``quantum_pipeline_landed_files{day}`` and
  ``quantum_pipeline_landed_bytes{day}`` (Avro files Kafka Connect wrote for that UTC day).
- ``component=features, day=YYYY-MM-DD``: ``quantum_pipeline_feature_rows{day, table}`` (rows of each
  Iceberg feature table for that day).
- every group: ``quantum_pipeline_health_timestamp_seconds`` (unix seconds of the push).

Callers: the Dagster sensors/assets (values they already computed) and ``qp monitoring push-pipeline``
(:func:`collect_pipeline_health` reads Kafka, S3 and Iceberg itself). Same outage rules as
:mod:`qp_assets.monitoring.metrics`: bounded timeout, logged once, returns False, never raises.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import push_to_gateway

from qp_assets.landing import RAW_PREFIX
from qp_assets.monitoring.metrics import _bounded, _note_outage, _note_success, gateway_url

log = logging.getLogger(__name__)

JOB = "quantum_pipeline_health"
PIPELINE_METRICS: dict[str, str] = {
    "quantum_pipeline_kafka_lag": "Messages not yet consumed by a consumer group, per topic.",
    "quantum_pipeline_landed_files": "Raw Avro files landed in object storage for a UTC day.",
    "quantum_pipeline_landed_bytes": "Bytes of raw Avro files landed for a UTC day.",
    "quantum_pipeline_feature_rows": "Rows of an Iceberg feature table for a UTC day.",
    "quantum_pipeline_health_timestamp_seconds": "When this pipeline health group was pushed (unix seconds).",
}


def _day_label(day: Any) -> str:
    if day is None:
        return dt.datetime.now(dt.UTC).date().isoformat()
    if isinstance(day, dt.datetime):
        return day.date().isoformat()
    if isinstance(day, dt.date):
        return day.isoformat()
    try:
        return dt.date.fromisoformat(str(day)).isoformat()
    except ValueError:
        raise ValueError(f"day must be a date or 'YYYY-MM-DD', got {day!r}") from None


def _gauge(registry: CollectorRegistry, name: str, *labels: str) -> Gauge:
    """Gauge ``name`` (described in :data:`PIPELINE_METRICS`) with ``labels``, registered in ``registry``."""
    return Gauge(name, PIPELINE_METRICS[name], list(labels), registry=registry)


def _push(url: str, grouping_key: dict[str, str], registry: CollectorRegistry, timeout_s: float) -> bool:
    _gauge(registry, "quantum_pipeline_health_timestamp_seconds").set(time.time())
    try:
        _bounded(
            lambda: push_to_gateway(
                url, job=JOB, registry=registry, grouping_key=grouping_key, timeout=timeout_s
            ),
            timeout_s,
        )
    except Exception as exc:  # noqa: BLE001 - health metrics must never fail a sensor or asset
        _note_outage(url, exc)
        return False
    _note_success()
    return True


def push_pipeline_metrics(
    url: Any,
    *,
    kafka_lag: Mapping[str, int] | Mapping[tuple[str, str], int] | int | None = None,
    landed_files: int | None = None,
    feature_rows: Mapping[str, int] | None = None,
    day: dt.date | str | None = None,
    landed_bytes: int | None = None,
    consumer_group: str = "all",
    source: str = "qp",
    timeout_s: float = 2.0,
) -> bool:
    """Push the given pipeline health values; None values are skipped. True when every push succeeded.

    ``url``: PushGateway ``host:port``/URL or Settings-like object. ``kafka_lag``: total lag (int), lag per
    topic (``{topic: lag}``, labelled ``consumer_group``) or per ``{(consumer_group, topic): lag}``.
    ``landed_files``/``landed_bytes``: for ``day``. ``feature_rows``: ``{table: rows}`` for ``day``.
    ``day``: date or 'YYYY-MM-DD' (default: today UTC). ``source`` is part of the grouping key (pushers
    with different sources never replace each other's values). Never raises on an outage (returns False).
    """
    base = gateway_url(url)
    ok = True
    if kafka_lag is not None:
        registry = CollectorRegistry()
        gauge = _gauge(registry, "quantum_pipeline_kafka_lag", "consumer_group", "topic")
        if isinstance(kafka_lag, Mapping):
            for key, lag in kafka_lag.items():
                group, topic = key if isinstance(key, tuple) else (consumer_group, key)
                gauge.labels(consumer_group=str(group), topic=str(topic)).set(int(lag))
        else:
            gauge.labels(consumer_group=consumer_group, topic="all").set(int(kafka_lag))
        ok &= _push(base, {"component": "kafka", "source": source}, registry, timeout_s)
    if landed_files is not None or landed_bytes is not None:
        label = _day_label(day)
        registry = CollectorRegistry()
        if landed_files is not None:
            _gauge(registry, "quantum_pipeline_landed_files", "day").labels(day=label).set(int(landed_files))
        if landed_bytes is not None:
            _gauge(registry, "quantum_pipeline_landed_bytes", "day").labels(day=label).set(int(landed_bytes))
        ok &= _push(base, {"component": "landing", "day": label, "source": source}, registry, timeout_s)
    if feature_rows is not None:
        label = _day_label(day)
        registry = CollectorRegistry()
        gauge = _gauge(registry, "quantum_pipeline_feature_rows", "day", "table")
        for table, rows in feature_rows.items():
            gauge.labels(day=label, table=str(table)).set(int(rows))
        ok &= _push(base, {"component": "features", "day": label, "source": source}, registry, timeout_s)
    return bool(ok)


# ------------------------------------------------------------------------------------------ collection
def kafka_consumer_lag(
    bootstrap_servers: str, *, group_prefix: str = "connect-", timeout_s: float = 10.0
) -> dict[tuple[str, str], int]:
    """Lag per (consumer group, topic) for groups whose id starts with ``group_prefix``.

    Lag = high watermark - committed offset, summed over the partitions the group has committed.
    """
    from confluent_kafka import Consumer, ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient

    from qp_assets.streaming.kafka_config import client_config

    admin = AdminClient(client_config(bootstrap_servers, **{"socket.timeout.ms": int(timeout_s * 1000)}))
    listing = admin.list_consumer_groups(request_timeout=timeout_s).result(timeout=timeout_s)
    groups = sorted(g.group_id for g in listing.valid if g.group_id.startswith(group_prefix))
    lag: dict[tuple[str, str], int] = {}
    if not groups:
        return lag
    consumer = Consumer(
        client_config(
            bootstrap_servers,
            **{
                "group.id": "qp-monitoring-lag",
                "enable.auto.commit": False,
                "socket.timeout.ms": int(timeout_s * 1000),
            },
        )
    )
    try:
        for group in groups:
            futures = admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group)], request_timeout=timeout_s
            )
            offsets = futures[group].result(timeout=timeout_s)
            for tp in offsets.topic_partitions or []:
                if tp.offset < 0:
                    continue
                _low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
                key = (group, tp.topic)
                lag[key] = lag.get(key, 0) + max(int(high) - int(tp.offset), 0)
    finally:
        consumer.close()
    return lag


def landed_files_per_day(settings: Any, days: Iterable[dt.date], raw_prefix: str = RAW_PREFIX) -> dict:
    """{day: (files, bytes)} of raw Avro objects under ``s3://<bucket>/<raw_prefix><topic>/year=/month=/day=/``."""
    from qp_assets.s3 import s3_client
    from qp_assets.sensors.landing import landed_per_day

    client = s3_client(settings)
    landed = landed_per_day(client, settings.bucket, raw_prefix, list(days))
    return {d: (info.files, info.bytes) for d, info in landed.items()}


def feature_rows_for_day(settings: Any, day: dt.date) -> dict[str, int]:
    """{table: rows with event_date == day} for each Iceberg feature table that exists."""
    from pyiceberg.exceptions import NoSuchTableError
    from pyiceberg.expressions import EqualTo

    from qp_assets.features.catalog import NAMESPACE, sql_catalog

    catalog = sql_catalog(settings)
    rows = {}
    try:
        identifiers = catalog.list_tables(NAMESPACE)
    except Exception as exc:  # namespace not created yet
        log.info("no feature tables yet (%s)", exc)
        return rows
    for identifier in identifiers:
        name = identifier[-1]
        try:
            table = catalog.load_table(f"{NAMESPACE}.{name}")
        except NoSuchTableError:
            continue
        scan = table.scan(row_filter=EqualTo("event_date", day.isoformat()), selected_fields=("event_date",))
        rows[name] = int(scan.to_arrow().num_rows)
    return rows


def collect_and_push(settings: Any, days: Iterable[dt.date], *, timeout_s: float = 2.0) -> dict[str, Any]:
    """Measure Kafka lag, landed files and feature rows for ``days`` from the real services and push them.

    Each source is measured independently; one that fails is reported in ``errors`` and skipped.
    Returns {"kafka_lag": {...}, "days": {day: {...}}, "errors": [...], "pushed": bool}.
    """
    days = sorted(set(days))
    out: dict[str, Any] = {"kafka_lag": {}, "days": {}, "errors": [], "pushed": True}
    try:
        lag = kafka_consumer_lag(settings.kafka_bootstrap_servers)
        out["kafka_lag"] = {f"{g}/{t}": v for (g, t), v in lag.items()}
        out["pushed"] &= push_pipeline_metrics(settings, kafka_lag=lag or 0, timeout_s=timeout_s)
    except Exception as exc:  # noqa: BLE001
        from qp_assets.redact import redact

        out["errors"].append(redact(f"kafka lag: {exc}"))
    try:
        landed = landed_files_per_day(settings, days)
    except Exception as exc:  # noqa: BLE001
        out["errors"].append(f"landed files: {exc}")
        landed = {}
    for day in days:
        entry: dict[str, Any] = {}
        if day in landed:
            files, size = landed[day]
            entry.update(landed_files=files, landed_bytes=size)
            out["pushed"] &= push_pipeline_metrics(
                settings, landed_files=files, landed_bytes=size, day=day, timeout_s=timeout_s
            )
        try:
            rows = feature_rows_for_day(settings, day)
            entry["feature_rows"] = rows
            out["pushed"] &= push_pipeline_metrics(settings, feature_rows=rows, day=day, timeout_s=timeout_s)
        except Exception as exc:  # noqa: BLE001
            out["errors"].append(f"feature rows {day}: {exc}")
        out["days"][day.isoformat()] = entry
    return out
