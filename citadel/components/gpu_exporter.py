"""NVML GPU exporter (services/gpu_exporter) on GPU hosts."""

from __future__ import annotations

from citadel.model.common import ComponentConfig, Port, PortNumber


class Config(ComponentConfig):
    port: PortNumber = 9835

    def ports(self) -> list[Port]:
        return [
            Port(service="gpu_exporter", number=self.port, clients=("monitoring",), field="port")
        ]
