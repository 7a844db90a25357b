"""Prometheus PushGateway (Debian package), persistence file under the data dir."""

from __future__ import annotations

from qp_assets.stack.errors import StackError
from qp_assets.stack.services.base import (
    Service,
    StackContext,
    debian_binary,
    http_ok,
)


def _pushgateway_command(ctx: StackContext) -> list[str]:
    binary = debian_binary("prometheus-pushgateway")
    if binary is None:
        raise StackError("prometheus-pushgateway not installed; run 'qp stack fetch' (apt-get install)")
    data = ctx.data / "pushgateway"
    data.mkdir(parents=True, exist_ok=True)
    pg = ctx.pushgateway
    return [
        binary,
        f"--web.listen-address=127.0.0.1:{pg.port}",
        f"--persistence.file={data / 'metrics.db'}",
        "--persistence.interval=30s",
    ]


def _pushgateway_probe(ctx: StackContext) -> bool:
    pg = ctx.pushgateway
    return http_ok(f"http://{pg.host}:{pg.port}/-/ready")


SERVICE = Service(
    name="pushgateway",
    debian_package="prometheus-pushgateway",
    command=_pushgateway_command,
    probe=_pushgateway_probe,
    start_timeout=30,
    stop_grace=10,
)
