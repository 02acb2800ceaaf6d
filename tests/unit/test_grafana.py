"""Grafana: provisioning files from the model, the admin password only in its secret file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from citadel.components import grafana
from citadel.loader import load_cluster
from citadel.model.cluster import Cluster
from citadel.render import HostView, render_host
from citadel.secrets import MASK, SecretStore

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=["lab", "production"])
def cluster(request: pytest.FixtureRequest) -> Cluster:
    """Production, and the lab with its declared Grafana skip lifted (its files still render)."""
    cluster = load_cluster(ROOT / "inventory" / f"{request.param}.yml").cluster
    return _without_grafana_skip(cluster)


def _without_grafana_skip(cluster: Cluster) -> Cluster:
    hosts = []
    for h in cluster.hosts:
        if h.grafana is not None and h.grafana.skip is not None:
            h = h.model_copy(update={"grafana": h.grafana.model_copy(update={"skip": None})})
        hosts.append(h)
    return cluster.model_copy(update={"hosts": hosts})


def test_the_lab_declares_grafana_skipped_with_its_reason() -> None:
    """apt.grafana.com does not resolve from the lab: a declared skip, not a silent one."""
    lab = load_cluster(ROOT / "inventory" / "lab.yml").cluster
    grafana_cfg = lab.host("monitoring").grafana
    assert grafana_cfg is not None and grafana_cfg.skip is not None
    assert "apt.grafana.com" in grafana_cfg.skip


def _files(cluster: Cluster, secrets: SecretStore | None = None) -> dict[str, str]:
    host = cluster.host("monitoring")
    return {
        f.spec.dest: f.content
        for f in render_host(cluster, host, secrets)
        if f.component == "grafana"
    }


def test_datasource_points_at_the_inventorys_prometheus(cluster: Cluster) -> None:
    ds = yaml.safe_load(_files(cluster)["/etc/grafana/provisioning/datasources/citadel.yaml"])
    [source] = ds["datasources"]
    host = cluster.host("monitoring")
    assert source["url"] == f"http://{host.address}:9090"
    assert source["uid"] == grafana.DATASOURCE_UID and source["type"] == "prometheus"


def test_five_dashboards_provisioned_as_valid_json(cluster: Cluster) -> None:
    files = _files(cluster)
    dashboards = {d: c for d, c in files.items() if d.startswith(grafana.DASHBOARDS_DIR)}
    titles = sorted(json.loads(c)["title"] for c in dashboards.values())
    assert titles == sorted(d.title for d in grafana.DASHBOARDS)
    provider = yaml.safe_load(files["/etc/grafana/provisioning/dashboards/citadel.yaml"])
    assert provider["providers"][0]["options"]["path"] == grafana.DASHBOARDS_DIR


def test_admin_password_only_in_the_secret_file(cluster: Cluster) -> None:
    store = SecretStore(
        {"grafana_admin_password": "s3cret-value", "qdrant_api_key": "k", "alert_webhook_url": "u"}
    )
    files = _files(cluster, store)
    assert files[grafana.PASSWORD_FILE] == "s3cret-value"
    others = [c for d, c in files.items() if d != grafana.PASSWORD_FILE]
    assert not any("s3cret-value" in c for c in others)
    assert f"$__file{{{grafana.PASSWORD_FILE}}}" in files["/etc/grafana/grafana.ini"]
    host = cluster.host("monitoring")
    specs = {f.spec.dest: f.spec for f in render_host(cluster, host) if f.component == "grafana"}
    assert specs[grafana.PASSWORD_FILE].secret
    assert specs[grafana.PASSWORD_FILE].mode == "0640"
    assert _files(cluster)[grafana.PASSWORD_FILE] == MASK


def test_listens_on_the_host_address(cluster: Cluster) -> None:
    ini = _files(cluster)["/etc/grafana/grafana.ini"]
    host = cluster.host("monitoring")
    assert f"http_addr = {host.address}" in ini
    assert "http_port = 3000" in ini
    assert "allow_sign_up = false" in ini


def test_repository_probe_url_and_version_pin() -> None:
    cfg = grafana.Config()
    assert cfg.release_url == "https://apt.grafana.com/dists/stable/Release"
    with pytest.raises(ValueError):
        grafana.Config(version="latest")


def test_dashboard_files_are_checked_before_install(cluster: Cluster) -> None:
    host = cluster.host("monitoring")
    view = HostView(cluster, host, SecretStore({}))
    assert host.grafana is not None
    for spec in grafana.files(view, host.grafana):
        if spec.dest.endswith(".json"):
            assert spec.validate == grafana.JSON_CHECK


def test_unreachable_repository_stops_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))  # deploys/ is a top-level folder, not installed
    from citadel.artifacts import ArtifactUnavailable
    from deploys.grafana import probe_repository

    cfg = grafana.Config(repository="http://127.0.0.1:9")
    with pytest.raises(ArtifactUnavailable) as err:
        probe_repository(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("grafana 12.2.0: apt repository http://127.0.0.1:9 unavailable")
