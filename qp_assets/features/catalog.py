"""PyIceberg access to the feature tables (the same JDBC/SQL catalog Spark writes through).

``sql_catalog()`` opens ``SqlCatalog(Settings.iceberg_catalog_name, uri=Settings.iceberg_catalog_uri, ...)``
with the S3 endpoint of the stack; ``read_rows`` reads a table (optionally one day, optionally as of a
snapshot id or a point in time); ``snapshot_history`` lists a table's snapshots.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from qp_assets.features.ml_tables import ML_TABLES
from qp_assets.features.transforms import NAMESPACE, TABLES
from qp_assets.settings import Settings


def sql_catalog(settings: Settings | None = None):
    """The PyIceberg SqlCatalog shared with Spark (same catalog name, same SQLite/PostgreSQL database)."""
    from pyiceberg.catalog.sql import SqlCatalog

    settings = settings or Settings.from_env()
    uri = settings.iceberg_catalog_uri
    if uri.startswith("jdbc:sqlite:"):
        uri = "sqlite:///" + uri[len("jdbc:sqlite:") :]
    if uri.startswith("sqlite:///"):  # a fresh runtime has no iceberg/ folder yet: SQLite cannot create it
        os.makedirs(os.path.dirname(uri[len("sqlite:///") :].split("?", 1)[0]) or ".", exist_ok=True)
        if "timeout=" not in uri:  # wait for another writer's commit instead of failing at once
            uri += ("&" if "?" in uri else "?") + f"timeout={SQLITE_BUSY_TIMEOUT_S:g}"
    return SqlCatalog(
        settings.iceberg_catalog_name,
        uri=uri,
        warehouse=settings.iceberg_warehouse,
        **{
            "s3.endpoint": settings.s3_endpoint_url,
            "s3.access-key-id": settings.aws_access_key_id,
            "s3.secret-access-key": settings.aws_secret_access_key,
            "s3.region": settings.aws_region,
        },
    )


def private_catalog(settings: Settings, name: str, catalog_file: Path, warehouse_prefix: str) -> Settings:
    """``settings`` with its own Iceberg catalog: named ``name``, a SQLite file ``catalog_file``, table data
    under ``s3://<bucket>/<warehouse_prefix>warehouse`` (tests, benchmarks and the Spark warm-up build there,
    never in the stack's catalog)."""
    return dataclasses.replace(
        settings,
        iceberg_catalog_name=name,
        iceberg_catalog_uri=f"sqlite:///{catalog_file}",
        iceberg_warehouse=f"s3://{settings.bucket}/{warehouse_prefix}warehouse",
    )


#: SQLite catalog: how long a PyIceberg writer waits for another's commit (s); Spark's JDBC side waits
#: ``spark.SQLITE_BUSY_TIMEOUT_MS``.
SQLITE_BUSY_TIMEOUT_S = 60.0


def ensure_catalog_tables(settings: Settings | None = None) -> None:
    """Create the catalog's own tables (``iceberg_tables``, ``iceberg_namespace_properties``) if missing,
    and put a SQLite catalog in WAL mode.

    PyIceberg's SqlCatalog creates them on construction; Spark's JDBC catalog is configured not to on
    SQLite (see ``spark.catalog_conf``, which also creates the file's directory). WAL (write-ahead log,
    a property of the database file, kept across connections): readers (audits, checks, ``qp features``)
    no longer block a commit nor wait for one, and concurrent builds' commits queue behind SQLite's one
    write lock (busy timeout 60 s) instead of failing with SQLITE_BUSY. Idempotent; connections are closed
    before returning.
    """
    settings = settings or Settings.from_env()
    uri = settings.iceberg_catalog_uri
    path = uri[len("sqlite:///") :].split("?", 1)[0] if uri.startswith("sqlite:///") else None
    if not (path and _sqlite_has_catalog_tables(path)):
        # milliseconds with the stdlib when they exist, instead of importing PyIceberg (about 1-2 s)
        sql_catalog(settings).engine.dispose()
    if path:
        sqlite_wal(path)


def sqlite_wal(path: str) -> str:
    """Put the SQLite database ``path`` in WAL journal mode (no-op when it is); returns the mode.

    Raises RuntimeError naming the file when SQLite refuses (e.g. a file system without shared memory)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S)) as conn:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if mode.lower() != "wal":
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise RuntimeError(f"iceberg catalog {path}: SQLite kept journal_mode={mode!r}, WAL refused")
    return mode


def _sqlite_has_catalog_tables(path: str) -> bool:
    import sqlite3

    if not os.path.exists(path):
        return False
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as conn:
        rows = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name IN ('iceberg_tables', 'iceberg_namespace_properties')"
        ).fetchall()
    return len(rows) == 2


def check_table_name(table: str) -> str:
    """Return ``table`` if it is one of the ten feature tables or the two ML tables, else raise ValueError."""
    if table not in TABLES and table not in ML_TABLES:
        known = ", ".join([*TABLES, *ML_TABLES])
        raise ValueError(f"table: unknown feature table {table!r}; known: {known}")
    return table


def parse_as_of(value: str) -> tuple[int | None, int | None]:
    """``--as-of`` value -> (snapshot_id, None) for an integer id, or (None, epoch ms) for an ISO time.

    ISO timestamps without a zone are UTC. Raises ValueError naming the value otherwise.
    """
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text), None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--as-of: {value!r} is neither a snapshot id nor an ISO-8601 timestamp") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return None, int(when.timestamp() * 1000)


def load_feature_table(table: str, settings: Settings | None = None, namespace: str = NAMESPACE):
    return sql_catalog(settings).load_table(f"{namespace}.{check_table_name(table)}")


def _small_arrow_types(arrow: Any) -> Any:
    """``arrow`` with large_string/large_binary/large_list columns cast to their 32-bit-offset types.

    PyIceberg answers a scan that matches no data file with large types and one that reads Parquet with
    plain ones; callers that concatenate or compare tables (checks over a day range with empty days) need
    one answer whatever the data, so every read goes through this.
    """
    import pyarrow as pa

    def small(t: pa.DataType) -> pa.DataType:
        if pa.types.is_large_string(t):
            return pa.string()
        if pa.types.is_large_binary(t):
            return pa.binary()
        if pa.types.is_large_list(t) or pa.types.is_list(t):
            return pa.list_(pa.field(t.value_field.name, small(t.value_type), t.value_field.nullable))
        if pa.types.is_struct(t):
            return pa.struct([pa.field(f.name, small(f.type), f.nullable, f.metadata) for f in t])
        if pa.types.is_map(t):
            return pa.map_(small(t.key_type), small(t.item_type))
        return t

    schema = pa.schema([pa.field(f.name, small(f.type), f.nullable, f.metadata) for f in arrow.schema])
    return arrow if schema.equals(arrow.schema) else arrow.cast(schema)


def read_rows(
    table: str,
    day: date | None = None,
    as_of: str | None = None,
    limit: int | None = None,
    settings: Settings | None = None,
    namespace: str = NAMESPACE,
    days: list[date] | None = None,
):
    """Rows of ``table`` as a pyarrow Table: one ``event_date`` if ``day``, those in ``days`` if given
    (one scan), at a snapshot if ``as_of``.

    Column types are the same whether or not the scan matched data (no pyarrow large types), so reads of
    empty and non-empty days concatenate and compare. ``as_of`` is a snapshot id or an ISO timestamp (the
    snapshot current at that time). Raises ValueError for an unknown table, snapshot id, or a time before
    the table's first snapshot.
    """
    from pyiceberg.expressions import AlwaysTrue, EqualTo, In

    tbl = load_feature_table(table, settings, namespace)
    snapshot_id = None
    if as_of:
        snapshot_id, at_ms = parse_as_of(as_of)
        if snapshot_id is not None:
            if tbl.snapshot_by_id(snapshot_id) is None:
                raise ValueError(f"--as-of: snapshot {snapshot_id} not found in {namespace}.{table}")
        else:
            snap = tbl.snapshot_as_of_timestamp(at_ms)
            if snap is None:
                raise ValueError(f"--as-of: {as_of!r} is before the first snapshot of {namespace}.{table}")
            snapshot_id = snap.snapshot_id
    if days is not None:
        row_filter = In("event_date", {d.isoformat() for d in [*days, *([day] if day else [])]})
    else:
        row_filter = EqualTo("event_date", day.isoformat()) if day else AlwaysTrue()
    return _small_arrow_types(
        tbl.scan(row_filter=row_filter, snapshot_id=snapshot_id, limit=limit).to_arrow()
    )


def snapshot_history(
    table: str, settings: Settings | None = None, namespace: str = NAMESPACE
) -> list[dict[str, Any]]:
    """Snapshots of ``table`` oldest first: id, parent, committed_at (UTC), operation, summary counts."""
    tbl = load_feature_table(table, settings, namespace)
    current = tbl.current_snapshot()
    out = []
    for snap in sorted(tbl.snapshots(), key=lambda s: s.timestamp_ms):
        summary = snap.summary.additional_properties if snap.summary else {}
        out.append(
            {
                "snapshot_id": snap.snapshot_id,
                "parent_id": snap.parent_snapshot_id,
                "committed_at": datetime.fromtimestamp(snap.timestamp_ms / 1000, UTC).isoformat(
                    timespec="milliseconds"
                ),
                "operation": snap.summary.operation.value if snap.summary else None,
                "added_records": int(summary.get("added-records", 0)),
                "deleted_records": int(summary.get("deleted-records", 0)),
                "total_records": int(summary.get("total-records", 0)),
                "current": current is not None and snap.snapshot_id == current.snapshot_id,
            }
        )
    return out


def apply_column_docs(
    catalog: Any, namespace: str = NAMESPACE, tables: list[str] | None = None
) -> dict[str, int]:
    """Write the descriptions of ``features/columns.py`` as Iceberg column docs of existing tables.

    For tables created before the descriptions existed (``CREATE TABLE`` writes them for new tables).
    ``catalog`` is a PyIceberg catalog (``sql_catalog()``). One schema commit per table whose docs differ,
    none when they all match; tables not created yet are skipped. Returns table -> columns changed
    (absent tables left out). A concurrent commit by a build makes PyIceberg's commit fail (optimistic
    concurrency, nothing half-written): run it again.
    """
    from pyiceberg.exceptions import NoSuchTableError

    from qp_assets.features.transforms import column_description

    changed: dict[str, int] = {}
    for name in tables or list(TABLES):
        spec = {**TABLES, **ML_TABLES}[check_table_name(name)]
        try:
            tbl = catalog.load_table(f"{namespace}.{name}")
        except NoSuchTableError:
            continue
        docs = {f.name: f.doc for f in tbl.schema().fields}
        wanted = {c: column_description(spec, c) for c in spec.schema.names if c in docs}
        todo = {c: text for c, text in wanted.items() if docs[c] != text}
        if todo:
            with tbl.update_schema() as update:
                for column, text in todo.items():
                    update.update_column(column, doc=text)
        changed[name] = len(todo)
    return changed
