"""Prometheus node exporter on every host."""

from __future__ import annotations

from citadel.model.common import ComponentConfig, Port, PortNumber


class Config(ComponentConfig):
    port: PortNumber = 9100

    def ports(self) -> list[Port]:
        return [
            Port(service="node_exporter", number=self.port, clients=("monitoring",), field="port")
        ]
