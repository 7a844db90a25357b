"""Kafka Connect (distributed) with the repo's S3 Avro sink plugin and connectors."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qp_assets.stack import security
from qp_assets.stack.errors import StackError
from qp_assets.stack.services.base import (
    INFRA,
    Service,
    StackContext,
    http_ok,
    jvm_command,
)
from qp_assets.streaming import connect as streaming_connect


def connect_plugin_dir(ctx: StackContext) -> Path:
    return ctx.root / "connect-plugins"


def _connect_before_start(ctx: StackContext) -> None:
    """Install the streaming area's S3 sink plugin into the worker's plugin.path."""
    plugin_dir = connect_plugin_dir(ctx)
    plugin_dir.mkdir(parents=True, exist_ok=True)
    _as_stack_error("connect plugin install", streaming_connect.install_plugins, plugin_dir)


def _as_stack_error(what: str, step: Callable[..., Any], *args: Any) -> None:
    """Run ``step(*args)``; any failure other than a StackError becomes one saying ``what`` failed."""
    try:
        step(*args)
    except StackError:
        raise
    except Exception as exc:
        raise StackError(f"{what} failed: {type(exc).__name__}: {exc}") from exc


def _connect_restart_if_config_changed(ctx: StackContext) -> None:
    """Restart our Connect worker if ``infra/connect/worker/connect-distributed.properties`` changed since it started.

    A worker keeps the config it started with; connectors written for a newer worker config (e.g. one that
    resolves ``${env:...}`` credentials through a config provider) would silently fail on it.
    """
    from qp_assets.stack import launcher, process

    path = ctx.conf / "connect" / "connect-distributed.properties"
    pid = process.live_pid(ctx.pid_file("connect"))
    if pid is None or not ctx.connect.local or not path.is_file():
        return
    running = path.read_text()
    if _connect_properties(ctx).read_text() == running:
        return
    logging.getLogger(__name__).warning(
        "connect: worker config changed since pid %d started; restarting it", pid
    )
    svc = SERVICE
    process.stop_group(pid, svc.stop_grace)
    ctx.pid_file("connect").unlink(missing_ok=True)
    launcher._wait_ports_released(ctx, svc)
    launcher._start(ctx, svc)


def _connect_after_ready(ctx: StackContext) -> None:
    _connect_restart_if_config_changed(ctx)
    _as_stack_error("connector setup", streaming_connect.ensure_connectors, ctx.settings)


def _connect_env(ctx: StackContext) -> dict[str, str]:
    """The S3 credentials for the worker's EnvVarConfigProvider (the connector config only says ``${env:...}``)."""
    return {
        "AWS_ACCESS_KEY_ID": ctx.settings.aws_access_key_id,
        "AWS_SECRET_ACCESS_KEY": ctx.settings.aws_secret_access_key,
        **security.connect_env(),
    }


def _connect_properties(ctx: StackContext) -> Path:
    template = (INFRA / "connect" / "worker" / "connect-distributed.properties").read_text()
    rendered = template.format(
        bootstrap=ctx.settings.kafka_bootstrap_servers,
        rest_host="127.0.0.1",
        rest_port=ctx.connect.port,
        plugin_path=connect_plugin_dir(ctx),
    )
    return security.write_private(
        ctx.conf / "connect" / "connect-distributed.properties", security.connect_properties(rendered)
    )


def _connect_command(ctx: StackContext) -> list[str]:
    main = "org.apache.kafka.connect.cli.ConnectDistributed"
    return jvm_command(ctx, "connect", ("256m", "512m"), main, str(_connect_properties(ctx)))


def _connect_probe(ctx: StackContext) -> bool:
    base = ctx.settings.kafka_connect_url.rstrip("/")
    return http_ok(f"{base}/connectors")


SERVICE = Service(
    name="connect",
    maven_pom=INFRA / "connect" / "worker" / "pom.xml",
    before_start=_connect_before_start,
    command=_connect_command,
    env=_connect_env,
    probe=_connect_probe,
    after_ready=_connect_after_ready,
    depends_on=("seaweedfs", "kafka", "registry"),  # the S3 sink reads schemas, writes S3
    start_timeout=150,
    stop_grace=20,
)
