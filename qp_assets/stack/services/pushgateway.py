"""Prometheus PushGateway (Debian package), persistence file under the data dir."""

from __future__ import annotations

from qp_assets.stack.services.base import (
    Service,
    StackContext,
    ready_probe,
    require_debian_binary,
)


def _pushgateway_command(ctx: StackContext) -> list[str]:
    binary = require_debian_binary("prometheus-pushgateway")
    data = ctx.data_dir("pushgateway")
    pg = ctx.pushgateway
    return [
        binary,
        f"--web.listen-address=127.0.0.1:{pg.port}",
        f"--persistence.file={data / 'metrics.db'}",
        "--persistence.interval=30s",
    ]


SERVICE = Service(
    name="pushgateway",
    debian_package="prometheus-pushgateway",
    command=_pushgateway_command,
    probe=ready_probe("pushgateway_url"),
    start_timeout=30,
    stop_grace=10,
)
