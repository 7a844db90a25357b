"""Jobs and schedules over the assets."""

from datetime import timedelta

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    define_asset_job,
    in_process_executor,
    schedule,
)

from qp_assets.assets.partitions import DAILY_REBUILD_CRON
from qp_assets.assets.run_tags import FEATURE_GROUP, FEATURE_RUN_TAGS
from qp_assets.settings import load_env


def build_feature_job():
    """All ten feature tables (and their checks) for a partition or a partition range, in one process
    (the Spark session is shared by the asset step and reused across retries)."""
    return define_asset_job(
        "feature_processing_job",
        selection=AssetSelection.groups(FEATURE_GROUP),
        executor_def=in_process_executor,
        description="Build the Iceberg feature tables of one day (or a range: one Spark job).",
        tags=dict(FEATURE_RUN_TAGS),
    )


def build_daily_schedule(feature_job):
    """00:30 UTC every day: rebuild yesterday (the daily processing the Airflow DAG used to do).

    Runs by default under the daemon, like the sensors (``QP_SENSORS_RUNNING=0`` stops both): the tables'
    daily freshness policy expects it (results landed after the last landing-triggered build of a day)."""

    @schedule(
        name="daily_feature_schedule",
        cron_schedule=DAILY_REBUILD_CRON,
        job=feature_job,
        execution_timezone="UTC",
        default_status=(
            DefaultScheduleStatus.RUNNING if load_env().sensors_running else DefaultScheduleStatus.STOPPED
        ),
    )
    def daily_feature_schedule(context: ScheduleEvaluationContext) -> RunRequest:
        day = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
        return RunRequest(run_key=f"daily:{day}", partition_key=day)

    return daily_feature_schedule
