"""A small campaign end to end on the real stack: submit -> request sensor -> vqe_runner_job -> Kafka -> S3
-> today's feature build -> ``progress`` complete with exactly one row per request, and the Dagster
``campaign_progress`` partition materialised with those figures."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from dagster import DagsterInstance, materialize

from qp_assets import campaigns

pytestmark = [pytest.mark.services, pytest.mark.spark, pytest.mark.slow]


def test_small_campaign_ends_as_one_row_per_request(stack):
    from qp_assets.assets.campaigns import campaign_progress
    from qp_assets.definitions import defs
    from qp_assets.e2e import (
        execute_run_requests,
        published_run_ids,
        quiet_run_logs,
        run_sensor_once,
        wait_for_landing,
    )
    from qp_assets.s3 import s3_client
    from qp_assets.sensors.kafka_offsets import dump_cursor, read_watermarks
    from qp_assets.streaming.topics import REQUESTS_TOPIC

    spec = {"name": "pytest campaign", "molecules": ["H2", "HeH+"], "matrix": {"optimizer": ["L-BFGS-B", "COBYLA"]},
            "seeds": [11, 12]}  # fmt: skip
    campaign = campaigns.expand(spec)
    assert len(campaign.requests) == 8
    try:
        with DagsterInstance.ephemeral() as instance:
            marks = read_watermarks(stack.kafka_bootstrap_servers, REQUESTS_TOPIC)
            cursor = dump_cursor(REQUESTS_TOPIC, {p: high for p, (_low, high) in marks.items()})
            since = datetime.now(UTC).replace(microsecond=0)
            outcome = campaigns.submit(campaign, stack)
            assert outcome["published"] == 8
            run_requests: list = []
            deadline = time.monotonic() + 60
            while not run_requests and time.monotonic() < deadline:
                run_requests, _ = run_sensor_once(instance, defs, cursor)
            dagster_runs = execute_run_requests(instance, defs, run_requests)
            result_runs = published_run_ids(instance, dagster_runs)
            assert len(result_runs) == 8
            wait_for_landing(stack, result_runs, since, 120)
            today = datetime.now(UTC).date().isoformat()
            built = defs.resolve_job_def("feature_processing_job").execute_in_process(
                partition_key=today, instance=instance, run_config=quiet_run_logs()
            )
            assert built.success
            state = campaigns.progress(stack, campaign.campaign_id)
            assert state["expected"] == state["requests_seen"] == state["rows"] == state["done"] == 8
            assert (
                state["dead_lettered"] == state["in_flight"] == state["violations"] == 0 and state["complete"]
            )
            instance.add_dynamic_partitions("campaigns", [campaign.campaign_id])
            shown = materialize([campaign_progress], partition_key=campaign.campaign_id, instance=instance)
            metadata = shown.asset_materializations_for_node("campaign_progress")[0].metadata
            assert metadata["rows"].value == 8 and metadata["complete"].value is True
            assert metadata["done_percent"].value == 100.0
            assert campaign.campaign_id in campaigns.list_campaigns(stack)
    finally:
        s3_client(stack).delete_object(Bucket=stack.bucket, Key=campaigns.manifest_key(campaign.campaign_id))
