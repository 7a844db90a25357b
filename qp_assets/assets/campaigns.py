"""Campaigns in Dagster: one ``campaign_progress`` partition per campaign, kept current by a sensor.

``qp campaign submit`` stores a manifest under ``campaigns/`` in the bucket and publishes the requests
(``qp_assets/campaigns.py``). The ``campaign_sensor`` adds every new campaign as a partition of the
``campaigns`` dynamic partition set and materialises ``campaign_progress`` for each campaign that is not
complete yet (at most one progress run per campaign at a time); the materialisation's metadata is the
campaign's progress (done, rows, dead-lettered, in flight, violations, runs/min), so the UI shows one row
per campaign with its history.
"""

from dagster import (
    AssetExecutionContext,
    AssetKey,
    DagsterRunStatus,
    DynamicPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    define_asset_job,
)

from qp_assets.sensors.definitions import job_sensor
from qp_assets.settings import Settings, load_env

CAMPAIGNS = DynamicPartitionsDefinition(name="campaigns")
PROGRESS_KEY = AssetKey("campaign_progress")
#: Tag of progress runs: the campaign they follow.
CAMPAIGN_TAG = "qp/campaign"


@asset(
    partitions_def=CAMPAIGNS,
    group_name="campaigns",
    kinds={"kafka", "iceberg"},
    description="Progress of one campaign (qp campaign submit): where each of its requests is, from qp audit.",
)
def campaign_progress(context: AssetExecutionContext) -> MaterializeResult:
    from qp_assets.campaigns import progress

    state = progress(Settings.from_env(), context.partition_key)
    context.log.info(
        "%s: %d/%d done, %d in flight, %d violation(s)",
        state["campaign_id"], state["done"], state["expected"], state["in_flight"], state["violations"],
    )  # fmt: skip
    metadata = {k: v for k, v in state.items() if k != "violation_kinds"}
    metadata["violation_kinds"] = ", ".join(state["violation_kinds"]) or "-"
    metadata["done_percent"] = MetadataValue.float(
        round(100.0 * state["done"] / max(state["expected"], 1), 1)
    )
    return MaterializeResult(metadata=metadata)


campaign_progress_job = define_asset_job("campaign_progress_job", selection=[campaign_progress])


def _complete(context: SensorEvaluationContext, campaign_id: str) -> bool:
    """Whether the campaign's latest progress materialisation said ``complete``."""
    from dagster import AssetRecordsFilter

    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=PROGRESS_KEY, asset_partitions=[campaign_id]), limit=1
    ).records
    materialization = records[0].asset_materialization if records else None
    value = materialization.metadata.get("complete") if materialization else None
    return bool(getattr(value, "value", value))


def _in_progress(context: SensorEvaluationContext) -> set[str]:
    runs = context.instance.get_runs(
        RunsFilter(
            job_name="campaign_progress_job",
            statuses=[
                DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
                DagsterRunStatus.STARTED,
            ],
        ),
        limit=100,
    )  # fmt: skip
    return {r.tags.get(CAMPAIGN_TAG, "") for r in runs}


@job_sensor(
    "campaign_sensor",
    campaign_progress_job,
    load_env().campaign_sensor_interval_s,
    "New campaigns -> partitions of campaign_progress; refreshes the progress of unfinished ones",
)
def campaign_sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
    from qp_assets.campaigns import list_campaigns

    ids = list_campaigns(Settings.from_env())
    known = set(context.instance.get_dynamic_partitions(CAMPAIGNS.name))
    new = [c for c in ids if c not in known]
    busy = _in_progress(context)
    refresh = [c for c in ids if c not in busy and (c in new or not _complete(context, c))]
    if not new and not refresh:
        return SkipReason(f"{len(ids)} campaign(s), none new or unfinished")
    return SensorResult(
        run_requests=[RunRequest(partition_key=c, tags={CAMPAIGN_TAG: c}) for c in refresh],
        dynamic_partitions_requests=[CAMPAIGNS.build_add_request(new)] if new else [],
    )
