"""What one component declares about itself: the single declaration every table is derived from.

Each ``citadel/components/<name>.py`` ends with ``COMPONENT = Component(...)``;
``citadel.components.COMPONENTS`` lists them in converge order, and the role table, the config
models, the deploy module names, Prometheus' targets and the pinned artifacts all come from
there (tests/unit/test_components_registry.py proves the rest of the tree agrees with it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from citadel.model.common import ComponentConfig
from citadel.model.files import FileSpec

if TYPE_CHECKING:
    from citadel.model.cluster import Host

C = TypeVar("C", bound=ComponentConfig)


@dataclass(frozen=True)
class Scrape:
    """Where Prometheus scrapes a component that serves metrics."""

    address: str  # host:port
    path: str = "/metrics"
    bearer_file: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Component(Generic[C]):
    """One component: its inventory section, config model, role, files, and what it needs.

    ``deploys``: the deploy modules that can converge it (``deploys/<name>.py``; each also has
    ``templates/<name>/`` and ``tests/verify/test_<name>.py``); ``deploy`` picks one from the
    config (default: the only one). ``scrape``: its Prometheus target on a host (None: it serves
    no metrics there). ``artifact``: the pinned artifact (pins.yml name, version) it installs.
    """

    name: str  # the inventory section
    config: type[C]
    role: str  # the role that brings it ("base": every host)
    # Every file it writes on a host: (HostView, config) -> specs. Rendered by citadel.render.
    files: Callable[[Any, C], list[FileSpec]] | None = None
    deploys: tuple[str, ...] = ()
    deploy: Callable[[C], str] | None = None
    scrape: Callable[[C, Host], Scrape | None] | None = None
    artifact: Callable[[C], tuple[str, str] | None] | None = None

    @property
    def deploy_names(self) -> tuple[str, ...]:
        return self.deploys or (self.name,)

    def deploy_name(self, config: C) -> str:
        return self.deploy(config) if self.deploy is not None else self.deploy_names[0]

    def scrape_target(self, config: C, host: Host) -> Scrape | None:
        return self.scrape(config, host) if self.scrape is not None else None

    def pinned_artifact(self, config: C) -> tuple[str, str] | None:
        return self.artifact(config) if self.artifact is not None else None
