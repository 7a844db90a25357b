"""pyspark's Spark Connect server: the feature builds' long-lived Spark."""

from __future__ import annotations

import sys

from qp_assets.settings import PROJECT_ROOT
from qp_assets.stack.errors import stack_env
from qp_assets.stack.services.base import (
    Service,
    StackContext,
    port_open,
)


def _spark_connect_command(ctx: StackContext) -> list[str]:
    """``python -m qp_assets.features.spark``: renders the server's conf (the feature tables' own Spark
    configuration, jars resolved once) and execs spark-submit in place (same pid), under ``nice``
    (``QP_SPARK_NICE``, default 10): on a small machine the feature builds (and the server's warm-up build)
    take the CPU the VQE runs leave, instead of slowing the runs whose results users wait for; an idle
    machine gives the builds all of it."""
    niceness = stack_env().spark_nice
    return [
        *(["nice", "-n", str(niceness)] if niceness else []),
        sys.executable,
        "-m",
        "qp_assets.features.spark",
    ]


def _spark_connect_env(ctx: StackContext) -> dict[str, str]:
    return {"QP_HOME": str(ctx.root), "PYTHONPATH": str(PROJECT_ROOT)}


SERVICE = Service(
    name="spark-connect",
    command=_spark_connect_command,
    env=_spark_connect_env,
    probe=lambda c: port_open(c.spark_connect),
    depends_on=("seaweedfs",),  # the warehouse and landed files live in S3
    start_timeout=240,  # a first start resolves the Spark jars with Maven
    stop_grace=20,
)
