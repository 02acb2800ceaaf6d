"""The shape of a dashboard (``Dashboard`` of ``Panel``s of ``Query``s) and Grafana's JSON model
for it (schemaVersion 39, panels laid out left to right in rows of 24 columns): what the document's
dashboards (citadel.dashboards.document) are written in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DATASOURCE_UID = "prometheus"  # the provisioned Prometheus datasource every panel queries


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...] = ()
    unit: str = "short"
    kind: str = "timeseries"  # timeseries | stat | table | text
    description: str = ""
    text: str = ""  # for kind == "text"
    width: int = 12


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


def q(expr: str, legend: str = "") -> Query:
    return Query(expr, legend)


def dashboard_json(d: Dashboard) -> dict[str, Any]:
    """Grafana's dashboard model (schemaVersion 39) for one Dashboard."""
    datasource = {"type": "prometheus", "uid": DATASOURCE_UID}
    panels: list[dict[str, Any]] = []
    x = y = row_h = 0
    for i, p in enumerate(d.panels, start=1):
        h = 4 if p.kind == "stat" else 8
        if x + p.width > 24:
            x, y, row_h = 0, y + row_h, 0
        panel: dict[str, Any] = {
            "id": i,
            "type": p.kind,
            "title": p.title,
            "description": p.description,
            "gridPos": {"h": h, "w": p.width, "x": x, "y": y},
        }
        if p.kind == "text":
            panel["options"] = {"mode": "markdown", "content": p.text}
        else:
            panel["datasource"] = datasource
            panel["fieldConfig"] = {"defaults": {"unit": p.unit}, "overrides": []}
            panel["targets"] = [
                {
                    "refId": chr(ord("A") + j),
                    "datasource": datasource,
                    "expr": query.expr,
                    "legendFormat": query.legend or "__auto",
                    "instant": p.kind == "table",
                    "range": p.kind != "table",
                }
                for j, query in enumerate(p.queries)
            ]
            if p.kind == "table":
                panel["transformations"] = [{"id": "labelsToFields", "options": {}}]
        panels.append(panel)
        x += p.width
        row_h = max(row_h, h)
    return {
        "uid": d.uid,
        "title": d.title,
        "description": d.description,
        "tags": ["citadel"],
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": panels,
    }
