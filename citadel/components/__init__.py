"""The component registry: which components each role brings, and the order they converge in.

One component = one config model (here) + one deploy module (deploys/<name>.py)
+ one template folder (templates/<name>/) + one verify module (tests/verify/test_<name>.py).
"""

from __future__ import annotations

from types import ModuleType

from citadel.components import (
    alertmanager,
    base,
    edge_tls,
    firewall,
    gateway,
    gpu_exporter,
    grafana,
    model_server,
    node_exporter,
    nvidia,
    postgres,
    postgres_exporter,
    prometheus,
    qdrant,
    redis,
    redis_exporter,
    webui,
)
from citadel.model.common import ComponentConfig

# Every host has the implicit role "base".
BASE_ROLE = "base"

# role -> the config sections (components) it brings, in converge order.
ROLE_COMPONENTS: dict[str, tuple[str, ...]] = {
    "base": ("base", "firewall", "node_exporter"),
    "gpu": ("nvidia", "gpu_exporter"),
    "model": ("model",),
    "postgres": ("postgres", "postgres_exporter"),
    "redis": ("redis", "redis_exporter"),
    "qdrant": ("qdrant",),
    "gateway": ("gateway", "edge_tls"),
    "monitoring": ("alertmanager", "prometheus", "grafana"),
    "webui": ("webui",),
}
ROLES = tuple(ROLE_COMPONENTS)

# Converge order across roles: base first; data and models before the gateway; monitoring last.
ORDER: tuple[str, ...] = (
    "base",
    "firewall",
    "node_exporter",
    "nvidia",
    "gpu_exporter",
    "model",
    "postgres",
    "postgres_exporter",
    "redis",
    "redis_exporter",
    "qdrant",
    "gateway",
    "edge_tls",
    "alertmanager",
    "prometheus",
    "grafana",
    "webui",
)

MODULES: dict[str, ModuleType] = {
    "base": base,
    "firewall": firewall,
    "node_exporter": node_exporter,
    "nvidia": nvidia,
    "gpu_exporter": gpu_exporter,
    "model": model_server,
    "postgres": postgres,
    "postgres_exporter": postgres_exporter,
    "redis": redis,
    "redis_exporter": redis_exporter,
    "qdrant": qdrant,
    "gateway": gateway,
    "edge_tls": edge_tls,
    "alertmanager": alertmanager,
    "prometheus": prometheus,
    "grafana": grafana,
    "webui": webui,
}

CONFIG_MODELS: dict[str, type[ComponentConfig]] = {
    name: module.Config for name, module in MODULES.items()
}

assert set(ORDER) == set(MODULES) == {s for v in ROLE_COMPONENTS.values() for s in v}


def deploy_name(section: str, config: ComponentConfig) -> str:
    """The deploy module that converges a section: the model section picks its engine's module."""
    if isinstance(config, model_server.Config):
        return config.engine
    return section
