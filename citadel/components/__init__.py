"""The component registry: every component's declaration, in converge order, and the tables
derived from it (which components each role brings, the config models, the deploy modules).

One component = one declaration (``COMPONENT = Component(...)`` at the end of
``citadel/components/<name>.py``: section, config model, role, files, deploy module, scrape
target, pinned artifact) + its deploy module (deploys/<deploy>.py) + its template folder
(templates/<deploy>/) + its verify module (tests/verify/test_<deploy>.py). docs/CONVENTIONS.md
says what adding one is; tests/unit/test_components_registry.py holds the tree to it.
"""

from __future__ import annotations

from typing import Any

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
from citadel.model.component import Component

# Every host has the implicit role "base".
BASE_ROLE = "base"

# Converge order: base first; data and models before the gateway; monitoring last.
COMPONENTS: tuple[Component[Any], ...] = (
    base.COMPONENT,
    firewall.COMPONENT,
    node_exporter.COMPONENT,
    nvidia.COMPONENT,
    gpu_exporter.COMPONENT,
    model_server.COMPONENT,
    postgres.COMPONENT,
    postgres_exporter.COMPONENT,
    redis.COMPONENT,
    redis_exporter.COMPONENT,
    qdrant.COMPONENT,
    gateway.COMPONENT,
    edge_tls.COMPONENT,
    alertmanager.COMPONENT,
    prometheus.COMPONENT,
    grafana.COMPONENT,
    webui.COMPONENT,
)

# -- derived -------------------------------------------------------------------------------------
REGISTRY: dict[str, Component[Any]] = {c.name: c for c in COMPONENTS}
ORDER: tuple[str, ...] = tuple(REGISTRY)

# role -> the config sections (components) it brings, in converge order; roles in the order they
# first converge (base first).
ROLE_COMPONENTS: dict[str, tuple[str, ...]] = {}
for _c in COMPONENTS:
    ROLE_COMPONENTS[_c.role] = (*ROLE_COMPONENTS.get(_c.role, ()), _c.name)
del _c
ROLES = tuple(ROLE_COMPONENTS)

CONFIG_MODELS: dict[str, type[ComponentConfig]] = {c.name: c.config for c in COMPONENTS}

assert len(REGISTRY) == len(COMPONENTS), "two components declare one section"
assert ROLES[0] == BASE_ROLE, "the base role converges first"


def deploy_name(section: str, config: ComponentConfig) -> str:
    """The deploy module that converges a section: the model section picks its engine's module."""
    return REGISTRY[section].deploy_name(config)
