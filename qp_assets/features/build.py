"""Build the feature tables for one day (or a range of days) from the landed raw files.

``build_days(days)`` is the entry point the Dagster assets and ``qp features build`` call (``build_day(day)``
is one day of it). For each day:

1. list the landed files of ``day`` across all topics (plus the next ``late_days`` day folders, for runs
   that finished before midnight but landed after it) and read them with the v3 reader schema;
2. set aside non-Avro files and records violating the contract (missing run_id / event_time, negative
   iteration): they are counted and reported, the good records still land;
3. keep runs whose ``event_time`` falls on ``day``, one per ``request_id`` across all days (its latest
   result: a re-run of a request replaces its older result, in whatever day that one lies), run the nine
   pure transforms;
4. overwrite exactly ``event_date = day`` in each table (so re-running a day never duplicates rows and
   never touches other days); if any table write fails, the days already written get back their
   previous rows (no partial day), without undoing other runs' commits; then write the result-reuse
   index object from the committed ``vqe_results`` (:func:`write_reuse_index`, ``quantum_features`` only);
5. append one ``processing_metadata`` row: Dagster run id, source files, rows per table, snapshot ids,
   bad files / records.

A day with no landed files writes nothing and says so. ``build_days`` does the same for many days in one
Spark job per table (a backfill).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from qp_assets.features import raw as raw_io
from qp_assets.features.spark import describe_master, get_spark_session, is_remote
from qp_assets.features.transforms import (
    DATA_TABLES,
    NAMESPACE,
    TABLES,
    add_columns_sql,
    create_table_sql,
    select_tables,
)
from qp_assets.landing import DAY_PATTERN, day_of, day_suffix, read_first_landed_day, record_landed_days
from qp_assets.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class DayBuildResult:
    """Outcome of building one day. Row counts are rows of that day in each table after the build."""

    day: date
    empty: bool
    message: str
    source_files: list[str] = field(default_factory=list)
    bad_files: list[str] = field(default_factory=list)
    bad_records: int = 0
    bad_record_reasons: dict[str, int] = field(default_factory=dict)
    duplicate_runs_dropped: int = 0
    runs: int = 0
    row_counts: dict[str, int] = field(default_factory=dict)
    snapshot_ids: dict[str, int] = field(default_factory=dict)
    processing_id: str | None = None
    #: experiment keys in the result-reuse index this build wrote (None: not written, see the log)
    reuse_index_keys: int | None = None
    duration_s: float = 0.0

    def as_metadata(self) -> dict[str, Any]:
        """Plain JSON-able dict (for Dagster MaterializeResult metadata and the CLI)."""
        out = asdict(self)
        out["day"] = self.day.isoformat()
        return out


def table_identifier(catalog: str, namespace: str, table: str) -> str:
    return f"{catalog}.{namespace}.{table}"


def ensure_tables(
    spark: SparkSession, catalog: str, namespace: str = NAMESPACE, tables: Iterable[str] | None = None
) -> None:
    """Create the namespace and the (selected) tables if missing, and add the columns an existing table
    lacks (a column added to a table's schema after the table was created, e.g. ``vqe_results.reused_from``;
    idempotent).

    One listing query plus one schema look-up per existing table when everything exists (the usual case),
    one statement per missing table or column set otherwise.
    """
    wanted = list(tables or TABLES)
    try:
        existing = {row["tableName"] for row in spark.sql(f"SHOW TABLES IN {catalog}.{namespace}").collect()}
    except Exception:  # noqa: BLE001 - the namespace does not exist yet (or cannot be listed): create all
        spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {catalog}.{namespace}")
        existing = set()
    for name in wanted:
        if name not in existing:
            spark.sql(create_table_sql(catalog, namespace, TABLES[name]))
            continue
        have = set(spark.table(table_identifier(catalog, namespace, name)).columns)
        evolve = add_columns_sql(catalog, namespace, TABLES[name], have)
        if evolve:
            log.info("adding columns to %s.%s: %s", namespace, name, evolve)
            spark.sql(evolve)


def current_snapshots(spark: SparkSession, identifiers: Sequence[str]) -> dict[str, tuple[int, int]]:
    """identifier -> (current snapshot id, records that snapshot added), for tables that have one.

    One Spark query over the tables' ``refs`` and ``snapshots`` metadata tables (works in-process and over
    Spark Connect; tables never written are absent from the answer)."""
    if not identifiers:
        return {}
    parts = [
        f"SELECT '{ident}' AS ident, s.snapshot_id AS id, s.summary['added-records'] AS added "
        f"FROM {ident}.refs r JOIN {ident}.snapshots s ON r.snapshot_id = s.snapshot_id WHERE r.name = 'main'"
        for ident in identifiers
    ]
    rows = spark.sql(" UNION ALL ".join(parts)).collect()
    return {r["ident"]: (int(r["id"]), int(r["added"] or 0)) for r in rows}


def current_snapshot_id(spark: SparkSession, identifier: str) -> int | None:
    """The table's current snapshot id (None for a table never written)."""
    found = current_snapshots(spark, [identifier]).get(identifier)
    return found[0] if found else None


def snapshot_as_of(spark: SparkSession, identifier: str, epoch_ms: int) -> int | None:
    """The snapshot that was current at ``epoch_ms`` (None if the table had none then), from ``history``."""
    rows = spark.sql(
        f"SELECT snapshot_id FROM {identifier}.history WHERE made_current_at <= timestamp_millis({int(epoch_ms)}) "
        "ORDER BY made_current_at DESC LIMIT 1"
    ).collect()
    return int(rows[0][0]) if rows else None


#: Snapshot summary property carrying the build's tag (``snapshot-property.<this>`` write option).
BUILD_PROPERTY = "qp-build"


def _rows_written(
    spark: SparkSession, identifiers: Sequence[str], days: list[date], build_tag: str
) -> dict[str, tuple[int | None, dict[date, int]]]:
    """identifier -> (the snapshot this build's overwrite committed, rows per day), from metadata only, in
    one query for all tables when one day was built (the rows that snapshot added are the day's rows,
    whatever other runs committed since); per-day counts of the current partitions for several days."""
    parts = [
        f"SELECT '{ident}' AS ident, snapshot_id AS id, summary['added-records'] AS added "
        f"FROM {ident}.snapshots WHERE summary['{BUILD_PROPERTY}'] = '{build_tag}'"
        for ident in identifiers
    ]
    snaps = {
        r["ident"]: (int(r["id"]), int(r["added"] or 0))
        for r in spark.sql(" UNION ALL ".join(parts)).collect()
    }
    out: dict[str, tuple[int | None, dict[date, int]]] = {}
    for ident in identifiers:
        if ident not in snaps:
            out[ident] = (None, {d: 0 for d in days})
        elif len(days) == 1:
            out[ident] = (snaps[ident][0], {days[0]: snaps[ident][1]})
        else:
            rows = spark.sql(
                f"SELECT partition.event_date AS d, record_count AS n FROM {ident}.partitions"
            ).collect()
            counts = {r["d"]: int(r["n"]) for r in rows}
            out[ident] = (snaps[ident][0], {d: counts.get(d, 0) for d in days})
    return out


def _rollback(
    spark: SparkSession,
    catalog: str,
    namespace: str,
    tables: Sequence[str],
    started_ms: int,
    days: list[date],
    superseded_deleted: dict[str, list[str]] | None = None,
) -> list[str]:
    """Undo this build's own writes, and only them; returns the tables it could not restore.

    For each of ``tables`` (those this build started writing, at epoch ``started_ms``), the built ``days``
    get back the rows they had in the snapshot current at ``started_ms`` (an overwrite of exactly those
    days), and runs this build deleted from other days (``superseded_deleted[table]``) are re-appended
    from it. A table this build never committed to is left alone. Commits other runs made in the meantime
    (another day's build on a PostgreSQL catalog) stay: unlike ``rollback_to_snapshot``, this never moves
    the table back past them.

    Stops at the first restore that fails (the session or the storage is down, mostly: a killed Spark
    Connect server, S3 unreachable) and returns that table and those not tried yet, for the caller to
    retry on a new session (``_write_data_tables``); restores are idempotent (overwrites of exactly
    ``days``). An empty list: every table restored.
    """
    superseded_deleted = superseded_deleted or {}
    in_days = F.col("event_date").isin(*[F.lit(d) for d in days])
    for name in tables:
        ident = table_identifier(catalog, namespace, name)
        try:
            snap = snapshot_as_of(spark, ident, started_ms)
            if current_snapshot_id(spark, ident) == snap and name not in superseded_deleted:
                continue  # this build's write to it never committed: nothing to undo
            if snap is None:  # the table was empty: remove what this build wrote
                day_list = ", ".join(f"DATE '{d.isoformat()}'" for d in days)
                spark.sql(f"DELETE FROM {ident} WHERE event_date IN ({day_list})")
                continue
            previous = spark.sql(f"SELECT * FROM {ident} VERSION AS OF {snap}")
            previous.where(in_days).writeTo(ident).overwrite(in_days)
            runs = superseded_deleted.get(name)
            if runs:
                previous.where(F.col("run_id").isin(*runs) & ~in_days).writeTo(ident).append()
            log.warning("restored %s for %s from snapshot %s", ident, [d.isoformat() for d in days], snap)
        except Exception as exc:  # noqa: BLE001 - reported to the caller, which re-raises the original error
            log.warning("rollback of %s failed: %s", ident, str(exc).splitlines()[0][:300])
            return list(tables[tables.index(name) :])  # the session or the storage is down: retry them all
    return []


def build_day(day: date, *args: Any, **kwargs: Any) -> DayBuildResult:
    """Build all (or the selected) feature tables for ``day``: ``build_days([day], ...)[0]``, with the same
    further arguments; see the module doc."""
    return build_days([day], *args, **kwargs)[0]


def build_days(
    days: Iterable[date],
    spark: SparkSession | None = None,
    settings: Settings | None = None,
    tables: Sequence[str] | None = None,
    run_id: str | None = None,
    *,
    raw_root: str | None = None,
    namespace: str = NAMESPACE,
    late_days: int = 1,
) -> list[DayBuildResult]:
    """Build several days in one pass (one overwrite per table covering exactly those days).

    Returns one DayBuildResult per requested day, in date order. ``run_id`` is the Dagster run id recorded
    in processing_metadata. ``raw_root`` defaults to ``s3a://<bucket>/raw/topics``; ``namespace`` to
    ``quantum_features`` (both overridable for tests).
    """
    started = time.monotonic()
    settings = settings or Settings.from_env()
    if spark is None:
        spark = get_spark_session(settings)
    selected = select_tables(tables, TABLES, "table")
    catalog = settings.iceberg_catalog_name
    raw_root = raw_root or raw_io.default_raw_root(settings)
    target_days = sorted(set(days))
    if not target_days:
        return []

    # 1. files: each day's own folder plus the following late_days folders.
    own_files: dict[date, list[str]] = {d: raw_io.list_day_files(raw_root, d, settings) for d in target_days}
    all_files = set()
    for d in target_days:
        all_files.update(own_files[d])
        for k in range(1, late_days + 1):
            extra = d + timedelta(days=k)
            if extra not in own_files:
                own_files.setdefault(extra, [])
                all_files.update(raw_io.list_day_files(raw_root, extra, settings))
    results = {d: DayBuildResult(day=d, empty=True, message="") for d in target_days}
    for d in target_days:
        if not own_files[d]:
            results[d].message = f"no landed files under {raw_root}/*/{day_suffix(d)}: nothing written"

    read = raw_io.read_raw(spark, sorted(all_files), settings)
    for uri in read.bad_files:
        d = day_of(uri)
        if d in results:
            results[d].bad_files.append(uri)
    good = None
    clashes: list[Any] = []
    if read.df is None:
        for d in target_days:
            if own_files[d]:
                results[
                    d
                ].message = (
                    f"no readable Avro among {len(own_files[d])} landed file(s): no data table written"
                )
    else:
        checked = read.df.withColumn("_violation", raw_io.violation_reason()).withColumn(
            "_file_day",
            F.to_date(
                F.concat_ws("-", *[F.regexp_extract("source_file", DAY_PATTERN, i) for i in (1, 2, 3)])
            ),
        )
        day_lits = [F.lit(d) for d in target_days]
        in_days = checked.where(F.col("_violation").isNull()).withColumn(
            "event_date", F.to_date("event_time")
        )
        in_days = in_days.where(F.col("event_date").isin(*day_lits))
        # one row per request (its latest result); records without a request_id (older schemas) per run
        latest_first = Window.partitionBy(F.coalesce("request_id", "run_id")).orderBy(
            F.col("event_time").desc(), F.col("run_id").desc(), F.col("source_file").desc()
        )
        ranked = in_days.withColumn("_rank", F.row_number().over(latest_first))
        good = ranked.where(F.col("_rank") == 1).drop("_rank", "_violation", "_file_day", "event_date")
        good = good.persist()
        # While Spark counts the days (below), the catalog side is prepared on a second thread: the tables
        # exist, and which of these requests already have a row in another day.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="qp-catalog") as side:
            clashes_future = side.submit(
                _prepare_catalog, spark, catalog, namespace, selected, good, target_days
            )
            _count_days(checked, ranked, target_days, results)
            clashes = clashes_future.result()
    if good is None:
        ensure_tables(spark, catalog, namespace, selected)
    for d in target_days:
        res = results[d]
        res.source_files = sorted(set(res.source_files) | set(own_files[d]))
        if res.runs == 0 and own_files[d] and not res.message:
            res.message = f"{len(own_files[d])} landed file(s) but no valid run of {d}: no data table written"

    write_days = [d for d in target_days if results[d].runs > 0]
    data_tables = [t for t in selected if t in DATA_TABLES]
    superseded: list[str] = []
    to_write = good
    if write_days and good is not None:
        to_write, superseded = _latest_result_per_request(good, clashes, results)
        write_days = [d for d in target_days if results[d].runs > 0]
    if write_days and data_tables and to_write is not None:
        _write_data_tables(
            spark, to_write, catalog, namespace, data_tables, write_days, results, superseded,
            # a Spark Connect session dies with its server: restore on the restarted one (or in-process)
            reconnect=(lambda: get_spark_session(settings)) if is_remote(spark) else None,
        )  # fmt: skip
        if "vqe_results" in data_tables and namespace == NAMESPACE:
            index_keys = write_reuse_index(spark, settings, catalog, namespace)
            for d in write_days:
                results[d].reuse_index_keys = index_keys
    if good is not None:  # only now: the writes compute from it
        good.unpersist()

    meta_days = [
        d for d in target_days if results[d].runs > 0 or results[d].bad_files or results[d].bad_records
    ]
    for d in write_days:
        results[d].empty = False
        results[d].message = f"built {results[d].runs} run(s) of {d} into {len(data_tables)} table(s)"
    if "processing_metadata" in selected and meta_days:
        _append_processing_metadata(
            spark, settings, catalog, namespace, raw_root, run_id, meta_days, results, started
        )
    if namespace == NAMESPACE and raw_root == raw_io.default_raw_root(settings):
        _record_first_landed(spark, settings, catalog, [d for d in target_days if own_files[d]])
    for d in target_days:
        results[d].duration_s = round(time.monotonic() - started, 3)
        log.info(
            "%s: %s (bad files %d, bad records %d)",
            d,
            results[d].message,
            len(results[d].bad_files),
            results[d].bad_records,
        )
    return [results[d] for d in target_days]


def _record_first_landed(spark: SparkSession, settings: Settings, catalog: str, landed: list[date]) -> None:
    """Record the first day results landed (the feature partitions' default start, read when the Dagster
    definitions load: ``qp_assets.assets.partitions``) from the built days that had landed files. The first
    record of a runtime also takes the earliest ``vqe_results`` day, so history built before the record
    existed is not hidden. Never fails the build: a failure is logged."""
    try:
        if landed and read_first_landed_day(settings.runtime_dir) is None:
            table = spark.table(table_identifier(catalog, NAMESPACE, "vqe_results"))
            earliest = table.agg(F.min("event_date")).first()[0]
            landed = [*landed, *([earliest] if earliest else [])]
        record_landed_days(settings.runtime_dir, landed)
    except Exception as exc:  # noqa: BLE001 - a bookkeeping file; the build itself succeeded
        log.warning("first landed day not recorded under %s: %s", settings.runtime_dir, exc)


#: Tables written at once: each write is a short Spark job plus a catalog commit, mostly waiting on S3 and
#: the catalog, so a few in flight overlap those waits (2-core machine: 9 tables in about half the time).
WRITE_THREADS = 3


def _write_data_tables(
    spark: SparkSession,
    good: DataFrame,
    catalog: str,
    namespace: str,
    data_tables: list[str],
    write_days: list[date],
    results: dict[date, DayBuildResult],
    superseded_runs: Sequence[str] = (),
    reconnect: Callable[[], SparkSession] | None = None,
) -> None:
    """Overwrite ``write_days`` of each table with ``good`` (``WRITE_THREADS`` tables at a time), first
    deleting ``superseded_runs`` (older results of the same requests, in other days); any failure rolls
    every touched table back, after the writes in flight have finished. Tables whose restore fails on
    ``spark`` (its Spark Connect server was killed) are restored on ``reconnect()`` (a new session: on
    the restarted server, or in-process when none answers). The re-raised error carries a note saying
    whether every touched table got its rows back, or which did not."""
    from concurrent.futures import as_completed

    from tqdm import tqdm

    day_lits = [F.lit(d) for d in write_days]
    idents = {name: table_identifier(catalog, namespace, name) for name in data_tables}
    started_ms = int(time.time() * 1000) - 1  # commits after this instant are this build's (or later runs')
    deleted: dict[str, list[str]] = {}
    run_list = ", ".join("'" + r.replace("'", "''") + "'" for r in superseded_runs)

    build_tag = uuid.uuid4().hex  # recorded in each overwrite's snapshot summary: finds this build's commits

    def write(name: str) -> None:
        ident = idents[name]
        if superseded_runs:
            deleted[name] = list(superseded_runs)
            spark.sql(f"DELETE FROM {ident} WHERE run_id IN ({run_list})")
        table_df = TABLES[name].transform(good).where(F.col("event_date").isin(*day_lits))
        table_df.writeTo(ident).option(f"snapshot-property.{BUILD_PROPERTY}", build_tag).overwrite(
            F.col("event_date").isin(*day_lits)
        )

    failures: list[tuple[str, BaseException]] = []
    progress = tqdm(
        total=len(data_tables), desc=f"feature tables {write_days[0]}..{write_days[-1]}", unit="table"
    )
    with ThreadPoolExecutor(max_workers=WRITE_THREADS, thread_name_prefix="qp-write") as pool:
        # vqe_results first: it is the table users query for a result, so it becomes readable soonest
        order = sorted(data_tables, key=lambda name: name != "vqe_results")
        futures = {pool.submit(write, name): name for name in order}
        for future in as_completed(futures):
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - every failure is reported, the first re-raised
                failures.append((futures[future], exc))
                for pending in futures:
                    pending.cancel()  # not started yet: never written, nothing to undo
            progress.update(1)
    progress.close()
    if failures:
        touched = [name for future, name in futures.items() if not future.cancelled()]
        log.error("writing %s failed: undoing this build's writes to %s", [n for n, _ in failures], touched)
        left = _rollback(spark, catalog, namespace, touched, started_ms, write_days, deleted)
        if left and reconnect is not None:
            log.warning("rollback: retrying %s on a new Spark session", left)
            try:
                left = _rollback(reconnect(), catalog, namespace, left, started_ms, write_days, deleted)
            except Exception as exc:  # noqa: BLE001 - no session at all: reported with the original error
                log.warning("rollback: no new Spark session: %s", str(exc).splitlines()[0][:300])
        error = failures[0][1]
        error.add_note(
            f"rollback: {', '.join(left)} could not be restored and keep this build's rows for {write_days}"
            if left
            else f"rollback: {len(touched)} table(s) restored to their rows before this build"
        )
        raise error
    after = _rows_written(spark, list(idents.values()), write_days, build_tag)
    for name in data_tables:
        snap, counts = after[idents[name]]
        for d in write_days:
            results[d].row_counts[name] = counts.get(d, 0)
            if snap is not None:
                results[d].snapshot_ids[name] = snap


def write_reuse_index(spark: SparkSession, settings: Settings, catalog: str, namespace: str) -> int | None:
    """Write the result-reuse index object (``qp_assets.runner.reuse``: experiment key -> the run that first
    computed it) from the committed rows of ``vqe_results``, all days, by the runner's own
    ``build_index``; returns its number of keys. A failure is logged and returns None: the table is
    committed, and an index left behind only costs the runner recomputes, never a wrong reuse."""
    from qp_assets.runner.reuse import INDEX_COLUMNS, build_index, write_index

    try:
        rows = (
            spark.table(table_identifier(catalog, namespace, "vqe_results"))
            .where(F.col("experiment_key").isNotNull() & F.col("reused_from").isNull())
            .select(*INDEX_COLUMNS)
            .collect()
        )
        index = build_index([row.asDict() for row in rows])
        log.info("result-reuse index: %d experiment key(s) -> %s", len(index), write_index(settings, index))
        return len(index)
    except Exception as exc:  # noqa: BLE001 - the build's tables are committed: say it, do not fail them
        log.warning("result-reuse index not written (%s: %s)", type(exc).__name__, str(exc)[:300])
        return None


def _count_days(
    checked: DataFrame, ranked: DataFrame, days: list[date], results: dict[date, DayBuildResult]
) -> None:
    """Fill each day's bad-record counts (by reason), runs, duplicates dropped and source files, from one
    Spark query: records violating the contract, counted by the day folder they landed in, and valid
    records ranked per request (rank 1 = the run kept), counted by their event day."""
    day_lits = [F.lit(d) for d in days]
    no_files = F.array().cast("array<string>")
    bad = (
        checked.where(F.col("_violation").isNotNull() & F.col("_file_day").isin(*day_lits))
        .groupBy(F.col("_file_day").alias("d"), F.col("_violation").alias("reason"))
        .agg(F.count(F.lit(1)).alias("n"))
        .select("d", "reason", "n", F.lit(0).cast("long").alias("dups"), no_files.alias("files"))
    )
    per_day = (
        ranked.groupBy(F.to_date("event_time").alias("d"))
        .agg(
            F.sum(F.when(F.col("_rank") == 1, 1).otherwise(0)).cast("long").alias("n"),
            F.sum(F.when(F.col("_rank") > 1, 1).otherwise(0)).cast("long").alias("dups"),
            F.collect_set("source_file").alias("files"),
        )
        .select("d", F.lit(None).cast("string").alias("reason"), "n", "dups", "files")
    )
    for row in bad.unionByName(per_day).collect():
        res = results[row["d"]]
        if row["reason"] is not None:
            res.bad_records += int(row["n"])
            res.bad_record_reasons[row["reason"]] = res.bad_record_reasons.get(row["reason"], 0) + int(
                row["n"]
            )
        else:
            res.runs = int(row["n"])
            res.duplicate_runs_dropped = int(row["dups"])
            res.source_files = sorted(set(row["files"]))


def _prepare_catalog(
    spark: SparkSession,
    catalog: str,
    namespace: str,
    tables: Sequence[str],
    good: DataFrame,
    days: list[date],
) -> list[Any]:
    """Make sure the tables exist, then return the requests of ``good`` that also have a row in another
    day of ``vqe_results``: rows of (request_id, run_id, event_time, event_day, other_run, other_time)."""
    ensure_tables(spark, catalog, namespace, tables)
    ident = table_identifier(catalog, namespace, "vqe_results")
    if "vqe_results" not in tables and not spark.catalog.tableExists(ident):
        return []
    day_lits = [F.lit(d) for d in days]
    others = (
        spark.table(ident)
        .where(F.col("request_id").isNotNull() & ~F.col("event_date").isin(*day_lits))
        .select("request_id", F.col("run_id").alias("other_run"), F.col("event_time").alias("other_time"))
    )
    mine = good.where(F.col("request_id").isNotNull()).select(
        "request_id", "run_id", "event_time", F.to_date("event_time").alias("event_day")
    )
    return mine.join(others, "request_id").collect()


def _latest_result_per_request(
    good: DataFrame, clashes: list[Any], results: dict[date, DayBuildResult]
) -> tuple[DataFrame, list[str]]:
    """Keep one result per ``request_id`` across all days, the latest one (event_time, then run_id).

    ``good`` already holds one run per request within the built days; ``clashes`` are its requests that
    also have a row in another day of ``vqe_results`` (a re-run after a cursor reset, a replay, a new
    Dagster instance; see :func:`_prepare_catalog`). If the other day's result is newer, this build drops
    its own run (counted in ``duplicate_runs_dropped`` of its day); if this build's is newer, the other
    day's run is returned as superseded and deleted from every written table in the same
    transaction-like step as the overwrite. Returns (the runs to write, the superseded run ids).
    """
    if not clashes:
        return good, []
    dropped: set[str] = set()
    superseded: set[str] = set()
    for row in clashes:
        if (row["other_time"], row["other_run"]) > (row["event_time"], row["run_id"]):
            dropped.add(row["run_id"])
        else:
            superseded.add(row["other_run"])
    superseded -= {row["other_run"] for row in clashes if row["run_id"] in dropped}
    if dropped:
        for _run, day in {(row["run_id"], row["event_day"]) for row in clashes if row["run_id"] in dropped}:
            results[day].runs -= 1
            results[day].duplicate_runs_dropped += 1
        good = good.where(~F.col("run_id").isin(*dropped))
    log.info("requests seen in other days: %d newer there, %d superseded here", len(dropped), len(superseded))
    return good, sorted(superseded)


def _append_processing_metadata(
    spark: SparkSession,
    settings: Settings,
    catalog: str,
    namespace: str,
    raw_root: str,
    run_id: str | None,
    meta_days: list[date],
    results: dict[date, DayBuildResult],
    started: float,
) -> None:
    from qp_assets.features.transforms import processing_metadata

    now = datetime.now(UTC)
    rows = []
    for d in meta_days:
        res = results[d]
        res.processing_id = str(uuid.uuid4())
        rows.append(
            {
                "processing_id": res.processing_id,
                "event_date": d,
                "dagster_run_id": run_id,
                "processed_at": now,
                "spark_master": describe_master(spark),
                "raw_root": raw_root,
                "source_files": res.source_files,
                "source_file_count": len(res.source_files),
                "runs": res.runs,
                "row_counts": dict(res.row_counts),
                "snapshot_ids": dict(res.snapshot_ids),
                "bad_files": res.bad_files,
                "bad_records": res.bad_records,
                "bad_record_reasons": dict(res.bad_record_reasons),
                "duration_s": round(time.monotonic() - started, 3),
            }
        )
    ident = table_identifier(catalog, namespace, "processing_metadata")
    processing_metadata(spark, rows).writeTo(ident).append()
    snap = current_snapshot_id(spark, ident)
    for d in meta_days:
        results[d].row_counts["processing_metadata"] = 1
        if snap is not None:
            results[d].snapshot_ids["processing_metadata"] = snap
