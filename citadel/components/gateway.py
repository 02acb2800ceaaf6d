"""The API gateway (services/gateway): auth, rate limits, load balancing, the document's errors."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from citadel.model.common import ComponentConfig, Port, PortNumber, StrictModel


class RateLimit(StrictModel):
    per_minute: int = Field(ge=1)
    burst: int = Field(ge=1)


def _document_rate_limits() -> dict[str, RateLimit]:
    """The API document's table of default limits."""
    return {
        "/v1/chat/completions": RateLimit(per_minute=60, burst=10),
        "/v1/completions": RateLimit(per_minute=60, burst=10),
        "/api/embeddings": RateLimit(per_minute=120, burst=20),
        "/v1/embeddings": RateLimit(per_minute=120, burst=20),
        "/collections/*/points/search": RateLimit(per_minute=300, burst=50),
        "/health": RateLimit(per_minute=600, burst=100),
    }


class Auth(StrictModel):
    # A JWKS URL (e.g. Clerk's) or a PEM public key given by path on the controller.
    jwks_url: str | None = None
    public_key_file: str | None = None
    issuers: list[str] = Field(min_length=1)
    authorized_parties: list[str] = Field(default_factory=list)
    leeway_s: int = Field(default=30, ge=0, le=300)


class Config(ComponentConfig):
    port: PortNumber = 8000
    workers: int = Field(default=2, ge=1, le=64)
    auth: Auth
    rate_limits: dict[str, RateLimit] = Field(default_factory=_document_rate_limits)
    redis_failure: Literal["open", "closed"] = "open"
    cache_ttl_s: int = Field(default=3600, ge=0)
    backend_timeout_s: float = Field(default=120, gt=0)

    def ports(self) -> list[Port]:
        return [Port(service="gateway", number=self.port, field="port")]

    def secrets(self) -> list[str]:
        return ["redis_password", "qdrant_api_key"]
