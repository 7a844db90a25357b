"""Unreadable landed files fail the day's build visibly, never silently drop rows (issue 14 item 3).

A day 20 days back (no other test builds it) gets one real request and its result, landed by the sink
under that day (Kafka timestamp = event time), plus four unreadable objects in the same topic folder:
empty, random bytes, an Avro file truncated mid-block and one whose block sync marker is overwritten. The
day's feature build writes the good row, the blocking check ``landed_files_readable`` fails naming exactly
the four objects, and the run fails. The objects are quarantined (moved out of ``raw/topics/`` to
``quarantine/``, as the check's fix says); the rebuild passes the check and the audit of the day is green
with one row. Recovery = quarantine + rebuild.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

import pytest
from dagster import DagsterEventType, DagsterInstance

from qp_assets import e2e
from qp_assets.features.golden import avro_bytes, landed_key, make_result
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
            assert report.green and report.counts["iceberg_rows"] == 1  # the good row was written
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
    expect("unreadable landed files (4 kinds)", prefix, day,
           {"requests": 1, "ok_row": 1, "iceberg_rows": 1, "result_messages": 1}, recovery, settings,
           "build failed by the blocking check naming the 4 files; recovery = quarantine + rebuild",
           built=True)  # fmt: skip
