"""The gateway's config.yml as the deploy renders it: backends, Qdrant and /health services
follow what the inventory declares (a declared `skip` only), never artifact availability."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
import yaml

from citadel import artifacts
from citadel.loader import load_cluster
from citadel.render import render_host
from citadel.secrets import SecretStore

CONFIG = "/etc/citadel-gateway/config.yml"


def gateway_config(inventory: str) -> dict[str, Any]:
    cluster = load_cluster(inventory).cluster
    rendered = {f.spec.dest: f for f in render_host(cluster, cluster.host("gateway"))}
    return yaml.safe_load(rendered[CONFIG].content)


def _no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendering is pure: any fetch or probe of an artifact fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("rendering fetched or probed an artifact")

    monkeypatch.setattr(artifacts, "ensure_cached", refuse)
    monkeypatch.setattr(artifacts, "unavailable_reason", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_production_gateway_config_carries_what_the_api_document_promises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _no_downloads(monkeypatch)
    cfg = gateway_config("inventory/production.yml")
    assert set(cfg["health"]["services"]) == {
        "llama_chat",
        "llama_instruct",
        "embeddings",
        "vector_db",
        "database",
    }
    assert cfg["health"]["services"]["embeddings"] == {
        "probe": "model",
        "model": "llama-3-embeddings",
    }
    assert cfg["health"]["services"]["vector_db"] == {"probe": "qdrant"}
    assert "skipped" not in {s["probe"] for s in cfg["health"]["services"].values()}
    assert cfg["models"]["llama-3-embeddings"]["kind"] == "embeddings"
    assert cfg["models"]["llama-3-embeddings"]["backends"][0]["url"] == (
        "http://192.168.10.31:11434/v1"
    )
    assert set(cfg["models"]) == {"llama-3-chat", "llama-3-instruct", "llama-3-embeddings"}
    assert cfg["qdrant"]["url"] == "http://192.168.10.30:6333"


def test_an_unavailable_artifact_never_changes_the_gateway_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unpinned Qdrant and Ollama: apply fails closed (deploys.preflight); the config keeps both."""
    before = gateway_config("inventory/production.yml")
    pins = artifacts.load_pins()
    unpinned = {
        name: {v: {**e, "sha256": None} for v, e in pins[name].items()}
        for name in ("qdrant", "ollama")
    }
    monkeypatch.setattr(artifacts, "load_pins", lambda: unpinned)
    _no_downloads(monkeypatch)
    assert gateway_config("inventory/production.yml") == before


def test_deploy_render_with_real_secrets_fetches_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a converge writes is rendered the same pure way (real secrets, no masking)."""
    _no_downloads(monkeypatch)
    cluster = load_cluster("inventory/production.yml").cluster
    names = {n for h in cluster.hosts for n in cluster.required_secrets(h)}
    secrets = SecretStore({n: "x" for n in names}, source="test")
    host = cluster.host("gateway")
    rendered = {f.spec.dest: f for f in render_host(cluster, host, secrets)}
    cfg = yaml.safe_load(rendered[CONFIG].content)
    assert "qdrant" in cfg and "embeddings" in cfg["health"]["services"]


def test_only_a_declared_skip_marks_qdrant_skipped_with_its_reason() -> None:
    """The lab declares Qdrant skipped (inventory/lab.yml, lab-no-vendor-downloads)."""
    cfg = gateway_config("inventory/lab.yml")
    assert "qdrant" not in cfg  # collection search answers 503, no dead upstream
    vector_db = cfg["health"]["services"]["vector_db"]
    assert vector_db["probe"] == "skipped"
    assert vector_db["reason"].startswith("Qdrant on vector-db is not deployed: lab: ")
    assert cfg["health"]["services"]["database"] == {"probe": "postgres"}
    assert "embeddings" in cfg["health"]["services"]


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


def test_behind_the_edge_on_its_host_the_gateway_serves_nginx_on_a_unix_socket() -> None:
    cluster = load_cluster("inventory/lab.yml").cluster
    gateway = cluster.host("gateway")
    assert gateway.edge_tls is not None and gateway.edge_tls.skip is None
    listen = gateway_config("inventory/lab.yml")["listen"]
    assert listen["unix_socket"] == "/run/citadel-gateway/gateway.sock"
    assert "trusted_proxies" not in listen  # the socket's peer is the front on this host
