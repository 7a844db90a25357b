"""Apache Kafka, one KRaft node (broker + controller); storage formatted before the first start."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from qp_assets.stack import security
from qp_assets.stack.errors import StackError
from qp_assets.stack.services.base import (
    FAST_START_JIT,
    INFRA,
    Service,
    StackContext,
    java_executable,
    jvm_command,
    write_log4j2,
)


def _kafka_properties(ctx: StackContext) -> Path:
    kafka = ctx.kafka
    ctl = ctx.kafka_controller_port
    logs_dir = ctx.data_dir("kafka", "logs")
    template = (INFRA / "kafka" / "server.properties").read_text()
    rendered = template.format(
        host=kafka.host if kafka.local else "127.0.0.1",
        port=kafka.port,
        controller_port=ctl,
        log_dirs=logs_dir,
    )
    return security.write_private(
        ctx.conf / "kafka" / "server.properties", security.kafka_properties(ctx, rendered)
    )


def kafka_random_uuid() -> str:
    """A Kafka cluster id like ``StorageTool random-uuid``: URL-safe base64 of 16 random bytes, no padding."""
    import base64
    import secrets

    while True:
        text = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        if not text.startswith("-"):  # Kafka avoids ids that look like command-line flags
            return text


def _kafka_format_storage(ctx: StackContext) -> None:
    """Format KRaft storage once (cluster id kept in data/kafka/cluster.id; --ignore-formatted)."""
    props = _kafka_properties(ctx)
    if (ctx.data / "kafka" / "logs" / "meta.properties").is_file():
        security.check_kafka_storage(ctx)
        return
    cid_file = ctx.data / "kafka" / "cluster.id"
    classpath = f"{ctx.lib / 'kafka'}/*"
    java = java_executable()
    if not cid_file.is_file():
        cid_file.write_text(kafka_random_uuid() + "\n")
    cluster_id = cid_file.read_text().strip()
    log = ctx.log_file("kafka")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        rc = subprocess.call(
            [
                java,
                *FAST_START_JIT,
                "-XX:+UseSerialGC",
                f"-Dlog4j2.configurationFile=file:{write_log4j2(ctx, 'kafka')}",
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                cluster_id,
                "-c",
                str(props),
                "--ignore-formatted",
                *security.kafka_format_args(ctx),
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
    if rc != 0:
        raise StackError(f"kafka storage format failed (exit {rc}); see {log}")
    security.after_kafka_format(ctx)


def _kafka_command(ctx: StackContext) -> list[str]:
    return jvm_command(ctx, "kafka", ("512m", "768m"), "kafka.Kafka", str(_kafka_properties(ctx)))


def _kafka_probe(ctx: StackContext) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient(
            {
                "bootstrap.servers": ctx.settings.kafka_bootstrap_servers,
                "socket.timeout.ms": 2000,
                "logger": _silent_logger(),
                **security.kafka_probe_config(),
            }
        )
        md = admin.list_topics(timeout=3)
        return len(md.brokers) > 0
    except Exception:
        return False


def _silent_logger():

    logger = logging.getLogger("qp_assets.stack.probe")
    logger.propagate = False
    logger.addHandler(logging.NullHandler())
    return logger


SERVICE = Service(
    name="kafka",
    ports=lambda c: [c.kafka.port, c.kafka_controller_port],
    maven_pom=INFRA / "kafka" / "pom.xml",
    before_start=_kafka_format_storage,
    command=_kafka_command,
    probe=_kafka_probe,
    start_timeout=120,
    stop_grace=30,
)
