"""Grafana from its apt repository (version pinned), provisioned with the document's dashboards."""

from __future__ import annotations

from citadel.model.common import ComponentConfig, Port, PortNumber


class Config(ComponentConfig):
    version: str = "12.2.0"
    port: PortNumber = 3000

    def ports(self) -> list[Port]:
        return [Port(service="grafana", number=self.port, field="port")]

    def secrets(self) -> list[str]:
        return ["grafana_admin_password"]
