"""The one Dagster ``Definitions`` of the platform (loaded by workspace.yaml and ``-m qp_assets.definitions``).

Everything env-driven (partition start, retry policy, sensor intervals, GPU slots) is read when
:func:`build_definitions` runs, i.e. at code-location load.
"""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from qp_assets.assets.automation import feature_automation_condition
from qp_assets.assets.campaigns import campaign_progress, campaign_progress_job, campaign_sensor
from qp_assets.assets.checks import feature_table_checks
from qp_assets.assets.features import build_feature_assets
from qp_assets.assets.jobs import build_daily_schedule, build_feature_job
from qp_assets.assets.ml import ml_definitions
from qp_assets.assets.raw import raw_vqe_results
from qp_assets.assets.vqe_runner import build_vqe_runner_job
from qp_assets.resources import default_resources
from qp_assets.sensors.definitions import build_sensors
from qp_assets.settings import load_env


def build_definitions() -> Definitions:
    feature_job = build_feature_job()
    vqe_runner_job = build_vqe_runner_job()
    ml_assets, ml_checks = ml_definitions()
    automated = load_env().feature_trigger == "automation"
    features = build_feature_assets(feature_automation_condition() if automated else None)
    return Definitions(
        assets=[raw_vqe_results, features, *ml_assets, campaign_progress],
        asset_checks=[feature_table_checks, *ml_checks],
        jobs=[feature_job, vqe_runner_job, campaign_progress_job],
        schedules=[build_daily_schedule(feature_job)],
        sensors=[*build_sensors(vqe_runner_job, feature_job), campaign_sensor],
        resources=default_resources(),
        # runs of the implicit asset job (declarative automation, UI Materialize, asset backfills) build
        # in one process like feature_processing_job: no child process per step re-importing everything
        executor=in_process_executor,
    )


defs = build_definitions()
