"""``qp features``: build, inspect and time-travel the Iceberg feature tables.

- ``qp features show TABLE [--date D] [--as-of SNAPSHOT|TIMESTAMP] [--limit N]``: rows via PyIceberg
- ``qp features history TABLE``: snapshots of a table (id, time, operation, record counts)
- ``qp features build DATE [--end DATE] [--run-id ID]``: build one day (or a date range in one Spark job)
- ``qp features tables``: the ten tables, their keys and lineage
- ``qp features describe [TABLE] [--apply]``: what every column means (unit, source); ``--apply`` writes the
  descriptions as column docs into existing Iceberg tables created before they existed
- ``qp features jars``: resolve (once, cached) and list the Spark jars of ``infra/spark/pom.xml``
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta

from qp_assets.cli_errors import USAGE, CliError, iso_day, reported
from qp_assets.features.ml_tables import ML_TABLES
from qp_assets.features.transforms import NAMESPACE, TABLES

#: What show / history / describe / tables accept: the ten feature tables and the two ML tables.
ALL_TABLES = {**TABLES, **ML_TABLES}


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n <= 0:
        raise argparse.ArgumentTypeError(f"--limit: {value!r} is not a positive integer")
    return n


def _print_table(rows: list[dict], columns: list[str], out=None) -> None:
    out = out or sys.stdout  # resolved per call (sys.stdout may be swapped, e.g. by pytest capture)

    def fmt(v: object) -> str:
        text = json.dumps(v, default=str) if isinstance(v, list | dict) else ("" if v is None else str(v))
        return text if len(text) <= 48 else text[:45] + "..."

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)), file=out)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)), file=out)


def _show(args: argparse.Namespace) -> int:
    from qp_assets.features.catalog import read_rows

    with reported(f"cannot read {args.namespace}.{args.table}"):  # catalog / storage down, no table yet
        arrow = read_rows(args.table, args.date, args.as_of, args.limit, namespace=args.namespace)
    rows = arrow.to_pylist()
    if args.json:
        for row in rows:
            print(json.dumps(row, default=str))
    else:
        _print_table(rows, arrow.column_names)
        print(f"({len(rows)} row(s))")
    return 0


def _history(args: argparse.Namespace) -> int:
    from qp_assets.features.catalog import snapshot_history

    with reported(f"cannot read {args.namespace}.{args.table}"):
        snaps = snapshot_history(args.table, namespace=args.namespace)
    if args.json:
        print(json.dumps(snaps, indent=2))
    else:
        _print_table(snaps, list(snaps[0]) if snaps else ["snapshot_id"])
        print(f"({len(snaps)} snapshot(s))")
    return 0


def _build(args: argparse.Namespace) -> int:
    from qp_assets.features.build import build_days

    end = args.end or args.date
    if end < args.date:
        raise CliError(f"--end {end} is before {args.date}", USAGE)
    days = [args.date + timedelta(days=k) for k in range((end - args.date).days + 1)]
    if args.ml:
        from qp_assets.features.ml_tables import build_ml_days

        with reported(failure=()):
            ml = build_ml_days(days, namespace=args.namespace)
        if args.json:
            print(json.dumps(ml.as_metadata()))
        for table, per_day in [] if args.json else ml.row_counts.items():
            print(f"{table}: {per_day} rows, snapshot {ml.snapshot_ids.get(table)}")
        return 0
    with reported(failure=()):
        results = build_days(days, run_id=args.run_id, raw_root=args.raw_root, namespace=args.namespace)
    for res in results:
        print(json.dumps(res.as_metadata(), default=str) if args.json else f"{res.day}: {res.message}")
        if not args.json and not res.empty:
            for table, n in res.row_counts.items():
                print(f"  {table:22s} {n:>10d} rows  snapshot {res.snapshot_ids.get(table)}")
        if not args.json and (res.bad_files or res.bad_records):
            print(
                f"  bad files: {len(res.bad_files)}  bad records: {res.bad_records} {res.bad_record_reasons}"
            )
    return 0


def _tables(args: argparse.Namespace) -> int:
    rows = [
        {
            "table": s.name,
            "keys": ", ".join(s.keys),
            "depends_on": ", ".join(s.depends_on),
            "description": s.description,
        }
        for s in ALL_TABLES.values()
    ]
    _print_table(rows, ["table", "keys", "depends_on", "description"])
    return 0


def _describe(args: argparse.Namespace) -> int:
    from qp_assets.features.transforms import column_description

    names = [args.table] if args.table else list(ALL_TABLES)
    if args.apply:
        from qp_assets.features.catalog import apply_column_docs, sql_catalog

        with reported(f"cannot update column docs in {args.namespace}"):  # catalog down, concurrent commit
            changed = apply_column_docs(sql_catalog(), args.namespace, names)
        for name in names:
            n = changed.get(name)
            print(f"{name}: " + ("not created yet" if n is None else f"{n} column doc(s) updated"))
        return 0
    rows = [
        {"table": name, "column": f.name, "type": f.dataType.simpleString(),
         "description": column_description(ALL_TABLES[name], f.name)}
        for name in names
        for f in ALL_TABLES[name].schema.fields
    ]  # fmt: skip
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        for row in rows:
            print(f"{row['table']}.{row['column']} ({row['type']}): {row['description']}")
    return 0


def _jars(args: argparse.Namespace) -> int:
    from qp_assets.features.spark import resolve_spark_jars

    with reported("resolving infra/spark/pom.xml failed", usage=()):
        jars = resolve_spark_jars()
    for jar in jars:
        print(jar)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("features", help="Iceberg feature tables (build, show, history)")
    sub = parser.add_subparsers(dest="features_command", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--namespace", default=NAMESPACE, help=f"Iceberg namespace (default {NAMESPACE})")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    show = sub.add_parser("show", help="print rows of a feature table (PyIceberg)")
    show.add_argument(
        "table", choices=list(ALL_TABLES), metavar="TABLE", help="one of: " + ", ".join(ALL_TABLES)
    )
    show.add_argument("--date", type=iso_day, help="only this event day (YYYY-MM-DD)")
    show.add_argument("--as-of", dest="as_of", help="snapshot id, or ISO timestamp (UTC) to time-travel to")
    show.add_argument("--limit", type=_positive, default=20, help="max rows (default 20)")
    common(show)
    show.set_defaults(handler=_show)

    history = sub.add_parser("history", help="list the snapshots of a feature table")
    history.add_argument(
        "table", choices=list(ALL_TABLES), metavar="TABLE", help="one of: " + ", ".join(ALL_TABLES)
    )
    common(history)
    history.set_defaults(handler=_history)

    build = sub.add_parser("build", help="build the tables for a day (or a date range, one Spark job)")
    build.add_argument("date", type=iso_day, help="first day (YYYY-MM-DD, UTC)")
    build.add_argument("--end", type=iso_day, help="last day of a range (inclusive)")
    build.add_argument("--run-id", default=None, help="run id recorded in processing_metadata")
    build.add_argument(
        "--ml", action="store_true", help="build the two ML tables from the feature tables of those days"
    )
    build.add_argument(
        "--raw-root", default=None, help="raw landing root (default s3a://<bucket>/raw/topics)"
    )
    common(build)
    build.set_defaults(handler=_build)

    jars = sub.add_parser("jars", help="resolve the Spark jars of infra/spark/pom.xml (cached) and list them")
    jars.set_defaults(handler=_jars)

    describe = sub.add_parser("describe", help="what every column means; --apply writes it into Iceberg")
    describe.add_argument(
        "table", nargs="?", choices=list(ALL_TABLES), metavar="TABLE", help="one table (default: all twelve)"
    )
    describe.add_argument(
        "--apply", action="store_true", help="write the descriptions as column docs of the existing tables"
    )
    common(describe)
    describe.set_defaults(handler=_describe)

    tables = sub.add_parser("tables", help="list the ten tables and the two ML tables with keys and lineage")
    tables.set_defaults(handler=_tables)
