"""The feature build on a local Spark standalone cluster (master + 1 worker from pyspark's own
bin/spark-class): build_days builds both golden days in one job (one snapshot per table), each day with
exactly the golden rows, its executors on the worker.

That a cluster build writes exactly the rows of a build elsewhere is asserted in
tests/test_export_airflow_e2e.py (`dagster job execute` with ``SPARK_MASTER=spark://...`` against the
Airflow run on the stack's Spark Connect server); a second, local-mode build here repeated it at the cost
of a JVM start and a two-day build.
"""

from __future__ import annotations

import socket
import uuid

import pytest

from qp_assets.features import golden
from qp_assets.features.catalog import private_catalog
from qp_assets.features.transforms import DATA_TABLES, TABLES

pytestmark = [pytest.mark.spark, pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(600)]

DAYS = [golden.GOLDEN_DAY1, golden.GOLDEN_DAY2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ports() -> tuple[int, int, int]:
    """The documented ports (7077, 8090, 8091) when free, else free ephemeral ones."""
    from qp_assets.features.cluster import port_open

    wanted = (7077, 8090, 8091)
    return wanted if not any(port_open(p) for p in wanted) else (_free_port(), _free_port(), _free_port())


@pytest.fixture(scope="module")
def env(stack, tmp_path_factory):
    from pyspark.sql import SparkSession

    from qp_assets.s3 import s3_client

    active = SparkSession.getActiveSession()
    if active is not None:  # another module's session: this module needs its own masters
        active.stop()
    tmp = tmp_path_factory.mktemp("features-cluster")
    prefix = f"tests/features-cluster-{uuid.uuid4().hex[:10]}/"
    settings = private_catalog(stack, "qp_cluster_test", tmp / "catalog.db", prefix)
    client = s3_client(settings)
    sink = golden.LandingSink(s3_client=client, bucket=settings.bucket, prefix=prefix)
    files = golden.golden_files()
    uris = [f.write(sink) for f in files]
    yield {"settings": settings, "sink": sink, "files": files, "uris": uris}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=settings.bucket, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=settings.bucket, Delete={"Objects": keys})


def _build(env, master: str, namespace: str):
    from qp_assets.features.build import build_days
    from qp_assets.features.spark import get_spark_session

    spark = get_spark_session(env["settings"], master=master, app_name=f"qp-features-{namespace}")
    try:
        assert spark.sparkContext.master == master
        results = build_days(
            DAYS,
            spark,
            env["settings"],
            run_id=f"run-{namespace}",
            raw_root=env["sink"].raw_root,
            namespace=namespace,
        )
        executors = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size()
    finally:
        spark.stop()
    return results, executors


def _rows(env, namespace: str, table: str) -> list[dict]:
    from qp_assets.features.catalog import sql_catalog

    arrow = sql_catalog(env["settings"]).load_table(f"{namespace}.{table}").scan().to_arrow()
    keys = list(TABLES[table].keys)
    return sorted(arrow.to_pylist(), key=lambda r: tuple(r[k] for k in keys))


def test_standalone_cluster_builds_both_golden_days_in_one_job(env):
    from qp_assets.features.cluster import start_local_cluster

    master_port, ui_port, worker_ui_port = _ports()
    with start_local_cluster(
        env["settings"], master_port=master_port, master_webui_port=ui_port, worker_webui_port=worker_ui_port
    ) as cluster:
        assert cluster.alive_workers() == 1
        on_cluster, executors = _build(env, cluster.master_url, "features_cluster")
    assert executors >= 2  # the driver plus the worker's executor

    for day_cluster, day in zip(on_cluster, DAYS, strict=True):
        expected = golden.expected_rows(golden.records_of_day(env["files"], day))
        assert {t: day_cluster.row_counts[t] for t in DATA_TABLES} == expected
    assert set().union(*(d.source_files for d in on_cluster)) == set(env["uris"])  # every landed file read
    for table in DATA_TABLES:
        rows = _rows(env, "features_cluster", table)
        assert len(rows) == sum(
            golden.expected_rows(golden.records_of_day(env["files"], d))[table] for d in DAYS
        )
    meta = _rows(env, "features_cluster", "processing_metadata")
    assert len(meta) == 2 and {m["spark_master"] for m in meta} == {cluster.master_url}
    assert {m["dagster_run_id"] for m in meta} == {"run-features_cluster"}
    # one Spark job per table for both days: every table has exactly one snapshot
    from qp_assets.features.catalog import snapshot_history

    for table in DATA_TABLES:
        assert len(snapshot_history(table, env["settings"], "features_cluster")) == 1
