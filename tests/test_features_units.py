"""Fast unit tests of the feature area's own logic (no JVM, no services)."""

from __future__ import annotations

import dataclasses
import io
from datetime import UTC, date, datetime
from pathlib import Path

import fastavro
import pytest

from qp_assets.features import columns, golden
from qp_assets.features.catalog import check_table_name, parse_as_of
from qp_assets.features.ml_tables import ML_TABLES
from qp_assets.features.raw import AVRO_MAGIC, list_day_files, split_avro_files
from qp_assets.features.spark import (
    SPARK_POM,
    catalog_conf,
    connect_endpoint,
    connect_server_conf,
    connect_server_env,
    jdbc_catalog_uri,
    session_conf,
)
from qp_assets.features.transforms import (
    DATA_TABLES,
    RAW_SOURCE,
    TABLES,
    column_description,
    create_table_sql,
    lineage,
    sql_string,
)
from qp_assets.settings import Settings


def test_ten_tables_with_real_keys_and_lineage():
    assert list(TABLES) == [
        "molecules",
        "ansatz_info",
        "performance_metrics",
        "vqe_results",
        "initial_parameters",
        "optimal_parameters",
        "vqe_iterations",
        "iteration_parameters",
        "hamiltonian_terms",
        "processing_metadata",
    ]
    for spec in TABLES.values():
        fields = {f.name: f for f in spec.schema.fields}
        assert "event_date" in fields and not fields["event_date"].nullable
        for key in spec.keys:  # keys exist and are declared NOT NULL
            assert not fields[key].nullable, (spec.name, key)
    assert TABLES["iteration_parameters"].keys == ("run_id", "iteration", "parameter_index")
    assert lineage()["vqe_iterations"] == (RAW_SOURCE,)
    assert lineage()["processing_metadata"] == DATA_TABLES
    vqe = {f.name: f.dataType.simpleString() for f in TABLES["vqe_results"].schema.fields}
    assert vqe["exact_energy"] == "double" and vqe["error_vs_exact_mha"] == "double"
    assert vqe["package_versions"] == "map<string,string>" and vqe["device_used"] == "string"


def test_create_table_sql_partitions_by_event_date():
    sql = create_table_sql("qp", "quantum_features", TABLES["vqe_iterations"])
    assert sql.startswith("CREATE TABLE IF NOT EXISTS qp.quantum_features.vqe_iterations (")
    assert "`run_id` string NOT NULL" in sql and "`iteration` int NOT NULL" in sql
    assert "PARTITIONED BY (event_date)" in sql and "USING iceberg" in sql
    assert (
        "`iteration` int NOT NULL COMMENT 'Key. 1-based optimizer iteration.',\n  "
        "`energy` double COMMENT 'Total energy (hartree) at this iterate.',\n" in sql
    )


def test_every_column_of_every_table_is_described():
    """145 columns (98 distinct names) over the ten tables, each with its own non-empty description."""
    pairs = [(s, f.name) for s in TABLES.values() for f in s.schema.fields]
    assert len(pairs) == 145 and len({c for _, c in pairs}) == 98
    for spec, column in pairs:
        text = column_description(spec, column)
        assert len(text) >= 20 and "{avro}" not in text, (spec.name, column, text)
        assert text.startswith("Key. ") == (column in spec.keys), (spec.name, column)
    # the two ML tables (features/ml_tables.py) draw on the same descriptions
    ml_pairs = [(s, f.name) for s in ML_TABLES.values() for f in s.schema.fields]
    for spec, column in ml_pairs:
        text = column_description(spec, column)
        assert len(text) >= 20 and "{avro}" not in text, (spec.name, column, text)
        assert text.startswith("Key. ") == (column in spec.keys), (spec.name, column)
    # every declared description is used, and every Avro path names a contract field
    used = {(s.name, c) if (s.name, c) in columns.OVERRIDES else c for s, c in pairs + ml_pairs}
    assert set(columns.COLUMNS) | set(columns.OVERRIDES) == used
    for doc in [*columns.COLUMNS.values(), *columns.OVERRIDES.values()]:
        if doc.avro:
            columns.avro_doc(doc.avro)  # KeyError if the path is in neither v3 nor the current schema
    # the Avro doc is carried over where it exists; units are spelled out; per-table meanings differ
    assert column_description(TABLES["vqe_results"], "total_energy") == (
        "Final VQE total energy (hartree) = electronic + nuclear repulsion (+ frozen-core shift)."
    )
    assert column_description(TABLES["molecules"], "coords_angstrom").endswith(
        "Angstrom (converted from bohr on input)."
    )
    assert "milli-hartree" in column_description(TABLES["vqe_iterations"], "error_vs_exact_mha")
    assert "bytes" in column_description(TABLES["performance_metrics"], "peak_rss_bytes")
    assert "percent" in column_description(TABLES["performance_metrics"], "cpu_percent_max")
    assert column_description(TABLES["initial_parameters"], "value") != column_description(
        TABLES["optimal_parameters"], "value"
    )
    with pytest.raises(KeyError, match="column 'nope' of table 'molecules' has no description"):
        columns.describe("molecules", "nope")
    with pytest.raises(KeyError, match="'molecule.nope' is not a field of vqe_result v3"):
        columns.avro_doc("molecule.nope")


def test_apply_column_docs_describes_tables_created_before_the_descriptions(tmp_path: Path):
    """A table created without column docs (as before columns.py) gets them in one schema commit; a second
    apply changes nothing; tables not created yet are skipped. Real PyIceberg SQL catalog on local files."""
    import pyarrow as pa
    from pyiceberg.catalog.sql import SqlCatalog

    from qp_assets.features.catalog import apply_column_docs

    arrow_type = {"string": pa.string(), "date": pa.date32(), "int": pa.int32(), "double": pa.float64(),
                  "timestamp": pa.timestamp("us", tz="UTC")}  # fmt: skip
    spec = TABLES["vqe_iterations"]
    cat = SqlCatalog("qp", uri=f"sqlite:///{tmp_path / 'catalog.db'}", warehouse=f"file://{tmp_path / 'wh'}")
    cat.create_namespace("quantum_features")
    schema = pa.schema(
        [pa.field(f.name, arrow_type[f.dataType.simpleString()], f.nullable) for f in spec.schema]
    )
    tbl = cat.create_table("quantum_features.vqe_iterations", schema=schema)
    assert {f.doc for f in tbl.schema().fields} == {None}
    with tbl.update_schema() as update:  # one column already described as in columns.py
        update.update_column("energy", doc=column_description(spec, "energy"))

    assert apply_column_docs(cat, tables=["vqe_iterations", "molecules"]) == {"vqe_iterations": 12}
    tbl = cat.load_table("quantum_features.vqe_iterations")
    assert {f.name: f.doc for f in tbl.schema().fields} == {
        c: column_description(spec, c) for c in spec.schema.names
    }
    schema_id = tbl.schema().schema_id
    assert apply_column_docs(cat) == {"vqe_iterations": 0}  # all ten asked, nine not created yet
    assert cat.load_table("quantum_features.vqe_iterations").schema().schema_id == schema_id


def test_sql_string_escapes_quotes_and_backslashes():
    # Spark SQL string literal: \' is a quote, \\ a backslash (checked against Spark's parser by hand)
    assert sql_string("it's a \\ x") == "'it\\'s a \\\\ x'"


def test_golden_records_follow_the_v3_contract_and_landing_layout(tmp_path: Path):
    rec = golden.make_result(4, datetime(2026, 1, 15, 8, 4, tzinfo=UTC), num_iterations=5, num_parameters=3)
    data = golden.avro_bytes([rec])
    assert data[:4] == AVRO_MAGIC
    back = list(fastavro.reader(io.BytesIO(data)))[0]
    assert back["run_id"] == "run-000004" and [it["iteration"] for it in back["iterations"]] == [
        1,
        2,
        3,
        4,
        5,
    ]
    assert back["iterations"][1]["parameters"] == [golden.parameter_value(4, 2, p) for p in range(3)]
    key = golden.landed_key(golden.DEFAULT_TOPIC, 0, 3, datetime(2026, 1, 15, 8, tzinfo=UTC))
    assert key == (
        f"raw/topics/{golden.DEFAULT_TOPIC}/year=2026/month=01/day=15/hour=08/{golden.DEFAULT_TOPIC}+0+{3:019d}.avro"
    )
    sink = golden.LandingSink(local_root=tmp_path, prefix="t/")
    for f in golden.golden_files():
        f.write(sink)
    (tmp_path / "t/raw/topics" / golden.DEFAULT_TOPIC / "year=2026/month=01/day=14/hour=10/_tmp").write_text(
        "x"
    )
    day1 = list_day_files(sink.raw_root, golden.GOLDEN_DAY1)
    assert len(day1) == 2 and all("day=14" in u and u.startswith("file://") for u in day1)
    assert len(list_day_files(sink.raw_root, golden.GOLDEN_DAY2)) == 2
    assert list_day_files(sink.raw_root, date(2026, 2, 1)) == []
    not_avro = tmp_path / "junk.avro"
    not_avro.write_bytes(b"garbage")
    good, bad = split_avro_files(day1 + [f"file://{not_avro}"])
    assert good == day1 and bad == [f"file://{not_avro}"]


def test_expected_rows_of_golden_days():
    files = golden.golden_files()
    day1 = golden.records_of_day(files, golden.GOLDEN_DAY1)
    assert sorted(r["run_id"] for r in day1) == [f"run-00000{i}" for i in (0, 1, 2, 3, 7)]
    assert golden.expected_rows(day1)["iteration_parameters"] == 3 * (3 + 4 + 5) + 2 * (4 + 3)


def test_catalog_uri_translation_and_spark_conf(tmp_path: Path):
    assert jdbc_catalog_uri(f"sqlite:///{tmp_path}/c.db") == (f"jdbc:sqlite:{tmp_path}/c.db", {})
    uri, props = jdbc_catalog_uri("postgresql+psycopg2://qp:s3cret@db.local:5432/iceberg")
    assert uri == "jdbc:postgresql://db.local:5432/iceberg"
    assert props == {"jdbc.user": "qp", "jdbc.password": "s3cret"}
    with pytest.raises(ValueError, match="unsupported scheme"):
        jdbc_catalog_uri("mysql://x/y")
    settings = dataclasses.replace(
        Settings.from_env(), iceberg_catalog_uri=f"sqlite:///{tmp_path}/c.db", iceberg_catalog_name="cat"
    )
    conf = catalog_conf(settings)
    assert conf["spark.sql.catalog.cat"] == "org.apache.iceberg.spark.SparkCatalog"
    assert conf["spark.sql.catalog.cat.type"] == "jdbc"
    assert conf["spark.sql.catalog.cat.io-impl"] == "org.apache.iceberg.aws.s3.S3FileIO"
    assert conf["spark.sql.catalog.cat.s3.path-style-access"] == "true"
    jars = [Path("/x/avro-1.12.1.jar"), Path("/x/spark-avro_2.13-4.0.1.jar")]
    full = session_conf(settings, "spark://127.0.0.1:7077", jars)
    assert full["spark.jars"] == "/x/spark-avro_2.13-4.0.1.jar"
    assert full["spark.driver.extraClassPath"] == "/x/avro-1.12.1.jar" and full["spark.driver.memory"] == "1g"
    assert full["spark.hadoop.fs.s3a.path.style.access"] == "true" and "spark.jars.packages" not in full
    assert SPARK_POM.is_file()


def test_as_of_parsing_and_table_names():
    assert parse_as_of("6003504603815265314") == (6003504603815265314, None)
    assert parse_as_of("2026-01-14T10:00:00Z") == (None, 1768384800000)
    assert parse_as_of("2026-01-14T10:00:00") == (None, 1768384800000)
    with pytest.raises(ValueError, match="--as-of"):
        parse_as_of("yesterday")
    with pytest.raises(ValueError, match="unknown feature table 'nope'"):
        check_table_name("nope")


def test_cli_rejects_bad_input_with_exit_2(capsys):
    from qp_assets.cli import main

    for argv in (
        ["features", "show", "nope"],
        ["features", "show", "molecules", "--date", "2026-13-01"],
        ["features", "show", "molecules", "--limit", "0"],
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2, argv
    assert "argument --date: expected YYYY-MM-DD, got '2026-13-01'" in capsys.readouterr().err


def test_cli_describe_prints_every_column(capsys):
    import json

    from qp_assets.cli import main

    with pytest.raises(SystemExit) as info:
        main(["features", "describe", "vqe_iterations", "--json"])
    assert info.value.code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["column"] for r in rows] == TABLES["vqe_iterations"].schema.names
    assert rows[2] == {
        "table": "vqe_iterations",
        "column": "iteration",
        "type": "int",
        "description": "Key. 1-based optimizer iteration.",
    }


def test_a_failed_read_is_never_a_bad_file(tmp_path: Path):
    """S3 unreachable: reading a landed file raises LandingReadError naming it (the build fails and is
    retried) instead of classifying the file as bad and overwriting the day without its rows; a file
    deleted since listing is skipped; transport errors are told apart from undecodable content."""
    from qp_assets.features.raw import LandingReadError, is_transient_read_error

    dead = dataclasses.replace(Settings.from_env(), s3_endpoint_url="http://127.0.0.1:9")  # nothing listens
    with pytest.raises(LandingReadError, match=r"s3a://b/raw/topics/t/x\.avro"):
        split_avro_files(["s3a://b/raw/topics/t/x.avro"], dead)
    good = tmp_path / "good.avro"
    good.write_bytes(AVRO_MAGIC + b"rest")
    assert split_avro_files([good.as_uri(), (tmp_path / "gone.avro").as_uri()]) == ([good.as_uri()], [])
    assert is_transient_read_error(RuntimeError("java.net.SocketTimeoutException: Read timed out"))
    assert not is_transient_read_error(RuntimeError("org.apache.avro.AvroRuntimeException: Invalid sync!"))


def test_spark_connect_server_conf_holds_no_s3_secret(tmp_path: Path, monkeypatch):
    """The server's conf is readable by any Connect client (spark.conf.get): S3 keys go by environment."""
    import qp_assets.features.spark as spark_mod

    monkeypatch.setattr(spark_mod, "resolve_spark_jars", lambda settings: [Path("/x/avro-1.12.1.jar")])
    settings = dataclasses.replace(
        Settings.from_env(),
        iceberg_catalog_uri=f"sqlite:///{tmp_path}/c.db",
        iceberg_catalog_name="cat",
        aws_access_key_id="AKIA-unit-test",
        aws_secret_access_key="unit-test-secret",
        spark_connect_url="sc://127.0.0.1:35002",
    )
    conf = connect_server_conf(settings)
    assert not [k for k, v in conf.items() if v in ("AKIA-unit-test", "unit-test-secret")]
    assert (conf["spark.connect.grpc.binding.address"], conf["spark.connect.grpc.binding.port"]) == (
        "127.0.0.1",
        "35002",
    )
    assert conf["spark.master"] == "local[*]" and conf["spark.sql.catalog.cat.jdbc.busy_timeout"] == "60000"
    assert conf["spark.hadoop.fs.s3a.aws.credentials.provider"].endswith(
        "EnvironmentVariableCredentialsProvider"
    )
    assert connect_server_env(settings) == {
        "AWS_ACCESS_KEY_ID": "AKIA-unit-test",
        "AWS_SECRET_ACCESS_KEY": "unit-test-secret",
    }
    assert connect_endpoint("sc://10.0.0.5:17002/;user_id=x") == ("10.0.0.5", 17002)
    with pytest.raises(ValueError, match="SPARK_CONNECT_URL"):
        connect_endpoint("http://127.0.0.1:15002")


def test_spark_connect_url_follows_the_port_offset_and_can_be_switched_off(monkeypatch):
    for name in ("SPARK_CONNECT_URL", "QP_SPARK_CONNECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("QP_PORT_OFFSET", "1000")
    assert Settings.from_env().spark_connect_url == "sc://127.0.0.1:16002"
    monkeypatch.setenv("QP_SPARK_CONNECT", "off")
    assert Settings.from_env().spark_connect_url == ""


def test_sqlite_catalog_in_wal_mode_with_a_busy_timeout(tmp_path: Path):
    """A SQLite catalog is created in WAL mode (readers never block a commit) and PyIceberg waits for
    another writer's commit (60 s busy timeout) instead of failing with SQLITE_BUSY."""
    import sqlite3

    from qp_assets.features.catalog import SQLITE_BUSY_TIMEOUT_S, ensure_catalog_tables, sql_catalog

    db = tmp_path / "iceberg" / "c.db"
    settings = dataclasses.replace(Settings.from_env(), iceberg_catalog_uri=f"sqlite:///{db}")
    ensure_catalog_tables(settings)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.execute("PRAGMA journal_mode=DELETE")  # a catalog created before WAL: converted on next use
    ensure_catalog_tables(settings)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    engine = sql_catalog(settings).engine
    assert engine.url.query["timeout"] == f"{SQLITE_BUSY_TIMEOUT_S:g}"
    engine.dispose()


def test_select_tables_keeps_order_and_names_the_unknown() -> None:
    from qp_assets.features.ml_tables import ML_TABLES
    from qp_assets.features.transforms import TABLES, select_tables

    assert select_tables(None, TABLES, "table") == list(TABLES)
    assert len(select_tables([], TABLES, "table")) == 10
    assert select_tables(["vqe_results", "molecules"], TABLES, "table") == ["vqe_results", "molecules"]
    with pytest.raises(ValueError, match=r"tables: unknown ML table\(s\) \['molecules'\]; known: \['ml_"):
        select_tables(["ml_run_summary", "molecules"], ML_TABLES, "ML table")
