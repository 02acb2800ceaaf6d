"""Redis from the distribution, password-protected, bound to the host's address."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from citadel.model.common import ComponentConfig, Port, PortNumber


class Config(ComponentConfig):
    port: PortNumber = 6379
    maxmemory: str = Field(default="2gb", pattern=r"^[0-9]+(kb|mb|gb)$")
    maxmemory_policy: Literal["allkeys-lru", "allkeys-lfu", "volatile-lru", "noeviction"] = (
        "allkeys-lru"
    )
    persistence: Literal["rdb", "aof", "none"] = "rdb"
    allowed_clients: list[str] = Field(default_factory=lambda: ["gateway"])

    def ports(self) -> list[Port]:
        return [
            Port(
                service="redis",
                number=self.port,
                clients=tuple(self.allowed_clients),
                field="allowed_clients",
            )
        ]

    def secrets(self) -> list[str]:
        return ["redis_password"]

    def references(self) -> dict[str, list[str]]:
        return {"allowed_clients": self.allowed_clients}
