"""Unreadable landed files fail the day's build visibly, never silently drop rows (issue 14 item 3).

A day 20 days back (no other test builds it) gets one real request and its result, landed by the sink
under that day (Kafka timestamp = event time), plus four unreadable objects in the same topic folder:
empty, random bytes, an Avro file truncated mid-block and one whose block sync marker is overwritten.

Schema majors and minors beside them (issue 14 item 7): two more requests whose results landed as files
written by other producers: one with the v3 schema (an older major: the v3 topic folder) and one with a
newer v4 minor (v4 plus an optional field this code does not know); both must become rows through the
build's fixed v3 reader. A fifth object is a file of an unknown, incompatible major (``vqe_result_v99``:
v4 without ``total_energy``, which the reader requires) in its own topic folder: it must be reported by
the check like the corrupt ones, never dropped silently.

The day's feature build writes the 3 good rows, the blocking check ``landed_files_readable`` fails naming
exactly the five objects, and the run fails. The objects are quarantined (moved out of ``raw/topics/`` to
``quarantine/``, as the check's fix says); the rebuild passes the check and the audit of the day is green
with three rows. Recovery = quarantine + rebuild.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

import pytest
from dagster import DagsterEventType, DagsterInstance

from qp_assets import e2e
from qp_assets.features.catalog import read_rows
from qp_assets.features.golden import avro_bytes, landed_key, load_v3_schema, load_v4_schema, make_result
from qp_assets.s3 import s3_client
from qp_assets.streaming.publisher import publish_result
from qp_assets.streaming.topics import result_topic
from tests.faults import flow
from tests.faults.tools import expect, run_audit

pytestmark = [pytest.mark.faults, pytest.mark.services, pytest.mark.spark, pytest.mark.slow,
              pytest.mark.timeout(420)]  # fmt: skip


def _build(instance, defs, day):
    result = defs.resolve_job_def("feature_processing_job").execute_in_process(
        partition_key=day.isoformat(), instance=instance, raise_on_error=False,
        run_config=e2e.quiet_run_logs(),
    )  # fmt: skip
    check = next(
        e.event_specific_data
        for e in result.all_events
        if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
        and e.event_specific_data.check_name == "landed_files_readable"
    )
    return result, check


def _plain_v4(record: dict) -> dict:
    """A v3 ``record`` as a v4 one of a plain run (no ADAPT, no scan)."""
    return {**record, "backend": {**record["backend"], "kernel": "sector", "noise_model": None},
            "iterations": [{**it, "operator": None} for it in record["iterations"]],
            "adapt": None, "scan_id": None, "scan_point": None}  # fmt: skip


def _newer_minor_schema() -> dict:
    """v4 plus one optional field (a later minor of the v4 subject, unknown to this code)."""
    schema = load_v4_schema()
    schema["fields"].append({"name": "provenance_note", "type": ["null", "string"], "default": None})
    return schema


def _incompatible_major_schema() -> dict:
    """A future major that drops ``total_energy`` (required by the v3 reader, no default)."""
    schema = load_v4_schema()
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "total_energy"]
    return schema


def _schema_files(settings, prefix: str, at: datetime) -> tuple[dict[str, bytes], dict[str, str]]:
    """(landed key -> bytes of the v3 and newer-minor files, run_id -> request_id of their records); their
    requests are published for real (stamped ``at``)."""
    bodies, runs = {}, {}
    for i, (major, schema, extra) in enumerate(((3, load_v3_schema(), {}),
                                                (4, _newer_minor_schema(), {"provenance_note": "minor 4.1"})),
                                               start=1):  # fmt: skip
        rid = f"{prefix}{i}"
        assert flow.publish_h2_request_at(settings, rid, at).published
        record = {**make_result(i, at + timedelta(minutes=5 + i), run_id=f"{prefix}run{i}"), **extra}
        record["request_id"] = rid
        if major == 4:
            record = _plain_v4(record)
        key = landed_key(result_topic(record, major), 0, 9_100_000_000 + i, at + timedelta(hours=1))
        bodies[key] = avro_bytes([record], schema)
        runs[record["run_id"]] = rid
    return bodies, runs


def test_unreadable_landed_files_fail_the_build_until_quarantined(stack) -> None:
    from qp_assets.definitions import defs

    settings = stack
    prefix = flow.new_prefix("badfiles")
    day = flow.today() - timedelta(days=20)
    at = datetime(day.year, day.month, day.day, 9, 0, tzinfo=UTC)
    rid = f"{prefix}0"
    assert flow.publish_h2_request_at(settings, rid, at).published
    since = datetime.now(UTC).replace(microsecond=0)
    good = make_result(0, at + timedelta(minutes=5), run_id=f"{prefix}run0")
    good["request_id"] = rid
    assert publish_result(good, settings, spool_on_failure=False).published
    flow.wait_landed_on(settings, [good["run_id"]], day, since)

    topic = result_topic(good, 3)
    rng = random.Random(14)
    sample = avro_bytes([make_result(1, at + timedelta(hours=1), run_id=f"{prefix}bad")])
    bad = {
        "empty": b"",
        "random": rng.randbytes(4096),
        "truncated": sample[:-40],
        "sync-corrupt": sample[:-16] + bytes(16),
    }
    s3 = s3_client(settings)
    keys = []
    for i, body in enumerate(bad.values()):
        key = landed_key(topic, 0, 9_000_000_000 + i, at + timedelta(hours=1))
        s3.put_object(Bucket=settings.bucket, Key=key, Body=body)
        keys.append(key)
    future = make_result(5, at + timedelta(hours=1), run_id=f"{prefix}v99")
    future_topic = result_topic(future, 99)
    assert future_topic.startswith("vqe_result_v99.")
    future = {k: v for k, v in _plain_v4(future).items() if k != "total_energy"}
    key = landed_key(future_topic, 0, 9_000_000_009, at + timedelta(hours=1))
    s3.put_object(Bucket=settings.bucket, Key=key, Body=avro_bytes([future], _incompatible_major_schema()))
    keys.append(key)
    readable, readable_runs = _schema_files(settings, prefix, at)
    for key, body in readable.items():
        s3.put_object(Bucket=settings.bucket, Key=key, Body=body)
    moved = []
    try:
        with DagsterInstance.ephemeral() as instance:
            result, check = _build(instance, defs, day)
            assert not result.success and check.passed is False
            (entry,) = check.metadata["unreadable"].value
            assert entry["day"] == day.isoformat()
            assert sorted(f.rsplit("/", 1)[-1] for f in entry["bad_files"]) == sorted(
                k.rsplit("/", 1)[-1] for k in keys
            )
            report = run_audit(day, settings, prefix, "unreadable landed files (before quarantine)")
            assert report.green and report.counts["iceberg_rows"] == 3  # the good rows were written
            t0 = time.monotonic()
            for key in keys:
                s3.copy_object(Bucket=settings.bucket, Key=f"quarantine/{key}",
                               CopySource={"Bucket": settings.bucket, "Key": key})  # fmt: skip
                s3.delete_object(Bucket=settings.bucket, Key=key)
                moved.append(key)
            result, check = _build(instance, defs, day)
            assert result.success and check.passed is True
            recovery = flow.monotonic_since(t0)
    finally:
        for key in set(keys) - set(moved):  # never leave them for another build of the day
            s3.delete_object(Bucket=settings.bucket, Key=key)
    rows = read_rows("vqe_results", day=day, settings=settings).to_pylist()
    older_newer = {r["run_id"]: r["request_id"] for r in rows if r["run_id"] in readable_runs}
    assert older_newer == readable_runs  # the v3 and the newer-minor file: one row each, their requests
    expect("unreadable landed files (4 kinds + incompatible major)", prefix, day,
           {"requests": 3, "ok_row": 3, "iceberg_rows": 3, "result_messages": 1}, recovery, settings,
           "build failed by the blocking check naming the 5 files; v3 and newer-minor files read as rows; "
           "recovery = quarantine + rebuild", built=True)  # fmt: skip
