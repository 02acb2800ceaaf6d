"""Grafana: running, admin login with the secret, the Prometheus datasource, five dashboards.

Only an inventory-declared skip skips these checks (the lab declares one: apt.grafana.com is
unreachable there); a Grafana the inventory deploys but that is not installed fails them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from citadel.components import grafana

COMPONENT = "grafana"


@pytest.fixture
def base(target: Any) -> str:
    assert target.infra.package("grafana").is_installed, (
        f"grafana is not installed on {target.host.name} (its apt repository: "
        f"{target.host.grafana.repository}); the inventory deploys it"
    )
    cfg = target.host.grafana
    return f"http://{cfg.listen_address or target.host.address}:{cfg.port}"


def _get(target: Any, url: str) -> Any:
    user = target.host.grafana.admin_user
    # The password is read on the host from its secret file: never in a command line here.
    out = target.infra.check_output(
        f'curl -sf --max-time 10 -u {user}:"$(cat {grafana.PASSWORD_FILE})" {url}'
    )
    return json.loads(out)


def test_service_runs(target, base):
    service = target.infra.service("grafana-server")
    assert service.is_running and service.is_enabled
    health = json.loads(target.infra.check_output(f"curl -sf --max-time 5 {base}/api/health"))
    assert health["database"] == "ok"


def test_admin_login_uses_the_secret(target, base):
    assert _get(target, f"{base}/api/user")["isGrafanaAdmin"] is True


def test_prometheus_datasource_is_healthy(target, base):
    got = _get(target, f"{base}/api/datasources/uid/{grafana.DATASOURCE_UID}/health")
    assert got["status"] == "OK"


def test_the_documents_five_dashboards(target, base):
    found = _get(target, f"{base}/api/search?tag=citadel&type=dash-db")
    assert sorted(d["title"] for d in found) == sorted(d.title for d in grafana.DASHBOARDS)
