"""Kafka Connect (distributed) with the repo's S3 Avro sink plugin and connectors."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from qp_assets.stack import security
from qp_assets.stack.errors import StackError
from qp_assets.stack.maven import is_resolved, resolve_pom
from qp_assets.stack.services.base import (
    INFRA,
    Service,
    StackContext,
    http_ok,
    jvm_command,
)


def _connect_fetch(ctx: StackContext) -> None:
    resolve_pom(
        INFRA / "connect" / "worker" / "pom.xml", ctx.lib / "connect", log_file=ctx.logs / "maven-connect.log"
    )


def _connect_fetched(ctx: StackContext) -> bool:
    return is_resolved(INFRA / "connect" / "worker" / "pom.xml", ctx.lib / "connect")


def connect_plugin_dir(ctx: StackContext) -> Path:
    return ctx.root / "connect-plugins"


def _connect_before_start(ctx: StackContext) -> None:
    """Let the streaming area install its sink plugin into plugin.path (if that hook exists)."""
    plugin_dir = connect_plugin_dir(ctx)
    plugin_dir.mkdir(parents=True, exist_ok=True)
    hook = _streaming_hook("install_plugins")
    if hook is not None:
        try:
            hook(plugin_dir)
        except StackError:
            raise
        except Exception as exc:
            raise StackError(f"connect plugin install failed: {type(exc).__name__}: {exc}") from exc


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
    hook = _streaming_hook("ensure_connectors")
    if hook is not None:
        try:
            hook(ctx.settings)
        except StackError:
            raise
        except Exception as exc:
            raise StackError(f"connector setup failed: {type(exc).__name__}: {exc}") from exc


def _streaming_hook(name: str) -> Callable | None:
    """``qp_assets.streaming.connect.<name>`` (the Connect plugin install and connector setup)."""
    try:
        from qp_assets.streaming import connect
    except ImportError as exc:
        raise StackError(f"importing qp_assets.streaming.connect failed: {exc}") from exc
    return getattr(connect, name, None)


def _connect_env(ctx: StackContext) -> dict[str, str]:
    """The S3 credentials for the worker's EnvVarConfigProvider (the connector config only says ``${env:...}``)."""
    return {
        "AWS_ACCESS_KEY_ID": ctx.settings.aws_access_key_id,
        "AWS_SECRET_ACCESS_KEY": ctx.settings.aws_secret_access_key,
        **security.connect_env(),
    }


def _connect_properties(ctx: StackContext) -> Path:
    template = (INFRA / "connect" / "worker" / "connect-distributed.properties").read_text()
    offsets = ctx.data / "connect"
    offsets.mkdir(parents=True, exist_ok=True)
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
    fetch=_connect_fetch,
    fetched=_connect_fetched,
    before_start=_connect_before_start,
    command=_connect_command,
    env=_connect_env,
    probe=_connect_probe,
    after_ready=_connect_after_ready,
    depends_on=("seaweedfs", "kafka", "registry"),  # the S3 sink reads schemas, writes S3
    start_timeout=150,
    stop_grace=20,
)
