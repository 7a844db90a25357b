"""Static checks of the Grafana dashboards and alert rules against what the platform exports.

Extracts every PromQL expression from ``infra/grafana/dashboards/*.json`` (panel targets, template
variables), ``infra/grafana/provisioning/alerting/*.yaml`` and ``infra/prometheus/rules/*.yml``, pulls the
metric names out of each expression and compares them with the names a live Prometheus knows
(``/api/v1/label/__name__/values``). ``qp monitoring check-dashboards`` runs the check.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from typing import Any

import yaml

from qp_assets.settings import PROJECT_ROOT

INFRA = PROJECT_ROOT / "infra"
DASHBOARD_DIR = INFRA / "grafana" / "dashboards"
GRAFANA_ALERTING_DIR = INFRA / "grafana" / "provisioning" / "alerting"
PROMETHEUS_RULES_DIR = INFRA / "prometheus" / "rules"

_PROMQL_KEYWORDS = frozenset(
    {
        "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
        "offset", "inf", "nan", "le", "atan2",
    }
)  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w$:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w(])(?!\s*\()")
_LABEL_VALUES = re.compile(r"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{[^{}]*\})?\s*,\s*\w+\s*\)")


def metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (functions, keywords, labels, durations removed).

    Also understands Grafana's ``label_values(metric, label)`` and ignores ``$variables``.
    """
    names = set(_LABEL_VALUES.findall(expr))
    expr = _LABEL_VALUES.sub(" ", expr)
    expr = _STRING.sub(" ", expr)
    expr = _MATCHERS.sub(" ", expr)
    expr = _RANGES.sub(" ", expr)
    expr = _GROUPING.sub(" ", expr)
    expr = re.sub(r"\$\{?\w+\}?", " ", expr)
    for name in _IDENT.findall(expr):
        if name.lower() in _PROMQL_KEYWORDS or re.fullmatch(r"\d.*", name):
            continue
        names.add(name)
    return names


def _walk_panels(panels: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _walk_panels(panel.get("panels") or [])


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) for every panel target and query template variable of a Grafana dashboard."""
    out = []
    for panel in _walk_panels(dashboard.get("panels") or []):
        for target in panel.get("targets") or []:
            if target.get("expr"):
                out.append((f"panel {panel.get('title')!r} {target.get('refId')}", target["expr"]))
    for var in (dashboard.get("templating") or {}).get("list", []):
        query = var.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        if var.get("type") == "query" and query:
            out.append((f"variable {var.get('name')!r}", query))
    return out


def grafana_alert_exprs(provisioning: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) for the Prometheus queries of Grafana alert-rule provisioning (apiVersion 1)."""
    out = []
    for group in provisioning.get("groups") or []:
        for rule in group.get("rules") or []:
            for query in rule.get("data") or []:
                expr = (query.get("model") or {}).get("expr")
                if expr and query.get("datasourceUid") != "__expr__":
                    out.append((f"grafana rule {rule.get('title')!r} {query.get('refId')}", expr))
    return out


def prometheus_rule_exprs(rules: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) for Prometheus alerting/recording rules files."""
    return [
        (f"prometheus rule {rule.get('alert') or rule.get('record')!r}", rule["expr"])
        for group in rules.get("groups") or []
        for rule in group.get("rules") or []
        if rule.get("expr")
    ]


def all_exprs() -> list[tuple[str, str, str]]:
    """(file, where, expr) across all dashboards and rule files in infra/."""
    out: list[tuple[str, str, str]] = []
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        out += [(path.name, w, e) for w, e in dashboard_exprs(json.loads(path.read_text()))]
    for path in sorted(GRAFANA_ALERTING_DIR.glob("*.y*ml")):
        out += [(path.name, w, e) for w, e in grafana_alert_exprs(yaml.safe_load(path.read_text()) or {})]
    for path in sorted(PROMETHEUS_RULES_DIR.glob("*.y*ml")):
        out += [(path.name, w, e) for w, e in prometheus_rule_exprs(yaml.safe_load(path.read_text()) or {})]
    return out


def referenced_metrics() -> dict[str, list[str]]:
    """{metric name: ["file: where", ...]} for every metric the dashboards and rules query."""
    refs: dict[str, list[str]] = {}
    for file, where, expr in all_exprs():
        for name in metric_names(expr):
            refs.setdefault(name, []).append(f"{file}: {where}")
    return refs


def prometheus_metric_names(prometheus_url: str, *, timeout_s: float = 10.0) -> set[str]:
    """All metric names a Prometheus server knows (``GET /api/v1/label/__name__/values``)."""
    url = prometheus_url.rstrip("/") + "/api/v1/label/__name__/values"
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        payload = json.loads(response.read())
    if payload.get("status") != "success":
        raise RuntimeError(f"Prometheus {url} answered {payload}")
    return set(payload["data"])


def missing_metrics(prometheus_url: str) -> dict[str, list[str]]:
    """Referenced metrics that the Prometheus at ``prometheus_url`` does not know, with where they are used."""
    known = prometheus_metric_names(prometheus_url)
    return {name: where for name, where in sorted(referenced_metrics().items()) if name not in known}


def exported_metric_names() -> set[str]:
    """Names the platform's code can export (VQE, live, pipeline health; histogram series expanded; ``up``)."""
    from qp_assets.monitoring.metrics import VQE_METRICS
    from qp_assets.monitoring.monitor import LIVE_METRICS
    from qp_assets.monitoring.pipeline_metrics import PIPELINE_METRICS

    names = (
        {"up", "push_time_seconds", "push_failure_time_seconds"} | set(PIPELINE_METRICS) | set(LIVE_METRICS)
    )
    for name, (kind, _help) in VQE_METRICS.items():
        names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else {name}
    return names
