"""Pure Spark transforms: the raw VQE result DataFrame -> the ten feature tables.

Input ``raw_df`` is the landed Avro read with the v3 contract as reader schema (one row per VQE run,
columns exactly as in ``vqe_result_v3.avsc``; ``timestamp-millis`` -> TimestampType, UTC session), plus
an optional ``source_file`` string column. Every transform returns a DataFrame whose columns, order and
types equal its declared ``schema`` (see ``conform``). Every table carries ``event_date`` (UTC day of the
run's ``event_time``), the table's day partition.

Units: energies in hartree (``*_mha`` in milli-hartree), coordinates in angstrom, times in seconds,
memory in bytes. Keys are real: ``run_id`` plus positional indexes (``iteration`` is the optimizer's own
1-based number; ``parameter_index`` and ``term_index`` are 0-based positions in the contract's arrays).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DataType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from qp_assets.features.columns import describe

NAMESPACE = "quantum_features"
RAW_SOURCE = "raw_vqe_results"  # lineage name of the landed Avro files every table derives from
PARTITION_COLUMN = "event_date"


def _f(name: str, dtype: DataType, nullable: bool = True) -> StructField:
    return StructField(name, dtype, nullable)


def _key(name: str, dtype: DataType) -> StructField:
    return StructField(name, dtype, False)


#: The key every per-run table starts with: the run and its UTC day partition.
RUN_KEY = [_key("run_id", StringType()), _key("event_date", DateType())]

MOLECULES_SCHEMA = StructType(
    RUN_KEY
    + [
        _f("event_time", TimestampType()),
        _f("experiment_id", StringType()),
        _f("molecule_name", StringType()),
        _f("symbols", ArrayType(StringType())),
        _f("coords_angstrom", ArrayType(ArrayType(DoubleType()))),
        _f("num_atoms", IntegerType()),
        _f("charge", IntegerType()),
        _f("multiplicity", IntegerType()),
        _f("input_units", StringType()),
        _f("masses", ArrayType(DoubleType())),
        _f("num_electrons", IntegerType()),
        _f("basis", StringType()),
    ]
)

ANSATZ_INFO_SCHEMA = StructType(
    RUN_KEY
    + [
        _f("event_time", TimestampType()),
        _f("experiment_id", StringType()),
        _f("ansatz_name", StringType()),
        _f("reps", IntegerType()),
        _f("num_parameters", IntegerType()),
        _f("num_qubits", IntegerType()),
        _f("depth", IntegerType()),
        _f("initial_state", StringType()),
        _f("circuit_qasm3", StringType()),
        _f("mapper", StringType()),
        _f("freeze_core", BooleanType()),
        _f("active_electrons", IntegerType()),
        _f("active_orbitals", IntegerType()),
        _f("num_spatial_orbitals", IntegerType()),
        _f("num_alpha", IntegerType()),
        _f("num_beta", IntegerType()),
    ]
)

PERFORMANCE_METRICS_SCHEMA = StructType(
    RUN_KEY
    + [
        _f("event_time", TimestampType()),
        _f("device_used", StringType()),
        _f("backend_method", StringType()),
        _f("hamiltonian_s", DoubleType()),
        _f("mapping_s", DoubleType()),
        _f("vqe_s", DoubleType()),
        _f("total_s", DoubleType()),
        _f("num_iterations", IntegerType()),
        _f("nfev", IntegerType()),
        _f("seconds_per_iteration", DoubleType()),
        _f("snapshot_count", IntegerType()),
        _f("cpu_percent_mean", DoubleType()),
        _f("cpu_percent_max", DoubleType()),
        _f("memory_percent_max", DoubleType()),
        _f("peak_rss_bytes", LongType()),
        _f("gpu_utilization_percent_max", DoubleType()),
        _f("gpu_memory_used_bytes_max", LongType()),
    ]
)

VQE_RESULTS_SCHEMA = StructType(
    RUN_KEY
    + [
        _f("event_time", TimestampType()),
        _f("started_at", TimestampType()),
        _f("experiment_id", StringType()),
        _f("request_id", StringType()),
        _f("molecule_name", StringType()),
        _f("basis", StringType()),
        _f("mapper", StringType()),
        _f("ansatz_name", StringType()),
        _f("ansatz_reps", IntegerType()),
        _f("num_qubits", IntegerType()),
        _f("num_parameters", IntegerType()),
        _f("optimizer_name", StringType()),
        _f("optimizer_options_json", StringType()),
        _f("max_iterations", IntegerType()),
        _f("backend_method", StringType()),
        _f("shots", LongType()),
        _f("device_requested", StringType()),
        _f("device_used", StringType()),
        _f("seed", LongType()),
        _f("hf_energy", DoubleType()),
        _f("exact_energy", DoubleType()),
        _f("exact_method", StringType()),
        _f("nuclear_repulsion_energy", DoubleType()),
        _f("electronic_energy", DoubleType()),
        _f("total_energy", DoubleType()),
        _f("error_vs_exact_mha", DoubleType()),
        _f("error_vs_hf_mha", DoubleType()),
        _f("minimum_iteration_energy", DoubleType()),
        _f("num_iterations", IntegerType()),
        _f("optimizer_success", BooleanType()),
        _f("optimizer_nfev", IntegerType()),
        _f("optimizer_nit", IntegerType()),
        _f("optimizer_message", StringType()),
        _f("total_s", DoubleType()),
        _f("package_versions", MapType(StringType(), StringType(), True)),
        _f("source_file", StringType()),
        _f("experiment_key", StringType()),
        _f("reused_from", StringType()),
    ]
)

_PARAMETER_SCHEMA = StructType(
    RUN_KEY
    + [
        _key("parameter_index", IntegerType()),
        _f("value", DoubleType()),
        _f("experiment_id", StringType()),
        _f("event_time", TimestampType()),
    ]
)
INITIAL_PARAMETERS_SCHEMA = _PARAMETER_SCHEMA
OPTIMAL_PARAMETERS_SCHEMA = _PARAMETER_SCHEMA

VQE_ITERATIONS_SCHEMA = StructType(
    RUN_KEY
    + [
        _key("iteration", IntegerType()),
        _f("energy", DoubleType()),
        _f("std", DoubleType()),
        _f("gradient_norm", DoubleType()),
        _f("parameter_delta_norm", DoubleType()),
        _f("cumulative_min_energy", DoubleType()),
        _f("nfev", IntegerType()),
        _f("error_vs_exact_mha", DoubleType()),
        _f("iteration_timestamp", TimestampType()),
        _f("num_parameters", IntegerType()),
        _f("experiment_id", StringType()),
    ]
)

ITERATION_PARAMETERS_SCHEMA = StructType(
    RUN_KEY
    + [
        _key("iteration", IntegerType()),
        _key("parameter_index", IntegerType()),
        _f("value", DoubleType()),
    ]
)

HAMILTONIAN_TERMS_SCHEMA = StructType(
    RUN_KEY
    + [
        _key("term_index", IntegerType()),
        _f("pauli", StringType()),
        _f("coeff_real", DoubleType()),
        _f("coeff_imag", DoubleType()),
        _f("num_qubits", IntegerType()),
        _f("pauli_weight", IntegerType()),
        _f("experiment_id", StringType()),
    ]
)

PROCESSING_METADATA_SCHEMA = StructType(
    [
        _key("processing_id", StringType()),
        _key("event_date", DateType()),
        _f("dagster_run_id", StringType()),
        _f("processed_at", TimestampType()),
        _f("spark_master", StringType()),
        _f("raw_root", StringType()),
        _f("source_files", ArrayType(StringType())),
        _f("source_file_count", IntegerType()),
        _f("runs", IntegerType()),
        _f("row_counts", MapType(StringType(), LongType(), True)),
        _f("snapshot_ids", MapType(StringType(), LongType(), True)),
        _f("bad_files", ArrayType(StringType())),
        _f("bad_records", IntegerType()),
        _f("bad_record_reasons", MapType(StringType(), LongType(), True)),
        _f("duration_s", DoubleType()),
    ]
)


def conform(df: DataFrame, schema: StructType) -> DataFrame:
    """Select ``schema``'s columns in order, each cast to its declared type (fails on a missing column)."""
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])


def _event_date() -> Column:
    return F.to_date(F.col("event_time"))


def _base(raw_df: DataFrame) -> DataFrame:
    return raw_df.withColumn("event_date", _event_date())


def molecules(raw_df: DataFrame) -> DataFrame:
    """One row per run: the molecule as run (geometry in angstrom), key ``run_id``."""
    df = _base(raw_df).select(
        "run_id",
        "event_date",
        "event_time",
        "experiment_id",
        F.col("molecule.name").alias("molecule_name"),
        F.col("molecule.symbols").alias("symbols"),
        F.col("molecule.coords").alias("coords_angstrom"),
        F.size("molecule.symbols").alias("num_atoms"),
        F.col("molecule.charge").alias("charge"),
        F.col("molecule.multiplicity").alias("multiplicity"),
        F.col("molecule.units").alias("input_units"),
        F.col("molecule.masses").alias("masses"),
        F.col("molecule.num_electrons").alias("num_electrons"),
        "basis",
    )
    return conform(df, MOLECULES_SCHEMA)


def ansatz_info(raw_df: DataFrame) -> DataFrame:
    """One row per run: ansatz (name, reps, size, OpenQASM 3 circuit), mapper and active space."""
    df = _base(raw_df).select(
        "run_id",
        "event_date",
        "event_time",
        "experiment_id",
        F.col("ansatz.name").alias("ansatz_name"),
        F.col("ansatz.reps").alias("reps"),
        F.col("ansatz.num_parameters").alias("num_parameters"),
        F.col("ansatz.num_qubits").alias("num_qubits"),
        F.col("ansatz.depth").alias("depth"),
        F.col("ansatz.initial_state").alias("initial_state"),
        F.col("ansatz.circuit_qasm3").alias("circuit_qasm3"),
        "mapper",
        F.col("active_space.freeze_core").alias("freeze_core"),
        F.col("active_space.active_electrons").alias("active_electrons"),
        F.col("active_space.active_orbitals").alias("active_orbitals"),
        F.col("active_space.num_spatial_orbitals").alias("num_spatial_orbitals"),
        F.col("active_space.num_alpha").alias("num_alpha"),
        F.col("active_space.num_beta").alias("num_beta"),
    )
    return conform(df, ANSATZ_INFO_SCHEMA)


def performance_metrics(raw_df: DataFrame) -> DataFrame:
    """One row per run: timings (s) and aggregates of the run's performance snapshots."""
    snaps = F.coalesce(F.col("performance_snapshots"), F.array())
    n_iter = F.size(F.coalesce(F.col("iterations"), F.array()))

    def agg(expr: Callable[[Column], Column], kind: str) -> Column:
        values = F.transform(snaps, expr)
        if kind == "max":
            return F.array_max(values)
        total = F.aggregate(values, F.lit(0.0), lambda acc, x: acc + x)
        return F.when(F.size(values) > 0, total / F.size(values))

    df = _base(raw_df).select(
        "run_id",
        "event_date",
        "event_time",
        F.col("backend.device_used").alias("device_used"),
        F.col("backend.method").alias("backend_method"),
        F.col("timings.hamiltonian_s").alias("hamiltonian_s"),
        F.col("timings.mapping_s").alias("mapping_s"),
        F.col("timings.vqe_s").alias("vqe_s"),
        F.col("timings.total_s").alias("total_s"),
        n_iter.alias("num_iterations"),
        F.col("optimizer_result.nfev").alias("nfev"),
        F.when(n_iter > 0, F.col("timings.vqe_s") / n_iter).alias("seconds_per_iteration"),
        F.size(snaps).alias("snapshot_count"),
        agg(lambda s: s["cpu_percent"], "mean").alias("cpu_percent_mean"),
        agg(lambda s: s["cpu_percent"], "max").alias("cpu_percent_max"),
        agg(lambda s: s["memory_percent"], "max").alias("memory_percent_max"),
        agg(lambda s: s["process_rss_bytes"], "max").alias("peak_rss_bytes"),
        agg(lambda s: s["gpu_utilization_percent"], "max").alias("gpu_utilization_percent_max"),
        agg(lambda s: s["gpu_memory_used_bytes"], "max").alias("gpu_memory_used_bytes_max"),
    )
    return conform(df, PERFORMANCE_METRICS_SCHEMA)


def vqe_results(raw_df: DataFrame) -> DataFrame:
    """One row per run: configuration, final energies vs references, optimizer status, device, versions.

    ``error_vs_exact_mha`` = (total - exact) * 1000 when the record does not carry it itself.
    """
    iters = F.coalesce(F.col("iterations"), F.array())
    exact = F.col("reference_energies.exact")
    df = _base(raw_df).select(
        "run_id",
        "event_date",
        "event_time",
        "started_at",
        "experiment_id",
        "request_id",
        F.col("molecule.name").alias("molecule_name"),
        "basis",
        "mapper",
        F.col("ansatz.name").alias("ansatz_name"),
        F.col("ansatz.reps").alias("ansatz_reps"),
        F.col("active_space.num_qubits").alias("num_qubits"),
        F.col("ansatz.num_parameters").alias("num_parameters"),
        F.col("optimizer.name").alias("optimizer_name"),
        F.col("optimizer.options_json").alias("optimizer_options_json"),
        F.col("optimizer.max_iterations").alias("max_iterations"),
        F.col("backend.method").alias("backend_method"),
        F.col("backend.shots").alias("shots"),
        F.col("backend.device_requested").alias("device_requested"),
        F.col("backend.device_used").alias("device_used"),
        F.col("backend.seed").alias("seed"),
        F.col("reference_energies.hf").alias("hf_energy"),
        exact.alias("exact_energy"),
        F.col("reference_energies.exact_method").alias("exact_method"),
        F.col("reference_energies.nuclear_repulsion").alias("nuclear_repulsion_energy"),
        "electronic_energy",
        "total_energy",
        F.coalesce(F.col("error_vs_exact_mha"), (F.col("total_energy") - exact) * 1000.0).alias(
            "error_vs_exact_mha"
        ),
        ((F.col("total_energy") - F.col("reference_energies.hf")) * 1000.0).alias("error_vs_hf_mha"),
        F.array_min(F.transform(iters, lambda it: it["energy"])).alias("minimum_iteration_energy"),
        F.size(iters).alias("num_iterations"),
        F.col("optimizer_result.success").alias("optimizer_success"),
        F.col("optimizer_result.nfev").alias("optimizer_nfev"),
        F.col("optimizer_result.nit").alias("optimizer_nit"),
        F.col("optimizer_result.message").alias("optimizer_message"),
        F.col("timings.total_s").alias("total_s"),
        "package_versions",
        _optional_string(raw_df, "source_file"),
        _optional_string(raw_df, "experiment_key"),
        _optional_string(raw_df, "reused_from"),
    )
    return conform(df, VQE_RESULTS_SCHEMA)


def _optional_string(raw_df: DataFrame, name: str) -> Column:
    """Column ``name`` of ``raw_df``, or a null string column when the input has none (raw rows read with
    the plain v3 contract)."""
    if name in raw_df.columns:
        return F.col(name)
    return F.lit(None).cast(StringType()).alias(name)


def _parameters(raw_df: DataFrame, column: str) -> DataFrame:
    df = _base(raw_df).select(
        "run_id",
        "event_date",
        "experiment_id",
        "event_time",
        F.posexplode(column).alias("parameter_index", "value"),
    )
    return conform(df, _PARAMETER_SCHEMA)


def initial_parameters(raw_df: DataFrame) -> DataFrame:
    """One row per (run_id, parameter_index): the optimizer's starting point (0-based index)."""
    return _parameters(raw_df, "initial_parameters")


def optimal_parameters(raw_df: DataFrame) -> DataFrame:
    """One row per (run_id, parameter_index): the optimal parameters found (0-based index)."""
    return _parameters(raw_df, "optimal_parameters")


def vqe_iterations(raw_df: DataFrame) -> DataFrame:
    """One row per (run_id, iteration): energy trace (hartree) and its error vs exact (milli-hartree)."""
    df = (
        _base(raw_df)
        .select(
            "run_id",
            "event_date",
            "experiment_id",
            F.col("reference_energies.exact").alias("_exact"),
            F.explode("iterations").alias("it"),
        )
        .select(
            "run_id",
            "event_date",
            F.col("it.iteration").alias("iteration"),
            F.col("it.energy").alias("energy"),
            F.col("it.std").alias("std"),
            F.col("it.gradient_norm").alias("gradient_norm"),
            F.col("it.parameter_delta_norm").alias("parameter_delta_norm"),
            F.col("it.cumulative_min_energy").alias("cumulative_min_energy"),
            F.col("it.nfev").alias("nfev"),
            ((F.col("it.energy") - F.col("_exact")) * 1000.0).alias("error_vs_exact_mha"),
            F.col("it.timestamp").alias("iteration_timestamp"),
            F.size("it.parameters").alias("num_parameters"),
            "experiment_id",
        )
    )
    return conform(df, VQE_ITERATIONS_SCHEMA)


def iteration_parameters(raw_df: DataFrame) -> DataFrame:
    """One row per (run_id, iteration, parameter_index): the parameter vector at each iteration."""
    df = (
        _base(raw_df)
        .select("run_id", "event_date", F.explode("iterations").alias("it"))
        .select(
            "run_id",
            "event_date",
            F.col("it.iteration").alias("iteration"),
            F.posexplode("it.parameters").alias("parameter_index", "value"),
        )
    )
    return conform(df, ITERATION_PARAMETERS_SCHEMA)


def hamiltonian_terms(raw_df: DataFrame) -> DataFrame:
    """One row per (run_id, term_index): Pauli label (qubit 0 rightmost), complex coefficient (hartree)."""
    df = (
        _base(raw_df)
        .select(
            "run_id",
            "event_date",
            "experiment_id",
            F.posexplode("hamiltonian_terms").alias("term_index", "t"),
        )
        .select(
            "run_id",
            "event_date",
            "term_index",
            F.col("t.pauli").alias("pauli"),
            F.col("t.coeff_real").alias("coeff_real"),
            F.col("t.coeff_imag").alias("coeff_imag"),
            F.length("t.pauli").alias("num_qubits"),
            (F.length("t.pauli") - F.length(F.regexp_replace("t.pauli", "I", ""))).alias("_identity_count"),
            "experiment_id",
        )
        .withColumn("pauli_weight", F.col("num_qubits") - F.col("_identity_count"))
    )
    return conform(df, HAMILTONIAN_TERMS_SCHEMA)


def processing_metadata(spark: SparkSession, rows: list[Mapping[str, Any]]) -> DataFrame:
    """processing_metadata rows (one per built day) from plain dicts keyed by the schema's column names."""
    names = PROCESSING_METADATA_SCHEMA.names
    return spark.createDataFrame([tuple(r.get(n) for n in names) for r in rows], PROCESSING_METADATA_SCHEMA)


@dataclass(frozen=True)
class TableSpec:
    """A feature table: its transform, declared schema, key columns and upstream tables (lineage)."""

    name: str
    transform: Callable[..., DataFrame]
    schema: StructType
    keys: tuple[str, ...]
    depends_on: tuple[str, ...] = (RAW_SOURCE,)
    description: str = ""
    partition_column: str = PARTITION_COLUMN


_SPECS = [
    TableSpec(
        "molecules",
        molecules,
        MOLECULES_SCHEMA,
        ("run_id",),
        description=molecules.__doc__ or "",
    ),
    TableSpec("ansatz_info", ansatz_info, ANSATZ_INFO_SCHEMA, ("run_id",)),
    TableSpec("performance_metrics", performance_metrics, PERFORMANCE_METRICS_SCHEMA, ("run_id",)),
    TableSpec("vqe_results", vqe_results, VQE_RESULTS_SCHEMA, ("run_id",)),
    TableSpec(
        "initial_parameters", initial_parameters, INITIAL_PARAMETERS_SCHEMA, ("run_id", "parameter_index")
    ),
    TableSpec(
        "optimal_parameters", optimal_parameters, OPTIMAL_PARAMETERS_SCHEMA, ("run_id", "parameter_index")
    ),
    TableSpec("vqe_iterations", vqe_iterations, VQE_ITERATIONS_SCHEMA, ("run_id", "iteration")),
    TableSpec(
        "iteration_parameters",
        iteration_parameters,
        ITERATION_PARAMETERS_SCHEMA,
        ("run_id", "iteration", "parameter_index"),
    ),
    TableSpec("hamiltonian_terms", hamiltonian_terms, HAMILTONIAN_TERMS_SCHEMA, ("run_id", "term_index")),
]
DATA_TABLES: tuple[str, ...] = tuple(s.name for s in _SPECS)
_SPECS.append(
    TableSpec(
        "processing_metadata",
        processing_metadata,
        PROCESSING_METADATA_SCHEMA,
        ("processing_id",),
        depends_on=DATA_TABLES,
        description="One row per built day: Dagster run id, source files, row counts, snapshot ids, bad input.",
    )
)
for _spec in _SPECS:
    if not _spec.description:
        object.__setattr__(_spec, "description", (_spec.transform.__doc__ or "").strip().split("\n")[0])

#: All ten tables in build order (processing_metadata last); ``TABLES[name]`` gives the spec.
TABLES: dict[str, TableSpec] = {s.name: s for s in _SPECS}


def select_tables(requested: Sequence[str] | None, registry: Mapping[str, TableSpec], kind: str) -> list[str]:
    """``requested`` in its order (every table of ``registry`` when None or empty); ValueError naming the
    ``kind`` (e.g. ``"ML table"``) and the unknown names."""
    selected = list(requested) if requested else list(registry)
    unknown = [t for t in selected if t not in registry]
    if unknown:
        raise ValueError(f"tables: unknown {kind}(s) {unknown}; known: {list(registry)}")
    return selected


def lineage() -> dict[str, tuple[str, ...]]:
    """Table name -> names it derives from (``raw_vqe_results`` is the landed Avro input)."""
    return {name: spec.depends_on for name, spec in TABLES.items()}


def sql_string(text: str) -> str:
    """``text`` as a Spark SQL string literal (single quotes; backslashes and quotes escaped)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def column_description(spec: TableSpec, column: str) -> str:
    """The description of ``column`` of ``spec`` (``features/columns.py``; keys marked)."""
    return describe(spec.name, column, is_key=column in spec.keys)


def _column_ddl(spec: TableSpec, f: StructField) -> str:
    return (
        f"`{f.name}` {f.dataType.simpleString()}{'' if f.nullable else ' NOT NULL'}"
        f" COMMENT {sql_string(column_description(spec, f.name))}"
    )


def create_table_sql(catalog: str, namespace: str, spec: TableSpec) -> str:
    """``CREATE TABLE IF NOT EXISTS`` DDL (Iceberg, Parquet, identity partition on event_date), every
    column with its description as ``COMMENT`` (Iceberg column doc: PyIceberg and Spark show it)."""
    cols = ",\n  ".join(_column_ddl(spec, f) for f in spec.schema.fields)
    return (
        f"CREATE TABLE IF NOT EXISTS {catalog}.{namespace}.{spec.name} (\n  {cols}\n) USING iceberg\n"
        f"PARTITIONED BY ({spec.partition_column})\n"
        f"TBLPROPERTIES ('format-version'='2', 'write.format.default'='parquet', "
        f"'comment'={sql_string(spec.description)})"
    )


def add_columns_sql(catalog: str, namespace: str, spec: TableSpec, have: set[str]) -> str | None:
    """``ALTER TABLE ... ADD COLUMNS`` for the nullable columns of ``spec`` missing from an existing table
    whose columns are ``have`` (added at the end, with their descriptions), or None when none is missing.
    Raises ValueError for a missing key (non-nullable) column: that needs a new table, not an evolution."""
    missing = [f for f in spec.schema.fields if f.name not in have]
    keys = [f.name for f in missing if not f.nullable]
    if keys:
        raise ValueError(f"table {namespace}.{spec.name} lacks key column(s) {keys}: recreate it")
    if not missing:
        return None
    cols = ", ".join(_column_ddl(spec, f) for f in missing)
    return f"ALTER TABLE {catalog}.{namespace}.{spec.name} ADD COLUMNS ({cols})"
