"""OpenWebUI on loopback behind nginx on port 80, pointed at the gateway."""

from __future__ import annotations

from citadel.model.common import ComponentConfig, Port, PortNumber


class Config(ComponentConfig):
    version: str = "0.6.32"
    python: str = "python3.12"
    port: PortNumber = 80
    internal_port: PortNumber = 8080

    def ports(self) -> list[Port]:
        return [Port(service="webui", number=self.port, field="port")]

    def secrets(self) -> list[str]:
        return ["webui_secret_key", "webui_gateway_token"]
