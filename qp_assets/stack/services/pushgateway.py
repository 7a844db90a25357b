"""Prometheus PushGateway (Debian package), persistence file under the data dir."""

from __future__ import annotations

from pathlib import Path

from qp_assets.stack.services.base import StackContext, prometheus_family_service


def _pushgateway_flags(ctx: StackContext, data: Path) -> list[str]:
    return [f"--persistence.file={data / 'metrics.db'}", "--persistence.interval=30s"]


SERVICE = prometheus_family_service(
    "pushgateway", "prometheus-pushgateway", _pushgateway_flags, start_timeout=30, stop_grace=10
)
