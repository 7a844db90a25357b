"""`qp audit DAY` on the real services, driven through the real path.

Requests with this test's own id prefix go through ``vqe.requests`` -> kafka_vqe_request_sensor (one tick
from a cursor at the topic's end) -> vqe_runner_job runs -> result topic -> Kafka Connect -> S3 -> today's
feature_processing_job: two valid H2 requests (rows), one whose molecule the runner rejects (DLQ, keyed by
request id) and one undecodable message (dead-lettered by the range reader, matched by partition/offset).
The audit of the prefix is green with exact counts. Then a second vqe_results row is appended for one
request (PyIceberg) and a request is published that no run ever picks up: the audit exits 1 naming exactly
those two request ids. Cleanup: the appended row is deleted and the orphan request is dead-lettered, so the
day is green again (checked). Kafka messages cannot be deleted; they stay in this (isolated) stack.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import DagsterInstance

from qp_assets import e2e
from qp_assets.audit import audit_day
from qp_assets.resources.core import REQUESTS_TOPIC
from qp_assets.sensors.kafka_offsets import dump_cursor, read_watermarks

pytestmark = [pytest.mark.services, pytest.mark.spark, pytest.mark.slow, pytest.mark.timeout(1500)]
QP = str(Path(sys.executable).parent / "qp")


def _qp_audit(day: str, prefix: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [QP, "audit", day, "--request-id-prefix", prefix, *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def flowed(stack):
    """Run the real path for this module's requests; yields (settings, day, prefix, ids)."""
    from qp_assets.definitions import defs
    from qp_assets.streaming.publisher import produce_acked, publish_record, request_record
    from qp_assets.streaming.schemas import REQUEST_SCHEMA, latest_version

    settings = stack
    e2e.require_sink_connector(settings)
    prefix = f"audit-{uuid.uuid4().hex[:8]}-"
    good = e2e.molecule_requests(("H2", "H2"))
    for i, req in enumerate(good):
        req["request_id"] = f"{prefix}ok{i}"
    rejected = request_record({**e2e.molecule_requests(("H2",))[0], "request_id": f"{prefix}rejected"})
    rejected["molecule"]["coords"] = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]  # atoms on top of each other
    with DagsterInstance.ephemeral() as instance:
        marks = read_watermarks(settings.kafka_bootstrap_servers, REQUESTS_TOPIC)
        cursor = dump_cursor(REQUESTS_TOPIC, {p: high for p, (_low, high) in marks.items()})
        since = datetime.now(UTC).replace(microsecond=0)
        e2e.submit_requests(good, settings)
        # schema-valid but rejected by the runner: published without the submit-side validation
        publish_record(
            rejected,
            settings,
            topic=REQUESTS_TOPIC,
            key=rejected["request_id"],
            schema_name=REQUEST_SCHEMA,
            version=latest_version(REQUEST_SCHEMA),
            spool_on_failure=False,
        )
        produce_acked(settings, REQUESTS_TOPIC, f"{prefix}garbage", b"not avro at all")
        run_requests, _ = e2e.run_sensor_once(instance, defs, cursor)
        assert run_requests, "the sensor saw none of the submitted requests"
        dagster_runs = e2e.execute_run_requests(instance, defs, run_requests)
        run_ids = e2e.published_run_ids(instance, dagster_runs)
        assert len(run_ids) == 2, run_ids
        e2e.wait_for_landing(settings, run_ids, since, timeout_s=420)
        day = datetime.now(UTC).date()
        result = defs.resolve_job_def("feature_processing_job").execute_in_process(
            partition_key=day.isoformat(), instance=instance, run_config=e2e.quiet_run_logs()
        )
        assert result.success
    yield settings, day, prefix, {"ok": [r["request_id"] for r in good], "run_ids": run_ids}


def test_real_flow_is_green_with_exact_counts(flowed) -> None:
    settings, day, prefix, ids = flowed
    started = time.monotonic()
    proc = _qp_audit(day.isoformat(), prefix, "--json")
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["green"] is True and report["violations"] == []
    assert report["counts"] == {
        "requests": 4,
        "undecodable": 1,
        "resubmitted_ids": 0,
        "results_published": 2,
        "result_messages": 2,
        "results_landed": 2,
        "iceberg_rows": 2,
        "dlq_entries": 2,
        "ok_row": 2,
        "ok_dlq": 2,
        "violating_requests": 0,
    }
    by_id = {r["request_id"] or r["key"]: r for r in report["requests"]}
    for rid in ids["ok"]:
        trace = by_id[rid]
        assert (
            trace["status"] == "row"
            and len(trace["rows"]) == 1
            and trace["rows"][0]["event_date"] == str(day)
        )
        (res,) = trace["results"]
        assert res["run_id"] in ids["run_ids"] and res["topic"].startswith("vqe_result_v")
        assert list(trace["landed"]) == [res["run_id"]] and trace["rows"][0]["run_id"] == res["run_id"]
        assert trace["landed"][res["run_id"]][0].startswith(f"raw/topics/{res['topic']}/year=")
    rejected = by_id[f"{prefix}rejected"]
    assert rejected["status"] == "dlq" and rejected["rows"] == [] and rejected["results"] == []
    assert "field 'coords' puts atoms 0 (H) and 1 (H) 0.0000 angstrom apart" in rejected["dlq"][0]["reason"]
    garbage = by_id[f"{prefix}garbage"]
    assert garbage["request_id"] is None and garbage["status"] == "dlq"
    assert (garbage["dlq"][0]["source_partition"], garbage["dlq"][0]["source_offset"]) == (
        garbage["partition"],
        garbage["offset"],
    )
    print(f"audit of {day} for {prefix}: {report['duration_s']} s inside, {elapsed:.1f} s with process start")


def test_injected_duplicate_and_missing_are_named(flowed) -> None:
    import pyarrow as pa
    from pyiceberg.expressions import EqualTo

    from qp_assets.features.catalog import load_feature_table
    from qp_assets.streaming.publisher import publish_request
    from qp_assets.streaming.requests import send_to_dead_letter

    settings, day, prefix, ids = flowed
    duplicated = ids["ok"][0]
    table = load_feature_table("vqe_results", settings)
    rows = table.scan(row_filter=EqualTo("request_id", duplicated)).to_arrow()
    assert rows.num_rows == 1
    fake_run = f"audit-dup-{uuid.uuid4()}"
    index = rows.schema.get_field_index("run_id")
    copy = rows.set_column(index, rows.schema.field(index), pa.array([fake_run], pa.string()))
    table.append(copy)
    missing = f"{prefix}missing"
    outcome = publish_request({**e2e.molecule_requests(("H2",))[0], "request_id": missing}, settings)
    try:
        proc = _qp_audit(day.isoformat(), prefix)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        lines = [line for line in proc.stdout.splitlines() if line.startswith("VIOLATION ")]
        assert len(lines) == 2, proc.stdout
        dup_line = next(line for line in lines if "duplicated_rows" in line)
        assert duplicated in dup_line and fake_run in dup_line and "2 rows in vqe_results" in dup_line
        missing_line = next(line for line in lines if line.split()[1] == "missing")
        assert f" {missing} " in missing_line
        assert f"[{outcome.partition}]@{outcome.offset}" in missing_line
        assert "violating requests         2" in proc.stdout
    finally:
        load_feature_table("vqe_results", settings).delete(EqualTo("run_id", fake_run))
        send_to_dead_letter(
            settings,
            REQUESTS_TOPIC,
            outcome.partition,
            outcome.offset,
            missing.encode(),
            b"{}",
            "test_audit_services: injected orphan request, closed by the test",
        )
    report = audit_day(day, settings, request_id_prefix=prefix)
    assert report.green, report.violations
    assert report.counts["ok_row"] == 2 and report.counts["ok_dlq"] == 3
