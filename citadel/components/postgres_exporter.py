"""prometheus-postgres-exporter with a least-privilege monitoring login."""

from __future__ import annotations

from citadel.model.common import ComponentConfig, Port, PortNumber


class Config(ComponentConfig):
    port: PortNumber = 9187
    role: str = "citadel_monitor"

    def ports(self) -> list[Port]:
        return [
            Port(
                service="postgres_exporter", number=self.port, clients=("monitoring",), field="port"
            )
        ]

    def secrets(self) -> list[str]:
        return ["postgres_exporter_password"]
