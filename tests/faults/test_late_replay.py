"""Kafka down across midnight, the result replayed a day late: it lands under its own day (issue 14 item 2).

A request submitted "yesterday" (its ``submitted_at`` and Kafka timestamp yesterday 22:00 UTC) ran and its
result (event time yesterday 22:05) could not be published: it is spooled through the real publish path
(brokers unreachable). Today the spool is replayed. Results carry their event time as the Kafka timestamp,
so the sink files the object under yesterday's ``day=`` folder and yesterday's feature build keeps the row
(before: filed under the replay day, while the build of that day drops rows of another event day - the
request was never in Iceberg). A corrupt spool file next to it is skipped, kept and reported; it does not
stop the replay (item 5).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from qp_assets.features.golden import make_result
from qp_assets.streaming.publisher import (
    publish_result,
    replay_spool,
    spool_dir,
)
from tests.faults import flow
from tests.faults.tools import expect

pytestmark = [pytest.mark.faults, pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(300)]


def test_result_replayed_a_day_late_lands_under_its_own_day(stack, monkeypatch) -> None:

    settings = stack
    prefix = flow.new_prefix("late")
    yesterday = flow.today() - timedelta(days=1)
    submitted = datetime(yesterday.year, yesterday.month, yesterday.day, 22, 0, tzinfo=UTC)
    rid = f"{prefix}0"
    assert flow.publish_h2_request_at(settings, rid, submitted).published
    result = make_result(0, submitted + timedelta(minutes=5), run_id=f"{prefix}run0")
    result["request_id"] = rid
    monkeypatch.setenv("QP_KAFKA_DELIVERY_TIMEOUT_MS", "3000")
    down = dataclasses.replace(settings, kafka_bootstrap_servers="127.0.0.1:9")  # nothing listens (discard)
    spooled = publish_result(result, down)
    assert not spooled.published and spooled.spool_path is not None
    entry = json.loads(spooled.spool_path.read_text())
    assert entry["timestamp_ms"] == int((submitted + timedelta(minutes=5)).timestamp() * 1000)
    corrupt = spool_dir(settings) / f"{prefix}corrupt.json"
    corrupt.write_text('{"topic": "vqe_result_v3.x", "key": ')  # cut mid-write
    try:
        since = datetime.now(UTC).replace(microsecond=0)
        t0 = flow.time.monotonic()
        published, kept = replay_spool(settings)
        assert published >= 1 and kept >= 1
        assert not spooled.spool_path.exists() and corrupt.exists()
        flow.wait_landed_on(settings, [result["run_id"]], yesterday, since)
        recovery = flow.monotonic_since(t0)
    finally:
        corrupt.unlink(missing_ok=True)
    expect("Kafka down over midnight, replay a day late", prefix, yesterday,
           {"requests": 1, "ok_row": 1, "iceberg_rows": 1, "result_messages": 1}, recovery, settings,
           "spooled yesterday, replayed today; corrupt spool file skipped; recovery = replay -> landed")  # fmt: skip
