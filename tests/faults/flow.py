"""The real request -> table path, step by step, for the fault cases (each case uses its own id prefix)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, date, datetime
from typing import Any

from qp_assets import e2e
from qp_assets.resources.core import REQUESTS_TOPIC
from qp_assets.settings import Settings


def publish_h2_request_at(settings: Settings, rid: str, at: datetime) -> Any:
    """Publish an H2 request stamped ``at`` (``submitted_at`` and Kafka timestamp); the publish outcome."""
    from qp_assets.streaming.publisher import publish_record, request_record
    from qp_assets.streaming.schemas import REQUEST_SCHEMA, latest_version

    at_ms = int(at.timestamp() * 1000)
    request = request_record({**e2e.molecule_requests(("H2",))[0], "request_id": rid, "submitted_at": at_ms})
    return publish_record(
        request, settings, topic=REQUESTS_TOPIC, key=rid, schema_name=REQUEST_SCHEMA,
        version=latest_version(REQUEST_SCHEMA), spool_on_failure=False, timestamp_ms=at_ms,
    )  # fmt: skip


def new_prefix(case: str) -> str:
    return f"fault-{case}-{uuid.uuid4().hex[:6]}-"


def cursor_at_end(settings: Settings) -> str:
    """A request-sensor cursor at the current end of every partition of ``vqe.requests``."""
    from qp_assets.sensors.kafka_offsets import dump_cursor, read_watermarks
    from qp_assets.streaming.publisher import REQUEST_PARTITIONS, ensure_topic

    ensure_topic(settings, REQUESTS_TOPIC, REQUEST_PARTITIONS)
    marks = read_watermarks(settings.kafka_bootstrap_servers, REQUESTS_TOPIC)
    return dump_cursor(REQUESTS_TOPIC, {p: high for p, (_low, high) in marks.items()})


def submit_h2(settings: Settings, prefix: str, n: int) -> list[str]:
    """Publish ``n`` H2 requests with ids ``<prefix>0..``; returns the ids."""
    requests = e2e.molecule_requests(("H2",) * n)
    for i, req in enumerate(requests):
        req["request_id"] = f"{prefix}{i}"
    e2e.submit_requests(requests, settings)
    return [r["request_id"] for r in requests]


def tick(instance: Any, defs: Any, cursor: str) -> tuple[list[Any], str]:
    """One evaluation of the real request sensor against ``instance``."""
    requests, new_cursor = e2e.run_sensor_once(instance, defs, cursor)
    return requests, new_cursor or cursor


def execute(instance: Any, job: Any, request: Any) -> Any:
    """Run one RunRequest in-process as the daemon would launch it (failures returned, not raised)."""
    return job.execute_in_process(
        run_config={**request.run_config, **e2e.quiet_run_logs()},
        instance=instance,
        tags={**request.tags, "dagster/run_key": request.run_key},
        raise_on_error=False,
    )


def build_features(instance: Any, defs: Any, day: date) -> None:
    result = defs.resolve_job_def("feature_processing_job").execute_in_process(
        partition_key=day.isoformat(),
        instance=instance,
        run_config=e2e.quiet_run_logs(),
        raise_on_error=False,
    )
    assert result.success, f"feature build of {day} failed"


def wait_landed(settings: Settings, run_ids: list[str], since: datetime, timeout_s: float = 120) -> float:
    return e2e.wait_for_landing(settings, run_ids, since, timeout_s=timeout_s)


def today() -> date:
    return datetime.now(UTC).date()


def monotonic_since(t0: float) -> float:
    return round(time.monotonic() - t0, 1)


def wait_landed_on(
    settings: Settings, run_ids: list[str], day: date, since: datetime, timeout_s: float = 120
) -> float:
    """Poll the ``day`` folders of S3 until all ``run_ids`` landed there; seconds waited (TimeoutError)."""
    started = time.monotonic()
    when = datetime(day.year, day.month, day.day, tzinfo=UTC)
    missing = set(run_ids)
    while True:
        missing -= e2e.landed_run_ids(settings, when, since)
        if not missing:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{sorted(missing)} not landed under day={day} after {timeout_s:.0f} s")
        time.sleep(2)


def land_results_on(settings: Settings, prefix: str, day: date, n: int, first: int = 0) -> list[str]:
    """``n`` requests ``<prefix><i>`` stamped ``day`` 09:00 and their results (synthetic v3 records, event
    time 09:05 + i min) published for real and landed by the sink under ``day``; the results' run ids."""
    from datetime import timedelta

    from qp_assets.features.golden import make_result
    from qp_assets.streaming.publisher import publish_result

    at = datetime(day.year, day.month, day.day, 9, 0, tzinfo=UTC)
    since = datetime.now(UTC).replace(microsecond=0)
    run_ids = []
    for i in range(first, first + n):
        rid = f"{prefix}{i}"
        assert publish_h2_request_at(settings, rid, at).published
        rec = make_result(i, at + timedelta(minutes=5 + i), run_id=f"{prefix}run{i}")
        rec["request_id"] = rid
        out = publish_result(rec, settings, spool_on_failure=False)
        assert out.published, out.error
        run_ids.append(rec["run_id"])
    wait_landed_on(settings, run_ids, day, since)
    return run_ids
