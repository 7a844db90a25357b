"""ML assets: the two ML tables (daily partitions, downstream of the feature tables) and the convergence
model trained on ``ml_run_summary``, with a check that its cross-validated error did not regress.

The bodies call plain functions: ``qp_assets.features.ml_tables.build_ml_days`` (Spark over the Iceberg
feature tables) and ``qp_assets.features.model`` (scikit-learn, S3 artefact). Asset keys of the tables
are ``quantum_features/<table>`` like the ten tables (the run coordinator gives their runs the feature
kind tag: one Spark writer at a time); their group is ``ml``, so the feature job does not select them.
"""

from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from qp_assets.assets.features import column_schema, daily_spark_multi_asset, feature_asset_key
from qp_assets.assets.partitions import days_in_window
from qp_assets.features.ml_tables import ML_TABLES
from qp_assets.resources.core import BoundedS3Resource, IcebergCatalogResource, LandingResource, SparkResource

ML_GROUP = "ml"
MODEL_KEY = AssetKey("convergence_model")


def ml_table_specs() -> list[AssetSpec]:
    """One AssetSpec per ML table: deps on the feature tables it reads, column schema, keys."""
    return [
        AssetSpec(
            key=feature_asset_key(name),
            deps=[feature_asset_key(d) for d in spec.depends_on],
            group_name=ML_GROUP,
            description=spec.description,
            kinds={"iceberg", "spark"},
            metadata={
                "dagster/column_schema": column_schema(spec),
                "keys": list(spec.keys),
                "partition_column": spec.partition_column,
            },
            skippable=True,
        )
        for name, spec in ML_TABLES.items()
    ]


def build_ml_table_assets():
    """The ML tables as one subsettable daily-partitioned multi_asset (one Spark session per run)."""

    @daily_spark_multi_asset("ml_tables", ml_table_specs())
    def ml_tables(
        context: AssetExecutionContext, spark: SparkResource, iceberg: IcebergCatalogResource
    ) -> Iterator[MaterializeResult]:
        from qp_assets.features.ml_tables import build_ml_days

        window = context.partition_time_window
        days = days_in_window(window.start, window.end)
        selected = [t for t in ML_TABLES if feature_asset_key(t) in context.selected_asset_keys]
        settings = iceberg.settings()
        result = build_ml_days(
            days, spark.get_session(settings), settings, namespace=iceberg.namespace, tables=selected
        )
        for table in selected:
            rows = result.row_counts[table]
            metadata: dict[str, Any] = {
                "dagster/row_count": sum(rows.values()),
                "rows_per_day": rows,
                "iceberg_table": f"{settings.iceberg_catalog_name}.{iceberg.namespace}.{table}",
                "stale_runs_deleted": len(result.stale_runs_deleted),
                "duration_s": result.duration_s,
            }
            if table in result.snapshot_ids:
                metadata["snapshot_id"] = str(result.snapshot_ids[table])
            yield MaterializeResult(asset_key=feature_asset_key(table), metadata=metadata)

    return ml_tables


def _folds_markdown(metrics: dict[str, Any]) -> str:
    lines = ["| held-out molecule | train runs | test runs | MAE | baseline MAE |", "|---|---|---|---|---|"]
    for f in metrics["cv"]["folds"]:
        lines.append(
            f"| {f['molecule']} | {f['n_train']} | {f['n_test']} | {f['mae']:.4f} | {f['baseline_mae']:.4f} |"
        )
    return "\n".join(lines)


@asset(
    key=MODEL_KEY,
    deps=[feature_asset_key("ml_run_summary")],
    group_name=ML_GROUP,
    kinds={"scikitlearn", "s3"},
    description=(
        "Gradient-boosted trees (scikit-learn HistGradientBoostingRegressor) predicting log10 of a run's "
        "final error (mHa) from its configuration, trained on all of ml_run_summary; leave-one-molecule-out "
        "cross-validation; the joblib artefact and its metrics JSON in S3 under a content-hash version."
    ),
)
def convergence_model(
    context: AssetExecutionContext,
    iceberg: IcebergCatalogResource,
    s3: BoundedS3Resource,
    landing: LandingResource,
) -> MaterializeResult:
    from qp_assets.features.model import DEFAULT_PREFIX, train_and_store

    table = iceberg.catalog().load_table(f"{iceberg.namespace}.ml_run_summary")
    rows = table.scan().to_arrow().to_pylist()
    stored = train_and_store(rows, s3.get_client(), landing.bucket, DEFAULT_PREFIX)
    m = stored.metrics
    context.log.info("convergence model %s (%s)", stored.version, "reused" if stored.reused else "trained")
    return MaterializeResult(
        metadata={
            "version": stored.version,
            "model_uri": f"s3://{stored.bucket}/{stored.model_key}",
            "metrics_uri": f"s3://{stored.bucket}/{stored.metrics_key}",
            "reused": stored.reused,
            "cv_mae_mean": MetadataValue.float(m["cv_mae_mean"]),
            "baseline_mae_mean": MetadataValue.float(m["baseline_mae_mean"]),
            "runs": m["runs"],
            "molecules": m["molecules"],
            "target": m["target"],
            "folds": MetadataValue.md(_folds_markdown(m)),
            "previous_version": m["previous_version"] or "",
            "duration_s": stored.duration_s,
        }
    )


@asset_check(
    asset=MODEL_KEY,
    name="cv_error_not_regressed",
    description=(
        "Mean leave-one-molecule-out MAE of the latest version <= the previous version's + "
        "max(10 % of it, 0.02 decades) (features/model.py: REGRESSION_MARGIN_REL, REGRESSION_MARGIN_ABS)."
    ),
)
def cv_error_not_regressed(s3: BoundedS3Resource, landing: LandingResource) -> AssetCheckResult:
    from qp_assets.features.model import DEFAULT_PREFIX, latest_metrics, regression_verdict

    metrics = latest_metrics(s3.get_client(), landing.bucket, DEFAULT_PREFIX)
    if metrics is None:
        return AssetCheckResult(passed=False, metadata={"message": "no stored version of the model"})
    verdict = regression_verdict(metrics["cv_mae_mean"], metrics["previous_cv_mae_mean"])
    return AssetCheckResult(
        passed=verdict.passed,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "version": metrics["version"],
            "previous_version": metrics["previous_version"] or "",
            "cv_mae_mean": verdict.current_mae,
            "previous_cv_mae_mean": verdict.previous_mae if verdict.previous_mae is not None else "",
            "allowed_mae": verdict.allowed_mae if verdict.allowed_mae is not None else "",
            "message": verdict.message,
        },
    )


def ml_definitions() -> tuple[list[Any], list[Any]]:
    """(assets, asset checks) of the ML layer, for ``definitions.py``."""
    return [build_ml_table_assets(), convergence_model], [cv_error_not_regressed]
