"""A small typed builder for the Grafana dashboard JSON (schemaVersion 39) that ``generate_dashboard.py``
writes: panels are declared in reading order and laid out here (a row takes a full line; panels flow left
to right on the 24-column grid and wrap), ids and query refIds (A, B, ...) are assigned in order, and every
query uses the one Prometheus data source. Nothing here knows a metric: that is the generator's part."""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
GRID_COLUMNS = 24


@dataclass(frozen=True)
class Target:
    """One PromQL query of a panel; ``instant`` queries evaluate once (tables, stats)."""

    expr: str
    legend: str = ""
    instant: bool = False
    fmt: Literal["time_series", "table"] = "time_series"

    def to_json(self, ref: str) -> dict[str, Any]:
        out: dict[str, Any] = {"datasource": DATASOURCE, "expr": self.expr, "legendFormat": self.legend,
                               "refId": ref, "format": self.fmt}  # fmt: skip
        if self.instant:
            out.update(instant=True, range=False)
        return out


@dataclass
class Panel:
    """A panel of ``w`` x ``h`` grid cells. ``unit``, ``decimals`` and ``thresholds`` (absolute steps) go to
    the field defaults; ``extra`` replaces whole top-level keys (``fieldConfig`` with overrides,
    ``options``, ``transformations``) where a panel needs more."""

    type: Literal["timeseries", "table", "stat", "bargauge", "gauge", "barchart"]
    title: str
    description: str
    targets: list[Target]
    w: int
    h: int
    unit: str | None = None
    decimals: int | None = None
    thresholds: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self, panel_id: int, x: int, y: int) -> dict[str, Any]:
        defaults: dict[str, Any] = {}
        if self.unit:
            defaults["unit"] = self.unit
        if self.decimals is not None:
            defaults["decimals"] = self.decimals
        if self.thresholds:
            defaults["thresholds"] = {"mode": "absolute", "steps": self.thresholds}
        options: dict[str, Any] = {}
        if self.type == "timeseries":
            options = {
                "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "min"]},
                "tooltip": {"mode": "multi"},
            }
        out = {
            "type": self.type,
            "title": self.title,
            "description": self.description,
            "id": panel_id,
            "datasource": DATASOURCE,
            "gridPos": {"h": self.h, "w": self.w, "x": x, "y": y},
            "targets": [t.to_json(string.ascii_uppercase[i]) for i, t in enumerate(self.targets)],
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": options,
        }
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class Variable:
    """A multi-select template variable over the values of label ``name`` of ``metric`` (All = ``.*``)."""

    name: str
    label: str
    metric: str

    def to_json(self) -> dict[str, Any]:
        query = f"label_values({self.metric}, {self.name})"
        return {
            "name": self.name,
            "label": self.label,
            "type": "query",
            "datasource": DATASOURCE,
            "query": {"query": query, "refId": f"var-{self.name}"},
            "definition": query,
            "includeAll": True,
            "multi": True,
            "allValue": ".*",
            "refresh": 2,
            "sort": 1,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        }


@dataclass
class Dashboard:
    """The dashboard: its header, variables, and the rows and panels in reading order."""

    uid: str
    title: str
    description: str
    tags: list[str]
    variables: list[Variable] = field(default_factory=list)
    _items: list[str | Panel] = field(default_factory=list)

    def row(self, title: str) -> None:
        """A (non-collapsing) row header starting a new line."""
        self._items.append(title)

    def add(self, *panels: Panel) -> None:
        self._items.extend(panels)

    def panels_json(self) -> list[dict[str, Any]]:
        """Rows and panels with ids and grid positions (a row's height is 1; a line is as tall as its
        tallest panel)."""
        out: list[dict[str, Any]] = []
        x = y = line_h = 0
        for panel_id, item in enumerate(self._items, start=1):
            if isinstance(item, str) or x + item.w > GRID_COLUMNS:  # a row, or the line is full
                x, y, line_h = 0, y + line_h, 0
            if isinstance(item, str):
                out.append({"type": "row", "title": item, "id": panel_id, "collapsed": False,
                            "gridPos": {"h": 1, "w": GRID_COLUMNS, "x": 0, "y": y}, "panels": []})  # fmt: skip
                y += 1
                continue
            out.append(item.to_json(panel_id, x, y))
            x, line_h = x + item.w, max(line_h, item.h)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": self.tags,
            "timezone": "utc",
            "editable": False,
            "graphTooltip": 1,
            "refresh": "30s",
            "schemaVersion": 39,
            "version": 1,
            "time": {"from": "now-24h", "to": "now"},
            "templating": {"list": [v.to_json() for v in self.variables]},
            "annotations": {
                "list": [
                    {
                        "builtIn": 1,
                        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                        "enable": True,
                        "hide": True,
                        "iconColor": "rgba(0, 211, 255, 1)",
                        "name": "Annotations & Alerts",
                        "type": "dashboard",
                    }
                ]
            },
            "links": [],
            "panels": self.panels_json(),
        }

    def write(self, path: Path) -> int:
        """Write the JSON (2-space indent, trailing newline); the number of panels and rows."""
        data = self.to_json()
        path.write_text(json.dumps(data, indent=2) + "\n")
        return len(data["panels"])
