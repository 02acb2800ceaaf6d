"""The current host's typed view of the inventory, loaded once per pyinfra process."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from pyinfra import host

from citadel.loader import Loaded, load_cluster
from citadel.model.cluster import Cluster, Host
from citadel.render import HostView, RenderedFile, component_files


@lru_cache(maxsize=4)
def _load(inventory: str) -> Loaded:
    return load_cluster(inventory, require_secrets=True)


@dataclass
class DeployContext:
    loaded: Loaded
    host: Host

    @property
    def cluster(self) -> Cluster:
        return self.loaded.cluster

    @property
    def view(self) -> HostView:
        return HostView(self.cluster, self.host, self.loaded.secrets)

    def files(self, section: str) -> list[RenderedFile]:
        """The rendered files of one component on this host (real secrets: never print)."""
        return component_files(section, self.view, getattr(self.host, section))

    def secret(self, name: str) -> str:
        return self.view.secret(name)


def current() -> DeployContext:
    loaded = _load(host.data.citadel_inventory)
    return DeployContext(loaded, loaded.cluster.host(host.data.citadel_host))
