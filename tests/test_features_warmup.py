"""The Spark Connect server's warm-up build (qp_assets/features/warmup.py): it builds the golden first day for
real on the stack's server, and leaves nothing behind (no objects, no namespace, no catalog file)."""

from __future__ import annotations

import pytest

from qp_assets.features import golden, warmup


@pytest.mark.parametrize(
    ("value", "on"), [(None, True), ("on", True), ("off", False), ("0", False), ("no", False)]
)
def test_warmup_switch(monkeypatch, value, on):
    if value is None:
        monkeypatch.delenv("QP_SPARK_WARMUP", raising=False)
    else:
        monkeypatch.setenv("QP_SPARK_WARMUP", value)
    assert warmup.enabled() is on


@pytest.mark.services
@pytest.mark.spark
def test_warmup_builds_and_removes_everything(stack):
    from qp_assets.features.spark import connect_server_reachable, remote_session
    from qp_assets.s3 import s3_client

    if not connect_server_reachable(stack):
        pytest.fail(f"the stack's Spark Connect server {stack.spark_connect_url} is not up")
    figures = warmup.warm_up(stack)
    expected = golden.expected_rows(golden.records_of_day(golden.golden_files(), golden.GOLDEN_DAY1))
    assert figures["rows"] == expected["vqe_results"]
    assert figures["build_s"] > 0
    listed = s3_client(stack).list_objects_v2(Bucket=stack.bucket, Prefix="_warmup/")
    assert listed.get("KeyCount", 0) == 0, [o["Key"] for o in listed.get("Contents", [])]
    assert not list((stack.runtime_dir / "spark-work" / "warmup").glob("*.db"))
    spark = remote_session(stack)
    namespaces = {row[0] for row in spark.sql(f"SHOW NAMESPACES IN {stack.iceberg_catalog_name}").collect()}
    assert warmup.WARMUP_NAMESPACE not in namespaces
