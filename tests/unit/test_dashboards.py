"""The API document's five Grafana dashboards: every expression parses (promtool) and uses
metrics some exporter or recording rule emits (citadel.metrics)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from citadel import dashboards
from citadel.metrics import DOCUMENT_METRICS, metric_names, unknown_metrics

PROMTOOL = shutil.which("promtool")
DOCUMENT_DASHBOARDS = [
    "AI Infrastructure Overview",
    "Model Performance",
    "Resource Utilization",
    "Network Performance",
    "Error Monitoring",
]


def test_the_documents_five_dashboards() -> None:
    assert [d.title for d in dashboards.DASHBOARDS] == DOCUMENT_DASHBOARDS
    assert len({d.uid for d in dashboards.DASHBOARDS}) == 5


@pytest.mark.parametrize(
    ("dashboard", "panel", "expr"), dashboards.expressions(), ids=lambda v: str(v)[:40]
)
def test_expression_uses_known_metrics(dashboard: str, panel: str, expr: str) -> None:
    assert metric_names(expr), f"{dashboard} / {panel}: selects no metric"
    assert not unknown_metrics(expr), f"{dashboard} / {panel}: unknown {unknown_metrics(expr)}"


def test_document_metrics_are_on_a_dashboard() -> None:
    used = set().union(*(metric_names(e) for _, _, e in dashboards.expressions()))
    for name in DOCUMENT_METRICS:
        assert name in used or f"{name}_count" in used, name


@pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian 12: apt-get install prometheus; Debian 13: promtool)",
)
def test_promtool_parses_every_dashboard_expression(tmp_path: Path) -> None:
    """Each expression becomes a recording rule; `promtool check rules` parses them all."""
    rules = [
        {"record": f"dashboard:check_{i}", "expr": expr.replace("$__rate_interval", "5m")}
        for i, (_, _, expr) in enumerate(dashboards.expressions())
    ]
    path = tmp_path / "dashboards.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dashboard", dashboards.DASHBOARDS, ids=lambda d: d.uid)
def test_dashboard_json_model(dashboard: dashboards.Dashboard) -> None:
    model = json.loads(json.dumps(dashboards.dashboard_json(dashboard)))
    assert model["uid"] == dashboard.uid and model["title"] == dashboard.title
    ids = [p["id"] for p in model["panels"]]
    assert len(ids) == len(set(ids))
    for p in model["panels"]:
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24
        if p["type"] != "text":
            assert p["datasource"] == {"type": "prometheus", "uid": dashboards.DATASOURCE_UID}
            assert p["targets"] and all(t["expr"] for t in p["targets"])
    # Panels never overlap.
    cells = set()
    for p in model["panels"]:
        pos = p["gridPos"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, p["title"]
                cells.add((x, y))
