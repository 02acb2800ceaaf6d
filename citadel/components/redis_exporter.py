"""prometheus-redis-exporter beside Redis."""

from __future__ import annotations

from citadel.model.common import ComponentConfig, Port, PortNumber


class Config(ComponentConfig):
    port: PortNumber = 9121

    def ports(self) -> list[Port]:
        return [
            Port(service="redis_exporter", number=self.port, clients=("monitoring",), field="port")
        ]

    def secrets(self) -> list[str]:
        return ["redis_password"]
