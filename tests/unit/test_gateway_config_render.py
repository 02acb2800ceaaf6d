"""The gateway's config.yml as the deploy renders it: backends, Qdrant and /health services
follow what the inventory can actually deploy."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from citadel import artifacts
from citadel.loader import load_cluster
from citadel.render import render_host

CONFIG = "/etc/citadel-gateway/config.yml"


def gateway_config(inventory: str) -> dict[str, Any]:
    cluster = load_cluster(inventory).cluster
    rendered = {f.spec.dest: f for f in render_host(cluster, cluster.host("gateway"))}
    return yaml.safe_load(rendered[CONFIG].content)


def test_qdrant_that_cannot_be_deployed_is_a_skipped_health_service_with_its_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unpinned = {
        "qdrant": {v: {**e, "sha256": None} for v, e in artifacts.load_pins()["qdrant"].items()}
    }
    monkeypatch.setattr(artifacts, "load_pins", lambda: unpinned)
    cfg = gateway_config("inventory/lab.yml")
    assert "qdrant" not in cfg  # collection search answers 503, no dead upstream
    vector_db = cfg["health"]["services"]["vector_db"]
    assert vector_db["probe"] == "skipped"
    assert vector_db["reason"].startswith("Qdrant on vector-db is not deployed: ")
    assert "no sha256 pinned" in vector_db["reason"]
    assert cfg["health"]["services"]["database"] == {"probe": "postgres"}


def test_deployable_qdrant_is_probed_and_proxied(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(artifacts, "_artifact_of", lambda section, config: None)
    cfg = gateway_config("inventory/production.yml")
    assert cfg["qdrant"]["url"] == "http://192.168.10.30:6333"
    assert cfg["health"]["services"]["vector_db"] == {"probe": "qdrant"}


def test_backends_point_at_their_hosts_gpu_exporter_which_lets_the_gateway_in() -> None:
    loaded = load_cluster("inventory/lab.yml")
    cfg = gateway_config("inventory/lab.yml")
    gateway = loaded.cluster.host("gateway")
    for model in cfg["models"].values():
        for backend in model["backends"]:
            address = backend["url"].split("//")[1].split(":")[0]
            host = loaded.cluster.host(address)
            assert host.gpu_exporter is not None
            port = host.gpu_exporter.port
            assert backend["gpu_metrics_url"] == f"http://{address}:{port}/metrics"
            gpu_port = next(p for p in host.gpu_exporter.ports() if p.service == "gpu_exporter")
            assert gateway.address in loaded.cluster.port_clients(host, gpu_port)


def test_the_tls_edge_on_the_gateway_host_is_a_trusted_proxy() -> None:
    cluster = load_cluster("inventory/lab.yml").cluster
    gateway = cluster.host("gateway")
    assert gateway.edge_tls is not None and gateway.edge_tls.skip is None
    listen = gateway_config("inventory/lab.yml")["listen"]
    assert listen["trusted_proxies"] == [f"{gateway.address}/32", "127.0.0.1/32"]
