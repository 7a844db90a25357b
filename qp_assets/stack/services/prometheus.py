"""Prometheus (Debian package): scrapes the PushGateway; config rendered from infra/prometheus."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from pathlib import Path

from qp_assets.stack.services.base import INFRA, StackContext, prometheus_family_service


def render_prometheus_config(ctx: StackContext) -> Path:
    """Copy infra/prometheus/prometheus.yml into conf/ with the configured ports and absolute rule paths."""
    import yaml

    source = INFRA / "prometheus" / "prometheus.yml"
    text = source.read_text()
    pg, prom = ctx.pushgateway, ctx.prometheus
    text = (
        text.replace("127.0.0.1:9091", f"{pg.host}:{pg.port}")
        .replace("127.0.0.1:9090", f"127.0.0.1:{prom.port}")
        .replace("127.0.0.1:8085", f"127.0.0.1:{ctx.registry_management_port}")
    )
    config = yaml.safe_load(text) or {}
    for key in ("rule_files",):
        if config.get(key):
            config[key] = [
                str((source.parent / p).resolve()) if not Path(p).is_absolute() else p for p in config[key]
            ]
    path = ctx.conf / "prometheus" / "prometheus.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _prometheus_reload_if_changed(ctx: StackContext) -> None:
    """Re-render prometheus.yml; if it changed since Prometheus loaded it, ask Prometheus to reload."""
    path = ctx.conf / "prometheus" / "prometheus.yml"
    before = path.read_text() if path.is_file() else None
    after = render_prometheus_config(ctx).read_text()
    if before is not None and before != after:
        base = ctx.settings.prometheus_url.rstrip("/")
        request = urllib.request.Request(f"{base}/-/reload", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10):
                pass
        except (urllib.error.URLError, OSError) as exc:
            # Prometheus keeps serving the previous config; warn rather than break every caller
            logging.getLogger(__name__).warning(
                "prometheus rejected the reload of %s (%s); still running the previous config; see %s",
                path,
                exc,
                ctx.log_file("prometheus"),
            )


def _prometheus_flags(ctx: StackContext, data: Path) -> list[str]:
    return [
        f"--config.file={render_prometheus_config(ctx)}",
        f"--storage.tsdb.path={data}",
        "--storage.tsdb.retention.time=15d",
        "--web.enable-lifecycle",
    ]


SERVICE = prometheus_family_service(
    "prometheus",
    "prometheus",
    _prometheus_flags,
    after_ready=_prometheus_reload_if_changed,
    depends_on=("pushgateway",),
    start_timeout=60,
    stop_grace=15,
)
