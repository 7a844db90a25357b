"""One home for endpoints, credentials and paths.

Every value comes from the environment, with local-only defaults that point at the embedded stack
started by ``qp stack up``. Nothing secret lives in the repository: the default S3 keys below are
the throwaway keys of the loopback-only SeaweedFS that the stack starts.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def port_offset() -> int:
    """``QP_PORT_OFFSET`` (default 0): added to every default port of the local stack.

    One number moves a whole stack (Kafka 9092 -> 9092 + offset, registry, Connect, S3, PushGateway,
    Prometheus and every internal listener), so a second stack (the test suite's, a benchmark's) runs
    beside the user's without touching it. Explicit endpoint variables still win.
    """
    raw = os.environ.get("QP_PORT_OFFSET", "") or "0"
    try:
        offset = int(raw)
    except ValueError:
        raise ValueError(f"QP_PORT_OFFSET={raw!r} is not an integer") from None
    if not 0 <= offset <= 40000:
        raise ValueError(f"QP_PORT_OFFSET={raw!r} is out of range 0-40000")
    return offset


def spark_connect_url(offset: int, endpoint=None) -> str:
    """The stack's Spark Connect server, ``sc://127.0.0.1:<15002 + offset>`` (``SPARK_CONNECT_URL``
    overrides); ``QP_SPARK_CONNECT=off`` gives "" (feature builds start their own in-process Spark)."""
    if os.environ.get("QP_SPARK_CONNECT", "").strip().lower() in ("0", "off", "false", "no"):
        return ""
    return (endpoint or _env)("SPARK_CONNECT_URL", f"sc://127.0.0.1:{15002 + offset}")


def runtime_dir() -> Path:
    """Project-local runtime directory (logs, PID files, data, cached jars); ``QP_HOME`` overrides."""
    return Path(_env("QP_HOME", str(PROJECT_ROOT / ".qp"))).resolve()


def prepare_dagster_home(home: Path | None = None) -> Path:
    """Make ``DAGSTER_HOME`` ready for ``dagster dev`` / ``dagster job execute`` and export it.

    The home is ``home``, else ``$DAGSTER_HOME``, else ``<runtime_dir>/dagster_home``. The repo's
    ``dagster.yaml`` (run queue limits, pools, telemetry off) is copied in when the home has none; an
    existing one is the user's and is left alone. Called by ``qp stack up``, ``qp e2e`` and the scripts.
    """
    home = Path(home or os.environ.get("DAGSTER_HOME") or runtime_dir() / "dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists():
        shutil.copy(PROJECT_ROOT / "dagster.yaml", target)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


@dataclass(frozen=True)
class Settings:
    """Endpoints of the platform's services (defaults: the local stack on 127.0.0.1)."""

    kafka_bootstrap_servers: str
    schema_registry_url: str
    kafka_connect_url: str
    s3_endpoint_url: str
    aws_access_key_id: str
    aws_secret_access_key: str = field(repr=False)  # never in a printed Settings
    aws_region: str
    bucket: str
    pushgateway_url: str
    prometheus_url: str
    iceberg_catalog_name: str
    iceberg_catalog_uri: str
    iceberg_warehouse: str
    spark_master: str
    runtime_dir: Path
    #: Spark Connect server of the stack (``sc://host:port``), or "" for an in-process Spark per session.
    spark_connect_url: str = ""

    @classmethod
    def from_env(cls, local_offset: int | None = None) -> Settings:
        """Settings from the environment. ``local_offset``: ignore the endpoint variables and point at the
        local stack whose ports are shifted by that offset (for a throw-away second stack)."""
        rt = runtime_dir()
        off = port_offset() if local_offset is None else local_offset
        endpoint = _env if local_offset is None else (lambda _name, default: default)
        bucket = _env("QP_BUCKET", "local-vqe-results")
        return cls(
            kafka_bootstrap_servers=endpoint("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{9092 + off}"),
            schema_registry_url=endpoint(
                "SCHEMA_REGISTRY_URL", f"http://127.0.0.1:{8081 + off}/apis/ccompat/v7"
            ),
            kafka_connect_url=endpoint("KAFKA_CONNECT_URL", f"http://127.0.0.1:{8083 + off}"),
            s3_endpoint_url=endpoint("S3_ENDPOINT_URL", f"http://127.0.0.1:{8333 + off}"),
            aws_access_key_id=_env("AWS_ACCESS_KEY_ID", "qp-local"),
            aws_secret_access_key=_env("AWS_SECRET_ACCESS_KEY", "qp-local-secret"),
            aws_region=_env("AWS_REGION", "us-east-1"),
            bucket=bucket,
            pushgateway_url=endpoint("PUSHGATEWAY_URL", f"127.0.0.1:{9091 + off}"),
            prometheus_url=endpoint("PROMETHEUS_URL", f"http://127.0.0.1:{9090 + off}"),
            iceberg_catalog_name=_env("ICEBERG_CATALOG_NAME", "qp"),
            iceberg_catalog_uri=_env("ICEBERG_CATALOG_URI", f"sqlite:///{rt / 'iceberg' / 'catalog.db'}"),
            iceberg_warehouse=_env("ICEBERG_WAREHOUSE", f"s3://{bucket}/warehouse"),
            spark_master=_env("SPARK_MASTER", "local[*]"),
            runtime_dir=rt,
            spark_connect_url=spark_connect_url(off, endpoint),
        )
