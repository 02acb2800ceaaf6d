"""Prometheus: scrape config derived from the inventory, rules validated by promtool."""

from __future__ import annotations

from pydantic import Field

from citadel.model.common import ComponentConfig, Port, PortNumber


class Config(ComponentConfig):
    port: PortNumber = 9090
    retention: str = Field(default="15d", pattern=r"^[0-9]+[hdwy]$")
    scrape_interval: str = Field(default="15s", pattern=r"^[0-9]+[sm]$")

    def ports(self) -> list[Port]:
        return [Port(service="prometheus", number=self.port, field="port")]

    def secrets(self) -> list[str]:
        return ["qdrant_api_key"]
