"""The two ML tables, built with Spark from the Iceberg feature tables (never from the landed files).

* ``ml_iteration_features``: one row per (run_id, iteration): energy, its change from the previous
  iteration, gradient and step norms, rolling mean / standard deviation of the energy over the last
  ``ROLLING_WINDOW`` iterations, distance to the exact energy (milli-hartree).
* ``ml_run_summary``: one row per run: the configuration (molecule, basis, mapper, ansatz, initial state /
  parameter strategy, optimizer, seed), the convergence iteration (first iteration within
  ``CHEMICAL_ACCURACY_MHA`` of exact), the final error, VQE time, device, qubits and parameters. It is the
  training data of the convergence model (``features/model.py``).

Both are daily-partitioned by ``event_date`` like the ten tables and live in the same namespace, but in
their own registry (``ML_TABLES``), so the ten-table contract (``transforms.TABLES``: the feature
multi-asset, its checks, ``build_days``) stays as it is. Column descriptions: ``features/columns.py``.

``build_ml_days(days)`` reads exactly ``event_date IN days`` of the upstream tables and overwrites exactly
those days of the ML tables (re-running a day never duplicates rows, never touches other days), then
deletes ML rows of runs that are no longer in ``vqe_results`` (a run the feature build superseded by a
newer result of the same request in another day). A day whose upstream is empty ends up empty.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BooleanType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from qp_assets.features.transforms import (
    NAMESPACE,
    RUN_KEY,
    TABLES,
    TableSpec,
    conform,
    create_table_sql,
    select_tables,
)
from qp_assets.settings import Settings

#: Chemical accuracy, milli-hartree (1 kcal/mol): a run has converged at the first iteration this close to
#: the exact energy.
CHEMICAL_ACCURACY_MHA = 1.6
#: Iterations in the rolling energy statistics (the current one and the 4 before it).
ROLLING_WINDOW = 5
#: Snapshot summary property carrying the build's tag (``snapshot-property.<this>`` write option).
BUILD_PROPERTY = "qp-ml-build"


def _f(name: str, dtype: Any) -> StructField:
    return StructField(name, dtype, True)


def _key(name: str, dtype: Any) -> StructField:
    return StructField(name, dtype, False)


ML_ITERATION_FEATURES_SCHEMA = StructType(
    RUN_KEY
    + [
        _key("iteration", IntegerType()),
        _f("experiment_id", StringType()),
        _f("molecule_name", StringType()),
        _f("energy", DoubleType()),
        _f("energy_delta", DoubleType()),
        _f("gradient_norm", DoubleType()),
        _f("parameter_delta_norm", DoubleType()),
        _f(f"energy_rolling_mean_{ROLLING_WINDOW}", DoubleType()),
        _f(f"energy_rolling_std_{ROLLING_WINDOW}", DoubleType()),
        _f("error_vs_exact_mha", DoubleType()),
        _f("within_chemical_accuracy", BooleanType()),
    ]
)

ML_RUN_SUMMARY_SCHEMA = StructType(
    RUN_KEY
    + [
        _f("event_time", TimestampType()),
        _f("request_id", StringType()),
        _f("experiment_id", StringType()),
        _f("molecule_name", StringType()),
        _f("basis", StringType()),
        _f("mapper", StringType()),
        _f("ansatz_name", StringType()),
        _f("ansatz_reps", IntegerType()),
        _f("initial_state", StringType()),
        _f("optimizer_name", StringType()),
        _f("max_iterations", IntegerType()),
        _f("backend_method", StringType()),
        _f("shots", LongType()),
        _f("seed", LongType()),
        _f("device_used", StringType()),
        _f("num_qubits", IntegerType()),
        _f("num_parameters", IntegerType()),
        _f("num_iterations", IntegerType()),
        _f("convergence_iteration", IntegerType()),
        _f("error_vs_exact_mha", DoubleType()),
        _f("vqe_s", DoubleType()),
        _f("optimizer_success", BooleanType()),
    ]
)


def _within_accuracy(error_mha: Column) -> Column:
    return F.abs(error_mha) <= F.lit(CHEMICAL_ACCURACY_MHA)


def _reused_runs(results: DataFrame) -> DataFrame:
    """``run_id`` of the results reused from an earlier computation (``reused_from`` set): they repeat that
    computation's numbers, so counted again they would weigh it twice in the convergence model's training
    data. None for a ``vqe_results`` table from before result reuse."""
    if "reused_from" not in results.columns:
        return results.select("run_id").limit(0)
    return results.where(F.col("reused_from").isNotNull()).select("run_id")


def ml_iteration_features(inputs: Mapping[str, DataFrame]) -> DataFrame:
    """One row per (run_id, iteration) of each computed run (reused results left out): energy trace with
    deltas, norms and rolling statistics (hartree)."""
    its = inputs["vqe_iterations"].join(_reused_runs(inputs["vqe_results"]), "run_id", "left_anti")
    names = inputs["vqe_results"].select("run_id", "molecule_name")
    by_run = Window.partitionBy("run_id").orderBy("iteration")
    rolling = by_run.rowsBetween(-(ROLLING_WINDOW - 1), Window.currentRow)
    df = its.join(names, "run_id", "left").select(
        "run_id",
        "event_date",
        "iteration",
        "experiment_id",
        "molecule_name",
        "energy",
        (F.col("energy") - F.lag("energy").over(by_run)).alias("energy_delta"),
        "gradient_norm",
        "parameter_delta_norm",
        F.avg("energy").over(rolling).alias(f"energy_rolling_mean_{ROLLING_WINDOW}"),
        F.stddev_pop("energy").over(rolling).alias(f"energy_rolling_std_{ROLLING_WINDOW}"),
        "error_vs_exact_mha",
        _within_accuracy(F.col("error_vs_exact_mha")).alias("within_chemical_accuracy"),
    )
    return conform(df, ML_ITERATION_FEATURES_SCHEMA)


def ml_run_summary(inputs: Mapping[str, DataFrame]) -> DataFrame:
    """One row per computed run (reused results left out): configuration, convergence iteration, final
    error (mHa), VQE time (s), device."""
    converged = (
        inputs["vqe_iterations"]
        .where(_within_accuracy(F.col("error_vs_exact_mha")))
        .groupBy("run_id")
        .agg(F.min("iteration").alias("convergence_iteration"))
    )
    ansatz = inputs["ansatz_info"].select("run_id", "initial_state")
    perf = inputs["performance_metrics"].select("run_id", "vqe_s")
    results = inputs["vqe_results"]
    df = (
        results.join(_reused_runs(results), "run_id", "left_anti")
        .join(ansatz, "run_id", "left")
        .join(perf, "run_id", "left")
        .join(converged, "run_id", "left")
    )
    return conform(df, ML_RUN_SUMMARY_SCHEMA)


_ML_SPECS = [
    TableSpec(
        "ml_iteration_features",
        ml_iteration_features,
        ML_ITERATION_FEATURES_SCHEMA,
        ("run_id", "iteration"),
        depends_on=("vqe_iterations", "vqe_results"),
        description=(ml_iteration_features.__doc__ or "").strip(),
    ),
    TableSpec(
        "ml_run_summary",
        ml_run_summary,
        ML_RUN_SUMMARY_SCHEMA,
        ("run_id",),
        depends_on=("vqe_results", "ansatz_info", "performance_metrics", "vqe_iterations"),
        description=(ml_run_summary.__doc__ or "").strip(),
    ),
]
#: The two ML tables; ``ML_TABLES[name]`` gives the spec (``depends_on``: feature tables of ``TABLES``).
ML_TABLES: dict[str, TableSpec] = {s.name: s for s in _ML_SPECS}


@dataclass
class MlBuildResult:
    """Outcome of ``build_ml_days``: rows per table and day after the build, snapshots, runs removed."""

    days: list[date]
    row_counts: dict[str, dict[str, int]] = field(default_factory=dict)  #: table -> ISO day -> rows
    snapshot_ids: dict[str, int] = field(default_factory=dict)
    stale_runs_deleted: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def as_metadata(self) -> dict[str, Any]:
        """JSON-able dict (Dagster metadata)."""
        return {
            "days": [d.isoformat() for d in self.days],
            "row_counts": self.row_counts,
            "snapshot_ids": {t: str(s) for t, s in self.snapshot_ids.items()},
            "stale_runs_deleted": self.stale_runs_deleted,
            "duration_s": self.duration_s,
        }


def _ident(catalog: str, namespace: str, table: str) -> str:
    return f"{catalog}.{namespace}.{table}"


def _ensure(spark: SparkSession, catalog: str, namespace: str, specs: Sequence[TableSpec]) -> None:
    """Create the namespace and any of ``specs`` missing (one listing query when all exist)."""
    try:
        existing = {row["tableName"] for row in spark.sql(f"SHOW TABLES IN {catalog}.{namespace}").collect()}
    except Exception:  # noqa: BLE001 - the namespace does not exist yet: create it and every table
        spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {catalog}.{namespace}")
        existing = set()
    for spec in specs:
        if spec.name not in existing:
            spark.sql(create_table_sql(catalog, namespace, spec))


def _sql_list(values: Iterable[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def build_ml_days(
    days: Iterable[date],
    spark: SparkSession | None = None,
    settings: Settings | None = None,
    *,
    namespace: str = NAMESPACE,
    tables: Sequence[str] | None = None,
) -> MlBuildResult:
    """Build the (selected) ML tables for ``days`` from the feature tables of those days; see the module doc.

    Upstream feature tables that do not exist yet are created empty (the days then build empty).
    Raises ValueError naming an unknown table.
    """
    started = time.monotonic()
    settings = settings or Settings.from_env()
    if spark is None:
        from qp_assets.features.spark import get_spark_session

        spark = get_spark_session(settings)
    selected = select_tables(tables, ML_TABLES, "ML table")
    target = sorted(set(days))
    result = MlBuildResult(days=target)
    if not target:
        return result
    catalog = settings.iceberg_catalog_name
    upstream = sorted({u for t in selected for u in ML_TABLES[t].depends_on} | {"vqe_results"})
    _ensure(spark, catalog, namespace, [TABLES[u] for u in upstream] + [ML_TABLES[t] for t in selected])

    day_filter = F.col("event_date").isin(*[F.lit(d) for d in target])
    inputs = {u: spark.table(_ident(catalog, namespace, u)).where(day_filter) for u in upstream}
    tag = uuid.uuid4().hex

    def write(name: str) -> None:
        ML_TABLES[name].transform(inputs).writeTo(_ident(catalog, namespace, name)).option(
            f"snapshot-property.{BUILD_PROPERTY}", tag
        ).overwrite(day_filter)

    # both tables at once: each write is a short Spark job plus a catalog commit (waits overlap)
    with ThreadPoolExecutor(max_workers=len(selected), thread_name_prefix="qp-ml-write") as pool:
        for future in [pool.submit(write, name) for name in selected]:
            future.result()

    idents = {name: _ident(catalog, namespace, name) for name in selected}
    results_ident = _ident(catalog, namespace, "vqe_results")
    stale_sql = " UNION ".join(f"SELECT DISTINCT run_id FROM {i}" for i in idents.values())
    stale = spark.sql(
        f"SELECT run_id FROM ({stale_sql}) LEFT ANTI JOIN {results_ident} r USING (run_id)"
    ).collect()
    result.stale_runs_deleted = sorted(r["run_id"] for r in stale)
    if result.stale_runs_deleted:
        for ident in idents.values():
            spark.sql(f"DELETE FROM {ident} WHERE run_id IN ({_sql_list(result.stale_runs_deleted)})")

    # rows per built day and the current snapshot of each table, in one query
    day_list = ", ".join(f"DATE '{d.isoformat()}'" for d in target)
    answer = spark.sql(
        " UNION ALL ".join(
            f"SELECT '{name}' AS t, CAST(event_date AS STRING) AS d, count(*) AS n FROM {ident} "
            f"WHERE event_date IN ({day_list}) GROUP BY event_date "
            f"UNION ALL SELECT '{name}' AS t, NULL AS d, snapshot_id AS n FROM {ident}.refs WHERE name = 'main'"
            for name, ident in idents.items()
        )
    ).collect()
    result.row_counts = {name: {d.isoformat(): 0 for d in target} for name in selected}
    for row in answer:
        if row["d"] is None:
            result.snapshot_ids[row["t"]] = int(row["n"])
        else:
            result.row_counts[row["t"]][row["d"]] = int(row["n"])
    result.duration_s = round(time.monotonic() - started, 3)
    return result
