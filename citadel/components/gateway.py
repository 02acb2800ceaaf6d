"""The API gateway (services/gateway): auth, rate limits, load balancing, the document's errors."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, model_validator

from citadel.components.edge_tls import GATEWAY_SOCKET
from citadel.errors import CitadelError
from citadel.model.common import ComponentConfig, Port, PortNumber, SecretName, StrictModel
from citadel.model.files import FileSpec

if TYPE_CHECKING:
    from citadel.render import HostView


class RateLimit(StrictModel):
    per_minute: int = Field(ge=1)
    burst: int = Field(ge=1)


class RateLimits(StrictModel):
    """Per subject (JWT sub; client address for /health): the API document's table."""

    enabled: bool = True
    chat_completions: RateLimit = RateLimit(per_minute=60, burst=10)
    completions: RateLimit = RateLimit(per_minute=60, burst=10)
    embeddings: RateLimit = RateLimit(per_minute=120, burst=20)
    collection_search: RateLimit = RateLimit(per_minute=300, burst=50)
    health: RateLimit = RateLimit(per_minute=600, burst=100)


class Auth(StrictModel):
    # A JWKS URL (e.g. Clerk's) or a PEM public key given by path on the controller.
    jwks_url: str | None = None
    public_key_file: str | None = None
    issuers: list[str] = Field(min_length=1)
    authorized_parties: list[str] = Field(default_factory=list)
    # Accepted `aud` values; when set, a token must carry one of them (none: aud not checked).
    audiences: list[str] = Field(default_factory=list)
    leeway_s: int = Field(default=30, ge=0, le=300)
    # Route glob -> the permission a token must carry (403 INSUFFICIENT_PERMS otherwise).
    route_permissions: dict[str, str] = Field(
        default_factory=lambda: {"/collections/*": "vector:search"}
    )
    # The secret (CITADEL_SECRET_<NAME>) holding the bearer token `citadel verify` sends when the
    # gateway trusts a JWKS: operators mint it from their identity provider with every permission
    # of route_permissions (docs/gateway-auth.md). Never written to a host. With a local key
    # (the lab) verify mints its own token instead.
    verify_token_secret: SecretName | None = None

    @model_validator(mode="after")
    def _verify_credential(self) -> Auth:
        if self.jwks_url is not None and self.verify_token_secret is None:
            raise ValueError(
                "verify_token_secret is required with jwks_url: name the secret holding the "
                "token `citadel verify` authenticates with (docs/gateway-auth.md)"
            )
        return self


class Cors(StrictModel):
    """Browser origins allowed to call the API (the document's JavaScript SDK from a page)."""

    allowed_origins: list[Annotated[str, Field(pattern=r"^https?://[A-Za-z0-9.\-\[\]:]+$")]] = (
        Field(default_factory=list)
    )


class Config(ComponentConfig):
    port: PortNumber = 8000
    workers: int = Field(default=2, ge=1, le=64)
    auth: Auth
    rate_limits: RateLimits = RateLimits()
    redis_failure: Literal["open", "closed"] = "open"
    cache_ttl_s: int = Field(default=3600, ge=0)
    backend_timeout_s: float = Field(default=120, gt=0)
    cors: Cors = Cors()

    def ports(self) -> list[Port]:
        return [Port(service="gateway", number=self.port, field="port")]

    def secrets(self) -> list[str]:
        # The verify credential only where verify cannot mint its own (a JWKS, not a local key).
        auth = self.auth
        verify = [auth.verify_token_secret] if auth.jwks_url and auth.verify_token_secret else []
        return ["redis_password", "qdrant_api_key", *verify]


ETC = "/etc/citadel-gateway"
SECRET_FILES = {  # secret name -> file the gateway reads it from
    "redis_password": f"{ETC}/secrets/redis.password",
    "qdrant_api_key": f"{ETC}/secrets/qdrant.key",
    "model_api_key": f"{ETC}/secrets/model.key",
}
HEALTH_NAMES = {"chat": "llama_chat", "completions": "llama_instruct", "embeddings": "embeddings"}


def files(view: HostView, cfg: Config) -> list[FileSpec]:
    """The gateway's config (checked by the gateway itself), its secrets, its key, its unit."""
    needed = view.cluster.required_secrets(view.host)
    out = [
        FileSpec(
            dest=path,
            template="gateway/secret.j2",
            mode="0640",
            group="citadel-gateway",
            secret=True,
            extra={"name": name},
        )
        for name, path in SECRET_FILES.items()
        if name in needed
    ]
    if cfg.auth.public_key_file:
        out.append(
            FileSpec(
                dest=f"{ETC}/jwt-public.pem",
                template="gateway/public-key.j2",
                extra={"pem": _public_key(view, cfg.auth.public_key_file)},
            )
        )
    out += [
        FileSpec(
            dest=f"{ETC}/config.yml",
            template="gateway/config.yml.j2",
            mode="0640",
            group="citadel-gateway",
            extra={
                "secret_files": SECRET_FILES,
                "health_names": HEALTH_NAMES,
                "gateway_socket": GATEWAY_SOCKET,
            },
            validate=f"{VENV}/bin/citadel-gateway --check --config {{path}}",
        ),
        FileSpec(
            dest="/etc/systemd/system/citadel-gateway.service",
            template="gateway/citadel-gateway.service.j2",
        ),
    ]
    return out


VENV = "/opt/citadel-gateway"


def _public_key(view: HostView, path: str) -> str:
    """The signing key's public half, read on the controller."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError:
        if view.masked:
            return f"# {path} is not on this controller yet (`citadel lab up` makes it)\n"
        raise CitadelError(
            f"gateway.auth.public_key_file: cannot read {path} on the controller"
        ) from None
