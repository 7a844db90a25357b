"""Feature tables end to end: golden landed Avro on the stack's S3 -> Spark -> Iceberg (JDBC/SQLite) -> PyIceberg.

One Spark session (local[*]) for the module; the golden input goes under a unique S3 prefix, the catalog is
a private SQLite file and the warehouse a unique S3 path, so nothing collides with real data. Tests run in
file order and build on each other's state (day 1, day 2, re-run, late file, time travel, bad input).
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from datetime import date

import pytest

from qp_assets.features import golden
from qp_assets.features.catalog import private_catalog
from qp_assets.features.transforms import DATA_TABLES, TABLES, column_description

pytestmark = [pytest.mark.spark, pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(600)]

NS = "quantum_features"
DAY1, DAY2 = golden.GOLDEN_DAY1, golden.GOLDEN_DAY2
DAY3 = date(2026, 1, 16)  # bad input day
EMPTY_DAY = date(2026, 1, 20)


@pytest.fixture(scope="module")
def env(stack, tmp_path_factory):
    """Settings for this module (private catalog + warehouse), the landing sink, the Spark session."""
    from qp_assets.features.spark import get_spark_session
    from qp_assets.s3 import s3_client

    tmp = tmp_path_factory.mktemp("features")
    prefix = f"tests/features-{uuid.uuid4().hex[:10]}/"
    settings = private_catalog(stack, "qp_test", tmp / "catalog.db", prefix)
    client = s3_client(settings)
    sink = golden.LandingSink(s3_client=client, bucket=settings.bucket, prefix=prefix)
    files = golden.golden_files()
    for f in files:
        f.write(sink)
    spark = get_spark_session(settings)
    yield {"settings": settings, "sink": sink, "spark": spark, "files": files, "snapshots": {}}
    spark.stop()
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=settings.bucket, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=settings.bucket, Delete={"Objects": keys})


def build(env, day, run_id):
    from qp_assets.features.build import build_day

    return build_day(
        day, env["spark"], env["settings"], run_id=run_id, raw_root=env["sink"].raw_root, namespace=NS
    )


def ident(env, table):
    return f"{env['settings'].iceberg_catalog_name}.{NS}.{table}"


def day_rows(env, table, day, order):
    return (
        env["spark"]
        .sql(f"SELECT * FROM {ident(env, table)} WHERE event_date = DATE '{day}' ORDER BY {order}")
        .collect()
    )


def catalog(env):
    from qp_assets.features.catalog import sql_catalog

    return sql_catalog(env["settings"])


def test_day1_golden_rows_exact(env):
    from qp_assets.features.spark import describe_master

    # the test stack runs the Spark Connect server: builds are its clients, on this module's own catalog
    assert describe_master(env["spark"]) == "spark-connect (local[*])"
    result = build(env, DAY1, "dagster-run-1")
    expected = golden.expected_rows(golden.records_of_day(env["files"], DAY1))
    assert not result.empty and result.runs == 5
    assert {t: result.row_counts[t] for t in DATA_TABLES} == expected
    assert expected["vqe_iterations"] == 19 and expected["iteration_parameters"] == 50
    # run 7 finished on day 1 but landed in day 2's folder: it belongs to day 1
    assert any("day=15/hour=00" in f for f in result.source_files)
    spark = env["spark"]
    for name in DATA_TABLES:  # explicit schema: exactly the declared columns and types
        written = spark.table(ident(env, name)).schema
        assert [(f.name, f.dataType) for f in written] == [(f.name, f.dataType) for f in TABLES[name].schema]
    assert counts(env, DAY1) == expected  # counted by Spark, independently of the build's report

    its = day_rows(env, "vqe_iterations", DAY1, "run_id, iteration")
    assert [(r.run_id, r.iteration) for r in its if r.run_id == "run-000002"] == [
        ("run-000002", i) for i in range(1, 6)
    ]
    r1i2 = next(r for r in its if r.run_id == "run-000001" and r.iteration == 2)
    assert math.isclose(r1i2.energy, golden.iteration_energy(1, 2), rel_tol=0, abs_tol=1e-12)
    assert math.isclose(
        r1i2.error_vs_exact_mha, (golden.iteration_energy(1, 2) - golden.H2_EXACT) * 1000, abs_tol=1e-9
    )
    assert r1i2.nfev == 4 and r1i2.num_parameters == 3

    params = day_rows(env, "iteration_parameters", DAY1, "run_id, iteration, parameter_index")
    run3 = [(r.iteration, r.parameter_index, r.value) for r in params if r.run_id == "run-000003"]
    assert [(i, p) for i, p, _ in run3] == [(i, p) for i in range(1, 5) for p in range(2)]
    # exact doubles (pyspark's avro-1.12.0 would return float-rounded values here, AVRO-4108)
    assert [v for _, _, v in run3] == [golden.parameter_value(3, i, p) for i in range(1, 5) for p in range(2)]
    init = day_rows(env, "initial_parameters", DAY1, "run_id, parameter_index")
    assert [(r.parameter_index, r.value) for r in init if r.run_id == "run-000000"] == [
        (p, golden.parameter_value(0, 0, p)) for p in range(3)
    ]
    opt = day_rows(env, "optimal_parameters", DAY1, "run_id, parameter_index")
    assert [r.value for r in opt if r.run_id == "run-000002"] == [
        golden.parameter_value(2, 5, p) for p in range(3)
    ]

    terms = day_rows(env, "hamiltonian_terms", DAY1, "run_id, term_index")
    run0 = [(r.term_index, r.pauli, r.coeff_real, r.pauli_weight) for r in terms if r.run_id == "run-000000"]
    assert [(i, p, c) for i, p, c, _ in run0] == [(i, p, c) for i, (p, c) in enumerate(golden.H2_TERMS)]
    assert dict((p, w) for _, p, _, w in run0)["XXYY"] == 4 and run0[0][3] == 0
    assert len([r for r in terms if r.run_id == "run-000003"]) == 5

    res = {r.run_id: r for r in day_rows(env, "vqe_results", DAY1, "run_id")}
    assert sorted(res) == ["run-000000", "run-000001", "run-000002", "run-000003", "run-000007"]
    r2 = res["run-000002"]
    assert math.isclose(r2.total_energy, golden.iteration_energy(2, 5), abs_tol=1e-12)
    assert r2.exact_energy == golden.H2_EXACT and r2.hf_energy == golden.H2_HF
    assert math.isclose(r2.error_vs_exact_mha, (r2.total_energy - golden.H2_EXACT) * 1000, abs_tol=1e-9)
    assert r2.total_energy >= r2.exact_energy  # variational bound
    assert r2.device_used == "CPU" and r2.package_versions["qiskit"] == "2.6.1" and r2.num_iterations == 5
    assert r2.source_file.startswith("s3a://") and "day=14/hour=10" in r2.source_file

    perf = {r.run_id: r for r in day_rows(env, "performance_metrics", DAY1, "run_id")}
    assert perf["run-000000"].snapshot_count == 2 and perf["run-000000"].cpu_percent_max == 51.0
    assert perf["run-000000"].peak_rss_bytes == 101_000_000
    mol = day_rows(env, "molecules", DAY1, "run_id")[0]
    assert mol.symbols == ["H", "H"] and mol.coords_angstrom[1][2] == 0.735 and mol.num_atoms == 2

    meta = day_rows(env, "processing_metadata", DAY1, "processed_at")
    assert len(meta) == 1
    assert meta[0].dagster_run_id == "dagster-run-1" and meta[0].runs == 5 and meta[0].source_file_count == 3
    assert dict(meta[0].row_counts) == expected
    assert dict(meta[0].snapshot_ids) == {t: result.snapshot_ids[t] for t in DATA_TABLES}
    env["snapshots"]["after_day1"] = dict(result.snapshot_ids)


def test_two_days_in_one_pass_one_snapshot_per_table(env):
    """build_days over both golden days in one job (what a range backfill runs): each day exactly its
    golden rows, every landed file read, one processing_metadata row per day, and one overwrite (one
    snapshot) per table for both days. Its own namespace of the module's catalog, so the day-by-day
    builds of the other tests are untouched. (On a Spark standalone cluster: tests/test_export_airflow_e2e.py.)"""
    from qp_assets.features.build import build_days
    from qp_assets.features.catalog import snapshot_history

    namespace = "features_two_days"
    days = [golden.GOLDEN_DAY1, golden.GOLDEN_DAY2]
    results = build_days(days, env["spark"], env["settings"], run_id="run-two-days",
                         raw_root=env["sink"].raw_root, namespace=namespace)  # fmt: skip
    for result, day in zip(results, days, strict=True):
        expected = golden.expected_rows(golden.records_of_day(env["files"], day))
        assert {t: result.row_counts[t] for t in DATA_TABLES} == expected, day
    sink = env["sink"]
    landed = {f"s3a://{sink.bucket}/{sink.prefix}{golden.landed_key(f.topic, f.partition, f.offset, f.landed_at)}"
              for f in env["files"]}  # fmt: skip
    assert set().union(*(r.source_files for r in results)) == landed  # every landed file read
    meta = catalog(env).load_table(f"{namespace}.processing_metadata").scan().to_arrow().to_pylist()
    assert sorted(m["event_date"] for m in meta) == days
    for table in DATA_TABLES:
        assert len(snapshot_history(table, env["settings"], namespace)) == 1, table


def test_live_spark_session_does_not_lock_the_sqlite_catalog(env):
    """Writers in other processes (daemon-launched runs, Airflow tasks) must not wait on this session.

    Regression: Iceberg's JDBC catalog init left a metadata ResultSet open, holding SQLite's shared lock
    for the session's lifetime; an exclusive lock from elsewhere then failed with SQLITE_BUSY.
    """
    import sqlite3

    spark, settings = env["spark"], env["settings"]
    spark.sql(f"SHOW NAMESPACES IN {settings.iceberg_catalog_name}").collect()  # loads the catalog
    other = sqlite3.connect(
        settings.iceberg_catalog_uri[len("sqlite:///") :], timeout=5, isolation_level=None
    )
    try:
        other.execute("BEGIN EXCLUSIVE")  # needs every other connection's shared lock released
        other.execute("ROLLBACK")
    finally:
        other.close()


def test_day2_and_pyiceberg_reads_what_spark_wrote(env):
    from pyiceberg.expressions import EqualTo

    result = build(env, DAY2, "dagster-run-2")
    expected = golden.expected_rows(golden.records_of_day(env["files"], DAY2))
    assert result.runs == 2 and {t: result.row_counts[t] for t in DATA_TABLES} == expected
    cat = catalog(env)
    for name in DATA_TABLES:
        tbl = cat.load_table(f"{NS}.{name}")
        docs = {f.name: f.doc for f in tbl.schema().fields}  # the DDL's column comments, as Iceberg docs
        assert docs == {f.name: column_description(TABLES[name], f.name) for f in TABLES[name].schema.fields}
        for day in (DAY1, DAY2):
            n = tbl.scan(row_filter=EqualTo("event_date", day.isoformat())).to_arrow().num_rows
            assert n == golden.expected_rows(golden.records_of_day(env["files"], day))[name], (name, day)
    its = cat.load_table(f"{NS}.vqe_iterations").scan(row_filter=EqualTo("run_id", "run-000005")).to_arrow()
    assert sorted(its.column("iteration").to_pylist()) == list(range(1, 7))
    assert math.isclose(min(its.column("energy").to_pylist()), golden.iteration_energy(5, 6), abs_tol=1e-12)
    env["snapshots"]["after_day2"] = dict(result.snapshot_ids)


def _union(env, sql_per_table: str, day) -> list:
    """One Spark job over all nine data tables: ``sql_per_table`` gets {t} (identifier) and {day}."""
    parts = [
        f"SELECT '{t}' AS t, * FROM ({sql_per_table.format(t=ident(env, t), day=day)})" for t in DATA_TABLES
    ]
    return env["spark"].sql(" UNION ALL ".join(parts)).collect()


def counts(env, day) -> dict[str, int]:
    """Rows of ``day`` in each data table."""
    rows = _union(env, "SELECT count(*) AS n FROM {t} WHERE event_date = DATE '{day}'", day)
    return {r.t: r.n for r in rows}


def day_files(env, day) -> dict[str, list[str]]:
    """Data files holding ``day`` in each data table."""
    rows = _union(env, "SELECT file_path FROM {t}.files WHERE partition.event_date = DATE '{day}'", day)
    out: dict[str, list[str]] = {t: [] for t in DATA_TABLES}
    for r in rows:
        out[r.t].append(r.file_path)
    return {t: sorted(v) for t, v in out.items()}


def partition_snapshots(env, day) -> dict[str, int]:
    """Snapshot that last changed ``day``'s partition, per data table."""
    sql = "SELECT last_updated_snapshot_id AS s FROM {t}.partitions WHERE partition.event_date = DATE '{day}'"
    return {r.t: r.s for r in _union(env, sql, day)}


def test_rerun_same_day_is_idempotent_and_leaves_day2_untouched(env):
    before_counts = counts(env, DAY1)
    day2_files = day_files(env, DAY2)
    day2_snap = partition_snapshots(env, DAY2)
    result = build(env, DAY1, "dagster-run-3")
    assert {t: result.row_counts[t] for t in DATA_TABLES} == before_counts
    assert counts(env, DAY1) == before_counts
    assert all(result.snapshot_ids[t] != env["snapshots"]["after_day2"][t] for t in DATA_TABLES)
    meta = day_rows(env, "processing_metadata", DAY1, "processed_at")
    assert [m.dagster_run_id for m in meta] == ["dagster-run-1", "dagster-run-3"]
    assert len(day_rows(env, "processing_metadata", DAY2, "processed_at")) == 1
    # day 2: same data files, its partition last written by the day-2 build's snapshot
    assert day_files(env, DAY2) == day2_files
    assert (
        partition_snapshots(env, DAY2)
        == day2_snap
        == {t: env["snapshots"]["after_day2"][t] for t in DATA_TABLES}
    )
    env["snapshots"]["before_late"] = dict(result.snapshot_ids)


def test_late_file_rerun_adds_exactly_its_rows_and_time_travel(env, monkeypatch, capsys):
    before = counts(env, DAY1)
    day2_files = day_files(env, DAY2)
    late = golden.golden_late_file()
    late.write(env["sink"])
    result = build(env, DAY1, "dagster-run-4")
    added = golden.expected_rows(late.records)
    assert {t: result.row_counts[t] for t in DATA_TABLES} == {t: before[t] + added[t] for t in DATA_TABLES}
    assert result.runs == 6 and len(result.source_files) == 4
    assert counts(env, DAY1) == {t: before[t] + added[t] for t in DATA_TABLES}
    assert day_files(env, DAY2) == day2_files

    # time travel with PyIceberg: the snapshot before the late file has the older rows
    from pyiceberg.expressions import EqualTo

    from qp_assets.features.catalog import read_rows, snapshot_history

    tbl = catalog(env).load_table(f"{NS}.vqe_iterations")
    old_snap = env["snapshots"]["before_late"]["vqe_iterations"]
    day1 = EqualTo("event_date", DAY1.isoformat())
    assert tbl.scan(row_filter=day1, snapshot_id=old_snap).to_arrow().num_rows == before["vqe_iterations"]
    assert tbl.scan(row_filter=day1).to_arrow().num_rows == before["vqe_iterations"] + 2
    old = read_rows("vqe_iterations", DAY1, str(old_snap), settings=env["settings"], namespace=NS)
    assert "run-000006" not in set(old.column("run_id").to_pylist())
    hist = snapshot_history("vqe_iterations", settings=env["settings"], namespace=NS)
    assert [h["snapshot_id"] for h in hist][-2:] == [old_snap, result.snapshot_ids["vqe_iterations"]]
    assert hist[-1]["current"] and hist[-1]["added_records"] == before["vqe_iterations"] + 2
    at_time = read_rows(
        "vqe_iterations", DAY1, hist[-2]["committed_at"], settings=env["settings"], namespace=NS
    )
    assert at_time.num_rows == before["vqe_iterations"]

    # the CLI reads the same through Settings.from_env()
    from qp_assets.cli import main

    s = env["settings"]
    monkeypatch.setenv("ICEBERG_CATALOG_NAME", s.iceberg_catalog_name)
    monkeypatch.setenv("ICEBERG_CATALOG_URI", s.iceberg_catalog_uri)
    monkeypatch.setenv("ICEBERG_WAREHOUSE", s.iceberg_warehouse)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "features",
                "show",
                "vqe_iterations",
                "--date",
                str(DAY1),
                "--as-of",
                str(old_snap),
                "--limit",
                "100",
            ]
        )
    assert exit_info.value.code == 0
    assert f"({before['vqe_iterations']} row(s))" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["features", "history", "vqe_iterations"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and str(old_snap) in out and "(4 snapshot(s))" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["features", "show", "vqe_iterations", "--as-of", "not-a-time"])
    assert exit_info.value.code == 2


def test_bad_input_counted_good_records_land(env):
    from qp_assets.features.golden import _at, make_result

    sink = env["sink"]
    bad_file = sink.put(
        golden.landed_key(golden.DEFAULT_TOPIC, 0, 900, _at(DAY3, 9)), b"this is not an Avro file\n"
    )
    good = make_result(30, _at(DAY3, 9, 1), num_iterations=3)
    missing_id = make_result(31, _at(DAY3, 9, 2), run_id="")
    negative = make_result(32, _at(DAY3, 9, 3))
    negative["iterations"][1]["iteration"] = -1
    golden.write_landed_file(sink, [good, missing_id, negative], offset=901, when=_at(DAY3, 9))
    # an older writer schema (fields v3 added with defaults missing) still lands through the v3 reader schema
    older = make_result(33, _at(DAY3, 9, 4), num_iterations=2)
    golden.write_landed_file(
        sink, [older], offset=950, when=_at(DAY3, 9), schema=golden.older_writer_schema()
    )
    # a v4 landed file (ADAPT + scan + kernel fields) reads through the same fixed v3 reader
    newer = golden.as_v4(make_result(34, _at(DAY3, 9, 5), num_iterations=4), point=1)
    golden.write_landed_file(sink, [newer], offset=960, when=_at(DAY3, 9), schema=golden.load_v4_schema(),
                             topic="vqe_result_v4.sto3g-jw-adapt-sv-exact-cpu")  # fmt: skip
    result = build(env, DAY3, "dagster-run-bad")
    assert result.runs == 3 and not result.empty
    assert result.bad_files == [bad_file]
    assert result.bad_records == 2
    assert result.bad_record_reasons == {"missing run_id": 1, "negative iteration": 1}
    assert result.row_counts["vqe_iterations"] == 3 + 2 + 4 and result.row_counts["vqe_results"] == 3
    res = day_rows(env, "vqe_results", DAY3, "run_id")
    assert [r.run_id for r in res] == ["run-000030", "run-000033", "run-000034"]
    assert (
        math.isclose(res[2].total_energy, newer["total_energy"], abs_tol=1e-12) and res[2].num_iterations == 4
    )
    assert res[1].request_id is None  # default of the field the older schema lacks
    assert math.isclose(
        res[1].error_vs_exact_mha, (res[1].total_energy - golden.H2_EXACT) * 1000, abs_tol=1e-9
    )
    perf = day_rows(env, "performance_metrics", DAY3, "run_id")
    assert [(r.run_id, r.snapshot_count) for r in perf] == [
        ("run-000030", 2),
        ("run-000033", 0),
        ("run-000034", 2),
    ]
    meta = day_rows(env, "processing_metadata", DAY3, "processed_at")
    assert len(meta) == 1 and meta[0].bad_records == 2 and list(meta[0].bad_files) == [bad_file]
    assert dict(meta[0].bad_record_reasons) == {"missing run_id": 1, "negative iteration": 1}


def test_failed_table_write_rolls_back_the_whole_day(env, monkeypatch):
    from pyspark.sql import functions as F

    from qp_assets.features import transforms
    from qp_assets.features.build import current_snapshot_id

    spec = transforms.TABLES["hamiltonian_terms"]
    other_row = env["spark"].sql(f"SELECT * FROM {ident(env, 'molecules')} WHERE event_date = DATE '{DAY1}'")
    other_row = other_row.limit(1).withColumn("run_id", F.lit("run-of-another-build"))

    def broken(raw_df):
        # meanwhile another run commits to another day of a table this build already wrote
        other_row.writeTo(ident(env, "molecules")).append()
        df = spec.transform(raw_df)
        return df.withColumn("coeff_real", F.when(F.col("term_index") >= 0, F.raise_error(F.lit("injected"))))

    monkeypatch.setitem(transforms.TABLES, "hamiltonian_terms", dataclasses.replace(spec, transform=broken))
    before = {t: current_snapshot_id(env["spark"], ident(env, t)) for t in TABLES}
    before_counts = counts(env, DAY2)
    from qp_assets.features.build import build_day

    # three tables keep the test short: two are written, then the third fails -> both rolled back
    with pytest.raises(Exception, match="injected"):
        build_day(
            DAY2,
            env["spark"],
            env["settings"],
            tables=["molecules", "vqe_iterations", "hamiltonian_terms", "processing_metadata"],
            run_id="dagster-run-broken",
            raw_root=env["sink"].raw_root,
            namespace=NS,
        )
    # untouched tables keep their snapshot; the written ones got day 2's rows back
    after = {t: current_snapshot_id(env["spark"], ident(env, t)) for t in TABLES}
    assert {t: s for t, s in after.items() if t not in ("molecules", "vqe_iterations")} == {
        t: s for t, s in before.items() if t not in ("molecules", "vqe_iterations")
    }
    assert counts(env, DAY2) == before_counts
    # the other run's commit survived the rollback (rollback_to_snapshot would have erased it)
    day1 = [r.run_id for r in day_rows(env, "molecules", DAY1, "run_id")]
    assert "run-of-another-build" in day1
    env["spark"].sql(f"DELETE FROM {ident(env, 'molecules')} WHERE run_id = 'run-of-another-build'")


def test_empty_day_writes_nothing(env):
    from qp_assets.features.build import current_snapshot_id

    before = {t: current_snapshot_id(env["spark"], ident(env, t)) for t in TABLES}
    result = build(env, EMPTY_DAY, "dagster-run-empty")
    assert (
        result.empty and result.runs == 0 and result.row_counts == {} and "nothing written" in result.message
    )
    assert {t: current_snapshot_id(env["spark"], ident(env, t)) for t in TABLES} == before


def _tables_holding(env, run_ids: list[str]) -> dict[str, list[str]]:
    """Which of ``run_ids`` each data table holds (any day)."""
    wanted = ", ".join(f"'{r}'" for r in run_ids)
    return {
        t: [
            r.run_id
            for r in env["spark"]
            .sql(f"SELECT DISTINCT run_id FROM {ident(env, t)} WHERE run_id IN ({wanted}) ORDER BY run_id")
            .collect()
        ]
        for t in DATA_TABLES
    }


def test_a_rerun_request_keeps_one_row_its_latest_result(env):
    """A request processed twice (cursor reset, new instance) ends as one row: the latest result, in every
    table, whether the re-run falls on the same day or a later one, and whichever day is rebuilt last."""
    rerun_day = date(2026, 1, 17)
    day1_before = counts(env, DAY1)
    # same day: request 0 of day 1 ran again at 16:00
    env["sink"].put(
        golden.landed_key(golden.DEFAULT_TOPIC, 2, 0, golden._at(DAY1, 16)),
        golden.avro_bytes(
            [golden.make_result(0, golden._at(DAY1, 16, 5), run_id="run-rerun-a", num_iterations=4)]
        ),
    )
    result = build(env, DAY1, "dagster-run-rerun-1")
    assert result.duplicate_runs_dropped >= 1
    vqe = day_rows(env, "vqe_results", DAY1, "run_id")
    assert [r.run_id for r in vqe if r.request_id == "req-000000"] == ["run-rerun-a"]
    assert counts(env, DAY1)["vqe_results"] == day1_before["vqe_results"]
    assert counts(env, DAY1)["vqe_iterations"] == day1_before["vqe_iterations"] - 3 + 4  # run 0 had 3

    # a later day: request 4 of day 2 ran again on Jan 17 -> day 2 loses run 4 in every table
    env["sink"].put(
        golden.landed_key(golden.DEFAULT_TOPIC, 2, 1, golden._at(rerun_day, 9)),
        golden.avro_bytes([golden.make_result(4, golden._at(rerun_day, 9, 1), run_id="run-rerun-b")]),
    )
    build(env, rerun_day, "dagster-run-rerun-2")
    held = _tables_holding(env, ["run-000004", "run-rerun-b"])
    assert all(held[t] == ["run-rerun-b"] for t in DATA_TABLES), held
    # rebuilding day 2 later does not bring the older result back
    day2 = build(env, DAY2, "dagster-run-rerun-3")
    assert day2.runs == 1 and day2.duplicate_runs_dropped == 1
    assert [r.run_id for r in day_rows(env, "vqe_results", DAY2, "run_id")] == ["run-000005"]
    per_request = env["spark"].sql(
        f"SELECT request_id, count(*) AS n FROM {ident(env, 'vqe_results')} GROUP BY request_id HAVING n > 1"
    )
    assert per_request.collect() == []
