"""The landed raw VQE results as an observable source asset (observation = files and bytes per day)."""

from datetime import UTC, datetime

from dagster import DataVersion, MetadataValue, ObserveResult, observable_source_asset

from qp_assets.assets.automation import LANDING_SIGNATURES
from qp_assets.assets.features import RAW_ASSET_KEY
from qp_assets.resources.core import BoundedS3Resource, LandingResource
from qp_assets.sensors.landing import landed_data_version, landed_per_day, landed_signatures, recent_days
from qp_assets.settings import load_env


def observe_lookback_days() -> int:
    """Days listed per observation besides today (``QP_LANDING_LOOKBACK_DAYS``, default 2)."""
    return load_env().landing_lookback_days


@observable_source_asset(
    key=RAW_ASSET_KEY,
    group_name="raw",
    # Markdown in the UI: the path in backticks, or "<bucket>" and "<topic>" render as (empty) HTML tags
    description="Avro files landed by Kafka Connect under `s3://<bucket>/raw/topics/<topic>/year=/month=/day=/hour=/`",
    kinds={"s3", "avro"},
)
def raw_vqe_results(s3: BoundedS3Resource, landing: LandingResource) -> ObserveResult:
    days = recent_days(datetime.now(UTC).date(), observe_lookback_days())
    landed = landed_per_day(s3.get_client(), landing.bucket, landing.raw_prefix, days)
    per_day = {d.isoformat(): {"files": info.files, "bytes": info.bytes} for d, info in landed.items()}
    return ObserveResult(
        data_version=DataVersion(landed_data_version(landed)),
        metadata={
            "files": sum(i.files for i in landed.values()),
            "bytes": sum(i.bytes for i in landed.values()),
            "per_day": MetadataValue.json(per_day),
            LANDING_SIGNATURES: MetadataValue.json(landed_signatures(landed)),
            "location": f"s3://{landing.bucket}/{landing.raw_prefix}",
        },
    )
