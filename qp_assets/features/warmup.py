"""Warm the stack's Spark Connect server up with one small feature build, so the first real one is not cold.

A freshly started server's first build pays class loading and JIT of the Avro reader, s3a, Iceberg's
writers and the JDBC catalog: 32.6 s against 10.9 s for the next one (same day's files, same load). The
server's launcher (``python -m qp_assets.features.spark``) starts :func:`main` in the background right
before it becomes the server; it waits for the port, then builds the golden input's first day
(``features/golden.py``: 7 runs) into a private catalog (``qp_warmup``, its own SQLite file under
``<QP_HOME>/spark-work/warmup/``) from objects under ``_warmup/<tag>/`` in the bucket, and removes all of
it: tables (purged), namespace, objects, catalog file. Nothing of it is visible in the stack's catalog or
under ``raw/topics``. ``QP_SPARK_WARMUP=off`` disables it. Bounded: the process ends itself after
``WARMUP_LIMIT_S`` whatever happens.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import time
import uuid
from pathlib import Path

from qp_assets.settings import Settings, load_env

log = logging.getLogger(__name__)

#: Hard bound on the whole warm-up, seconds (SIGALRM ends the process).
WARMUP_LIMIT_S = 300
#: How long to wait for the server's port, seconds.
PORT_WAIT_S = 120.0
#: Tables the warm-up builds: one table exercises every cold path (Avro over s3a, the window, an Iceberg
#: overwrite through S3FileIO, the JDBC catalog commit) in a third of the time of all ten, so it competes
#: less with the first requests of a fresh stack (the latency benchmark submits right after stack start).
WARMUP_TABLES = ("vqe_results", "processing_metadata")
#: Namespace of the warm-up tables in the private catalog.
WARMUP_NAMESPACE = "warmup"


def enabled() -> bool:
    """False when ``QP_SPARK_WARMUP`` is ``off`` (also ``0``/``false``/``no``)."""
    return load_env().spark_warmup


def _wait_for_port(settings: Settings, limit_s: float) -> bool:
    from qp_assets.features.spark import connect_endpoint

    host, port = connect_endpoint(settings.spark_connect_url)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            time.sleep(0.5)
    return False


def warm_up(settings: Settings) -> dict[str, float | int]:
    """Build the golden first day once on the Spark Connect server of ``settings`` and remove everything
    the build wrote. Returns {"build_s": seconds of the build, "rows": vqe_results rows it built}."""
    from qp_assets.features import golden
    from qp_assets.features.build import build_days, table_identifier
    from qp_assets.features.catalog import private_catalog
    from qp_assets.features.spark import remote_session
    from qp_assets.features.transforms import TABLES
    from qp_assets.s3 import s3_client

    tag = uuid.uuid4().hex[:12]
    prefix = f"_warmup/{tag}/"
    catalog_file = settings.runtime_dir / "spark-work" / "warmup" / f"{tag}.db"
    catalog_file.parent.mkdir(parents=True, exist_ok=True)
    private = private_catalog(settings, "qp_warmup", catalog_file, prefix)
    client = s3_client(settings)
    _delete_prefix(client, settings.bucket, "_warmup/")  # left by a warm-up stopped half-way (stack down)
    for stale in catalog_file.parent.glob("*.db"):
        stale.unlink(missing_ok=True)
    sink = golden.LandingSink(s3_client=client, bucket=settings.bucket, prefix=prefix)
    spark = None
    try:
        for landed in golden.golden_files():
            landed.write(sink)
        spark = remote_session(private)
        started = time.monotonic()
        (result,) = build_days(
            [golden.GOLDEN_DAY1],
            spark,
            private,
            tables=WARMUP_TABLES,
            raw_root=sink.raw_root,
            namespace=WARMUP_NAMESPACE,
        )
        return {
            "build_s": round(time.monotonic() - started, 2),
            "rows": result.row_counts.get("vqe_results", 0),
        }
    finally:
        if spark is not None:
            try:
                for name in TABLES:
                    spark.sql(
                        f"DROP TABLE IF EXISTS {table_identifier('qp_warmup', WARMUP_NAMESPACE, name)} PURGE"
                    )
                spark.sql(f"DROP NAMESPACE IF EXISTS qp_warmup.{WARMUP_NAMESPACE}")
            except Exception:  # noqa: BLE001 - the objects below go anyway; the catalog file too
                log.warning("warm-up: dropping its tables failed", exc_info=True)
        _delete_prefix(client, settings.bucket, prefix)
        catalog_file.unlink(missing_ok=True)


def _delete_prefix(client, bucket: str, prefix: str) -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})


def start_in_background(log_file: Path) -> None:
    """Start :func:`main` detached (own session, re-parented away from the caller, which is about to exec
    the server), appending its output to ``log_file``. No-op when disabled."""
    import subprocess

    if not enabled():
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    # sh backgrounds the warm-up and exits at once: the warm-up is then nobody's child but init's, so the
    # server (a JVM that never reaps children) leaves no zombie behind when it ends.
    subprocess.run(
        [
            "/bin/sh",
            "-c",
            'exec "$0" -m qp_assets.features.warmup >>"$1" 2>&1 </dev/null &',
            sys.executable,
            str(log_file),
        ],  # fmt: skip
        start_new_session=True,
        check=True,
        timeout=10,
    )


def main() -> int:
    """Entry point of the background warm-up (see the module doc); exit 0 also when the server never came."""
    signal.alarm(WARMUP_LIMIT_S)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings.from_env()
    if not settings.spark_connect_url or not _wait_for_port(settings, PORT_WAIT_S):
        print(f"warm-up: Spark Connect server {settings.spark_connect_url} not up within {PORT_WAIT_S:.0f} s")
        return 0
    started = time.monotonic()
    try:
        figures = warm_up(settings)
    except Exception as exc:  # noqa: BLE001 - a failed warm-up only costs the first build its speed
        print(f"warm-up failed after {time.monotonic() - started:.1f} s: {type(exc).__name__}: {exc}")
        return 1
    print(
        f"{time.strftime('%H:%M:%S')} warm-up: build {figures['build_s']} s ({figures['rows']} rows), "
        f"{time.monotonic() - started:.1f} s in all, removed"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
