"""PostgreSQL with pgvector: citadel_db, its schemas, least-privilege roles, migrations."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from citadel.model.common import ComponentConfig, Port, PortNumber, StrictModel

DOCUMENT_SCHEMAS = ["ai_models", "embeddings", "users", "experiments", "monitoring"]


class Tuning(StrictModel):
    shared_buffers: str = Field(default="1GB", pattern=r"^[0-9]+(kB|MB|GB)$")
    max_connections: int = Field(default=200, ge=10, le=10000)
    work_mem: str = Field(default="16MB", pattern=r"^[0-9]+(kB|MB|GB)$")
    effective_cache_size: str = Field(default="4GB", pattern=r"^[0-9]+(kB|MB|GB)$")


class Config(ComponentConfig):
    # "auto": the distribution's version where it ships pgvector, else PGDG.
    version: Literal["auto", 15, 16, 17] = "auto"
    source: Literal["auto", "distribution", "pgdg"] = "auto"
    port: PortNumber = 5432
    database: str = Field(default="citadel_db", pattern=r"^[a-z_][a-z0-9_]*$")
    schemas: list[str] = Field(default_factory=lambda: list(DOCUMENT_SCHEMAS))
    embedding_dimension: int = Field(default=4096, ge=1, le=16000)
    owner_role: str = "citadel_owner"
    app_role: str = "citadel_app"
    readonly_role: str = "citadel_readonly"
    allowed_clients: list[str] = Field(default_factory=lambda: ["gateway", "webui"])
    tuning: Tuning = Tuning()

    def ports(self) -> list[Port]:
        return [
            Port(
                service="postgres",
                number=self.port,
                clients=tuple(self.allowed_clients),
                field="allowed_clients",
            )
        ]

    def secrets(self) -> list[str]:
        return ["postgres_owner_password", "postgres_app_password", "postgres_readonly_password"]

    def references(self) -> dict[str, list[str]]:
        return {"allowed_clients": self.allowed_clients}
