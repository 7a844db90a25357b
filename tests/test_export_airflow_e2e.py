"""`airflow dags test quantum_feature_processing <day>` end to end against the local stack.

The exported DAG (real Definitions, real Airflow 3 in .qp/airflow-venv) materializes every feature asset
of the golden day through the Dagster CLI, one task per asset, into an isolated bucket + Iceberg catalog
(selected only through the Settings env vars QP_BUCKET / ICEBERG_CATALOG_URI / ICEBERG_WAREHOUSE).
Then the Dagster job `feature_processing_job` runs the same partition on a Spark standalone master +
worker (cluster mode, selected only by SPARK_MASTER); since each materialization overwrites exactly
its day, the data tables must hold the same rows after both, and the counts must equal the golden
expectation. The success mail of the sink task goes to a local aiosmtpd server.

Slow: ten Dagster runs, each with its own Spark session (about 40 s each on an idle 2-core machine).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from airflow_db import migrated_airflow_db

from qp_assets.export.airflow_dags import AirflowExportOptions, export_airflow
from qp_assets.export.airflow_env import AirflowEnvError, airflow_env, ensure_airflow_venv
from qp_assets.export.graph import exported_assets

pytestmark = [pytest.mark.services, pytest.mark.spark, pytest.mark.slow, pytest.mark.timeout(2400)]

EMAIL = "chem-team@example.org"


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], str]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd hook name
        self.messages.append((list(envelope.rcpt_tos), envelope.content.decode("utf8", "replace")))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rows(table: str, day, settings) -> list[str]:
    from qp_assets.features.catalog import read_rows

    return sorted(
        json.dumps(r, sort_keys=True, default=str)
        for r in read_rows(table, day=day, settings=settings).to_pylist()
    )


@pytest.fixture(scope="module")
def airflow_day(stack):
    """Run the exported DAG for the golden day; yields what the assertions need; cleans up its bucket."""
    import dataclasses

    from aiosmtpd.controller import Controller

    from qp_assets.definitions import defs
    from qp_assets.features.golden import GOLDEN_DAY1, LandingSink, golden_files
    from qp_assets.s3 import s3_client

    try:
        airflow_python = ensure_airflow_venv()
    except AirflowEnvError as exc:
        pytest.fail(str(exc), pytrace=False)
    tag = uuid.uuid4().hex[:8]
    work = stack.runtime_dir / "tmp" / f"airflow-e2e-{tag}"
    (work / "dagster_home").mkdir(parents=True)
    (work / "airflow_home").mkdir()
    bucket = f"qp-airflow-{tag}"
    env_extra = {
        "QP_BUCKET": bucket,
        "ICEBERG_CATALOG_URI": f"sqlite:///{work / 'catalog.db'}",
        "ICEBERG_WAREHOUSE": f"s3://{bucket}/warehouse",
    }
    settings = dataclasses.replace(
        stack,
        bucket=bucket,
        iceberg_catalog_uri=env_extra["ICEBERG_CATALOG_URI"],
        iceberg_warehouse=env_extra["ICEBERG_WAREHOUSE"],
    )
    client = s3_client(settings)
    client.create_bucket(Bucket=bucket)
    for f in golden_files():
        f.write(LandingSink(s3_client=client, bucket=bucket))

    inbox = _Inbox()
    smtp_port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    options = AirflowExportOptions(email=(EMAIL,), retries=0, dagster_home=str(work / "dagster_home"))
    export_airflow(defs, work / "dags", options)
    smtp_conn = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": smtp_port,
        "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "airflow@localhost"},
    }
    env = airflow_env(
        work / "airflow_home",
        work / "dags",
        {
            **env_extra,
            "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(smtp_conn),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",  # task starts/ends and callbacks in the log
        },
    )
    airflow = str(airflow_python.parent / "airflow")
    try:
        migrated_airflow_db(airflow_python, env)
        started = time.monotonic()
        run = subprocess.run(
            [airflow, "dags", "test", "quantum_feature_processing", GOLDEN_DAY1.isoformat()],
            env=env,
            capture_output=True,
            text=True,
            timeout=2000,
        )
        (work / "dags_test.log").write_text(run.stdout + run.stderr)
        deadline = time.monotonic() + 20
        while not inbox.messages and time.monotonic() < deadline:
            time.sleep(0.5)
        yield {
            "run": run,
            "seconds": time.monotonic() - started,
            "settings": settings,
            "env": {**os.environ, **env_extra, "DAGSTER_HOME": str(work / "dagster_home")},
            "day": GOLDEN_DAY1,
            "inbox": inbox,
            "task_ids": [a.task_id for a in exported_assets(defs)],
            "log": work / "dags_test.log",
        }
    finally:
        controller.stop()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for page in pages:
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        client.delete_bucket(Bucket=bucket)
        shutil.rmtree(work / "airflow_home", ignore_errors=True)


def test_dags_test_runs_every_asset_task(airflow_day) -> None:
    run = airflow_day["run"]
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"see {airflow_day['log']}"
    for task_id in airflow_day["task_ids"]:
        assert f"[DAG TEST] end task task_id={task_id}" in output, task_id
    assert "state=success" in output and "state=failed" not in output


def _free_or(port: int) -> int:
    from qp_assets.features.cluster import port_open

    return _free_port() if port_open(port) else port


def _cluster_apps(webui_port: int) -> list[dict]:
    """Applications the standalone master has seen (active ones finish registering a moment after exit)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{webui_port}/json/", timeout=5) as resp:
        status = json.load(resp)
    return status.get("completedapps", []) + status.get("activeapps", [])


def test_dagster_job_on_spark_cluster_gives_airflow_rows(airflow_day) -> None:
    """Parity + cluster mode: the Dagster job for the same day, on a Spark standalone master + worker
    (selected only by SPARK_MASTER), leaves exactly the rows the Airflow run wrote."""
    from qp_assets.features.cluster import start_local_cluster
    from qp_assets.features.golden import expected_rows, golden_files, records_of_day
    from qp_assets.features.transforms import DATA_TABLES

    settings, day = airflow_day["settings"], airflow_day["day"]
    after_airflow = {t: _rows(t, day, settings) for t in DATA_TABLES}
    expected = expected_rows(records_of_day(golden_files(), day))
    assert {t: len(v) for t, v in after_airflow.items()} == {t: expected[t] for t in DATA_TABLES}
    assert len(_rows("processing_metadata", day, settings)) == 1

    cluster = start_local_cluster(
        settings,
        master_port=_free_or(7077),
        master_webui_port=_free_or(8090),
        worker_webui_port=_free_or(8091),
        worker_memory="1g",
        worker_cores=1,
    )
    try:
        assert cluster.alive_workers() == 1
        dagster_run = subprocess.run(
            [
                str(Path(sys.executable).parent / "dagster"),
                "job",
                "execute",
                "-m",
                "qp_assets.definitions",
                "-j",
                "feature_processing_job",
                "--tags",
                json.dumps({"dagster/partition": day.isoformat()}),
            ],
            env={**airflow_day["env"], "SPARK_MASTER": cluster.master_url},
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert dagster_run.returncode == 0, dagster_run.stderr[-3000:]
        apps = _cluster_apps(cluster.master_webui_port)
        assert len(apps) == 1, apps  # the job's Spark application ran on the standalone cluster
    finally:
        cluster.stop()
    after_dagster = {t: _rows(t, day, settings) for t in DATA_TABLES}
    for table in DATA_TABLES:
        assert after_dagster[table] == after_airflow[table], table
    # processing_metadata logs one row per materialization: the Airflow one (on the stack's Spark Connect
    # server, whose master is local[*]) and the cluster one
    meta = [json.loads(r) for r in _rows("processing_metadata", day, settings)]
    assert sorted(m["spark_master"] for m in meta) == sorted(["spark-connect (local[*])", cluster.master_url])


def test_success_mail_sent_once_to_configured_address(airflow_day) -> None:
    messages = airflow_day["inbox"].messages
    assert len(messages) == 1, [m[1][:200] for m in messages]
    recipients, content = messages[0]
    assert recipients == [EMAIL]
    assert f"quantum_feature_processing {airflow_day['day'].isoformat()} succeeded" in content
