"""The ten Iceberg feature tables as one subsettable, daily-partitioned ``multi_asset``.

``qp_assets.features.build.build_days`` writes the selected tables of a range of days in one Spark pass,
so one multi_asset (``can_subset=True``) is the natural shape: a run materializes any subset of the ten
tables for its partition window, a date-range backfill is one run (``BackfillPolicy.single_run()``), and
each table overwrites exactly the days of the window. Lineage follows ``TableSpec.depends_on``: the nine
data tables derive from the landed raw results, ``processing_metadata`` from the nine.
"""

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    AutomationCondition,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableColumnConstraints,
    TableSchema,
    multi_asset,
)

from qp_assets.assets.partitions import (
    daily_partitions,
    days_in_window,
    feature_freshness_policy,
    feature_retry_policy,
)
from qp_assets.assets.run_tags import FEATURE_GROUP
from qp_assets.features.transforms import RAW_SOURCE, TABLES, column_description
from qp_assets.resources.core import BoundedS3Resource, IcebergCatalogResource, LandingResource, SparkResource
from qp_assets.sensors.landing import landed_per_day
from qp_assets.settings import load_env

#: Metadata key of each feature materialization of one day: the landing signature (files:bytes:newest of
#: the day's landed objects, ``DayLanding.signature``) listed before the build that produced it, i.e. every
#: file it covers. The landing sensor compares it with the day's current signature.
LANDING_SIGNATURE = "landing_signature"

R = TypeVar("R")

RAW_ASSET_KEY = AssetKey(RAW_SOURCE)


def feature_asset_key(table: str) -> AssetKey:
    """``quantum_features/<table>``."""
    return AssetKey([FEATURE_GROUP, table])


def table_of_key(key: AssetKey) -> str:
    return key.path[-1]


def column_schema(spec) -> TableSchema:
    """A table's columns for the UI (``spec``: a feature or ML TableSpec): Spark type, nullability and the
    description of ``qp_assets/features/columns.py`` (key columns start with ``Key.``)."""
    return TableSchema(
        columns=[
            TableColumn(
                name=f.name,
                type=f.dataType.simpleString(),
                constraints=TableColumnConstraints(nullable=f.nullable),
                description=column_description(spec, f.name),
            )
            for f in spec.schema.fields
        ]
    )


def latest_builds(instance: Any, days: Iterable[str]) -> dict[str, tuple[str, str | None]]:
    """Day -> (run id, ``LANDING_SIGNATURE`` it covers or None) of each day's latest ``vqe_results``
    materialization (one event query per day; days never built are left out)."""
    from dagster import AssetRecordsFilter

    built = {}
    for day in days:
        found = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=feature_asset_key("vqe_results"), asset_partitions=[day]), limit=1
        ).records
        if found:
            entry = found[0].asset_materialization.metadata.get(LANDING_SIGNATURE)
            built[day] = (found[0].run_id, entry.value if entry is not None else None)
    return built


def feature_specs(automation_condition: AutomationCondition | None = None) -> list[AssetSpec]:
    """One AssetSpec per table, with lineage, column schema, the Iceberg identifier and
    ``automation_condition`` (``QP_FEATURE_TRIGGER=automation``, see ``assets.automation``)."""
    specs = []
    for name, spec in TABLES.items():
        deps = [RAW_ASSET_KEY if d == RAW_SOURCE else feature_asset_key(d) for d in spec.depends_on]
        specs.append(
            AssetSpec(
                key=feature_asset_key(name),
                deps=deps,
                group_name=FEATURE_GROUP,
                description=spec.description,
                kinds={"iceberg", "spark"},
                metadata={
                    "dagster/column_schema": column_schema(TABLES[name]),
                    "keys": list(spec.keys),
                    "partition_column": spec.partition_column,
                },
                skippable=True,
                freshness_policy=feature_freshness_policy(),
                automation_condition=automation_condition,
            )
        )
    return specs


def _preview(iceberg: IcebergCatalogResource, table: str, day: Any, limit: int = 5) -> str | None:
    """Markdown of the first ``limit`` rows of ``table`` on ``day`` (read back through PyIceberg)."""
    try:
        from qp_assets.features.catalog import read_rows

        rows = read_rows(
            table, day=day, limit=limit, settings=iceberg.settings(), namespace=iceberg.namespace
        )
    except Exception as exc:  # a preview must never fail the materialization
        return f"preview unavailable: {exc}"
    cols = [c for c in rows.column_names if not c.startswith(("coords", "package_versions", "source_files"))][
        :8
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for rec in rows.select(cols).to_pylist():
        lines.append("| " + " | ".join(str(rec[c])[:40] for c in cols) + " |")
    return "\n".join(lines)


def build_until_caught_up(
    build: Callable[[], R], signature: Callable[[], str], budget_s: float, log: Any = None
) -> tuple[R, str, int]:
    """Run ``build()`` after reading ``signature()`` (what has landed); while the signature changed during a
    build, build again, starting no new round once ``budget_s`` seconds have passed since the first one.

    Returns (the last build's result, the signature it covers, rounds). A file that lands while a build runs
    is thus built by the same run a few seconds later, without a new run's queueing, process start and
    checks (about 4-9 s on 2 cores); what lands after the last round is left to the landing sensor.
    """
    deadline = time.monotonic() + budget_s
    covered = signature()
    result, rounds = build(), 1
    while time.monotonic() < deadline:
        now = signature()
        if now == covered:
            break
        if log is not None:
            log.info("new files landed during the build (%s -> %s): building again", covered, now)
        covered, result, rounds = now, build(), rounds + 1
    return result, covered, rounds


def materialize_feature_tables(
    context: AssetExecutionContext,
    spark: SparkResource,
    iceberg: IcebergCatalogResource,
    landing: LandingResource,
    s3: BoundedS3Resource,
) -> Iterator[MaterializeResult]:
    """Body of the multi_asset (module-level so tests and docs can refer to it).

    A one-day run catches up (``build_until_caught_up``, for up to ``QP_FEATURE_CATCH_UP_S`` seconds) with
    the files that land while it builds, and records the landing signature it covers
    (``LANDING_SIGNATURE``) on every table it materializes."""
    from qp_assets.features.build import build_days

    window = context.partition_time_window
    days = days_in_window(window.start, window.end)
    selected = [table_of_key(k) for k in context.selected_asset_keys]
    ordered = [t for t in TABLES if t in selected]
    settings = iceberg.settings()
    context.log.info("building %s for %s..%s (%d day(s))", ordered, days[0], days[-1], len(days))
    session = spark.get_session(settings)

    def build() -> list:
        return build_days(
            days,
            session,
            settings,
            tables=ordered,
            run_id=context.run.run_id,
            raw_root=landing.raw_root(),
            namespace=iceberg.namespace,
        )

    covered: str | None = None
    if len(days) == 1:
        client = s3.get_client()

        def signature() -> str:
            return landed_per_day(client, landing.bucket, landing.raw_prefix, days)[days[0]].signature()

        results, covered, rounds = build_until_caught_up(
            build, signature, load_env().feature_catch_up_s, context.log
        )
        if rounds > 1:
            context.log.info(
                "built %s %d times: it caught up with the files landed meanwhile", days[0], rounds
            )
    else:
        results = build()
    for table in ordered:
        rows_per_day = {r.day.isoformat(): r.row_counts.get(table, 0) for r in results}
        snapshots = sorted({r.snapshot_ids[table] for r in results if table in r.snapshot_ids})
        metadata: dict[str, Any] = {
            "dagster/row_count": sum(rows_per_day.values()),
            "rows_per_day": rows_per_day,
            "iceberg_table": f"{settings.iceberg_catalog_name}.{iceberg.namespace}.{table}",
            "snapshot_ids": [str(s) for s in snapshots],
            "days": [d.isoformat() for d in days],
            "runs": sum(r.runs for r in results),
            "source_files": sum(len(r.source_files) for r in results),
            "bad_files": sum(len(r.bad_files) for r in results),
            "bad_records": sum(r.bad_records for r in results),
            "messages": "; ".join(r.message for r in results),
        }
        if snapshots:
            metadata["snapshot_id"] = str(snapshots[-1])
        if covered is not None:
            metadata[LANDING_SIGNATURE] = covered
        written = [r.day for r in results if not r.empty]
        if written:
            metadata["preview"] = MetadataValue.md(_preview(iceberg, table, written[-1]) or "")
        yield MaterializeResult(asset_key=feature_asset_key(table), metadata=metadata)


def daily_spark_multi_asset(name: str, specs: list[AssetSpec]):
    """Decorator of a daily-partitioned Spark multi_asset (the feature tables, the ML tables): subsettable,
    one run per backfill, the feature retry policy, the ``spark`` pool. Built on call so env-driven
    partitions and retry policy are read at load time."""
    return multi_asset(
        name=name,
        specs=specs,
        can_subset=True,
        partitions_def=daily_partitions(),
        backfill_policy=BackfillPolicy.single_run(),
        retry_policy=feature_retry_policy(),
        pool="spark",
        op_tags={"qp/resource": "spark"},
    )


def build_feature_assets(automation_condition: AutomationCondition | None = None):
    """The multi_asset over :func:`materialize_feature_tables` (built on call so env-driven partitions /
    retry policy are read at load time), each table with ``automation_condition``."""
    return daily_spark_multi_asset("feature_tables", feature_specs(automation_condition))(
        materialize_feature_tables
    )
