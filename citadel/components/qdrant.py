"""Qdrant vector database from its pinned release artifact."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from citadel.model.common import ComponentConfig, Port, PortNumber, StrictModel


class Collection(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    size: int = Field(ge=1, le=65536)
    distance: Literal["Cosine", "Euclid", "Dot", "Manhattan"] = "Cosine"


class Config(ComponentConfig):
    version: str = "1.15.4"
    http_port: PortNumber = 6333
    grpc_port: PortNumber = 6334
    storage_path: str = "/var/lib/qdrant/storage"
    snapshots_path: str = "/var/lib/qdrant/snapshots"
    collections: list[Collection] = Field(default_factory=list)
    allowed_clients: list[str] = Field(default_factory=lambda: ["gateway"])

    def ports(self) -> list[Port]:
        clients = (*self.allowed_clients, "monitoring")
        return [
            Port(
                service="qdrant_http",
                number=self.http_port,
                clients=clients,
                field="allowed_clients",
            ),
            Port(
                service="qdrant_grpc",
                number=self.grpc_port,
                clients=tuple(self.allowed_clients),
                field="allowed_clients",
            ),
        ]

    def secrets(self) -> list[str]:
        return ["qdrant_api_key"]

    def references(self) -> dict[str, list[str]]:
        return {"allowed_clients": self.allowed_clients}
