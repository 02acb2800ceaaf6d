"""The API document's Grafana dashboards as Python data, apart from the component that writes them
(citadel.components.grafana), so they read as a document: ``model`` (a dashboard's shape and
Grafana's JSON for it) and ``document`` (the five dashboards).
"""

from __future__ import annotations

from citadel.dashboards.document import DASHBOARDS, expressions
from citadel.dashboards.model import DATASOURCE_UID, Dashboard, Panel, Query, dashboard_json, q

__all__ = [
    "DASHBOARDS",
    "DATASOURCE_UID",
    "Dashboard",
    "Panel",
    "Query",
    "dashboard_json",
    "expressions",
    "q",
]
