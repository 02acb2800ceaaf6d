"""The API gateway (services/gateway): auth, rate limits, load balancing, the document's errors.

The gateway's config file is the gateway's own model (``citadel_gateway.config``), built here
from this section and the inventory and written as YAML: what the gateway would refuse,
``citadel validate`` refuses (the parts this section decides) or rendering does (the rest).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import yaml
from citadel_gateway import config as gw
from pydantic import Field, ValidationError, model_validator

from citadel.components.edge_tls import GATEWAY_SOCKET
from citadel.errors import CitadelError
from citadel.labsecrets import KeyRing
from citadel.model.common import ComponentConfig, Port, PortNumber, SecretName, StrictModel
from citadel.model.component import Component, Scrape
from citadel.model.files import FileSpec

if TYPE_CHECKING:
    from citadel.model.cluster import Host
    from citadel.render import HostView

T = TypeVar("T")


class Auth(StrictModel):
    # A JWKS URL (e.g. Clerk's) or a PEM public key given by path on the controller. No default:
    # an inventory says which (null for a local key); Clerk's is operator-supplied
    # (citadel.operator_values), and `plan`/`apply` check it answers (citadel.preflight).
    jwks_url: str | None
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


class Config(ComponentConfig):
    # the release deployed (services/gateway's version): the checkout's own version builds from
    # it, any other must be a build this controller kept (citadel.releases); `citadel upgrade
    # gateway VERSION` / `citadel rollback gateway` change it. Unset: the checkout's.
    version: str | None = Field(default=None, pattern=r"^[0-9][0-9a-z.+!-]*$")
    port: PortNumber = 8000
    workers: int = Field(default=2, ge=1, le=64)
    # a stop (an upgrade's restart) lets the requests in flight finish for this long; new
    # connections wait in the socket systemd holds meanwhile (citadel-gateway.socket)
    drain_s: int = Field(default=30, ge=1, le=600)
    auth: Auth
    # per subject (JWT sub, or the webui's user: webui:<id>; client address for /health):
    # the API document's table
    rate_limits: gw.RateLimits = gw.RateLimits()
    redis_failure: Literal["open", "closed"] = "open"
    cache_ttl_s: int = 3600
    backend_timeout_s: gw.ModelTimeoutS = 120
    # browser origins allowed to call the API (the document's JavaScript SDK from a page)
    cors: gw.Cors = gw.Cors()

    @model_validator(mode="after")
    def _as_the_gateway_reads_it(self) -> Config:
        """Build the gateway's sections this config alone decides: the gateway's refusals
        are this file's. (Exactly one key source is the cluster check's rule.)"""
        _section("port, workers", lambda: _listen(self, None))
        _section("cache_ttl_s", lambda: _cache(self))
        _section("redis_failure", lambda: _redis(self, None))
        if (self.auth.jwks_url is None) != (self.auth.public_key_file is None):
            _section("auth", lambda: _auth(self.auth))
        return self

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
    "webui_gateway_token": f"{ETC}/secrets/webui.token",
}
# OpenWebUI's forwarder (auth.forwarders): its users are subjects `webui:<user id>`
WEBUI_FORWARDER = "webui"
HEALTH_NAMES = {"chat": "llama_chat", "completions": "llama_instruct", "embeddings": "embeddings"}


def files(view: HostView, cfg: Config) -> list[FileSpec]:
    """The gateway's config (checked by the gateway itself), its secrets, its key, its unit."""
    needed = view.cluster.required_secrets(view.host)
    # Secrets and the key are re-read on reload (load_config): a changed one (a rotation's
    # switch) reloads, never restarts: no request is refused while it changes.
    out = [
        FileSpec(
            dest=path,
            template="gateway/secret.j2",
            mode="0640",
            group="citadel-gateway",
            secret=True,
            on_change="reload",
            extra={"name": name},
        )
        for name, path in SECRET_FILES.items()
        if name in needed
    ]
    if cfg.auth.public_key_file:
        out.append(
            FileSpec(
                dest=PUBLIC_KEY,
                template="gateway/public-key.j2",
                validate=f"{VENV}/bin/citadel-gateway --check-keys {{path}}",
                on_change="reload",
                extra={"pem": _public_keys(view, cfg.auth.public_key_file)},
            )
        )
    out += [
        FileSpec(
            dest=f"{ETC}/config.yml",
            template="gateway/config.yml.j2",
            mode="0640",
            group="citadel-gateway",
            extra={"config_yaml": config_yaml(gateway_config(view, cfg))},
            validate=f"{VENV}/bin/citadel-gateway --check --config {{path}}",
            on_change="reload",  # SIGHUP: re-read and checked, the old one kept on error
        ),
        FileSpec(
            dest=SOCKET_UNIT,
            template="gateway/citadel-gateway.socket.j2",
            on_change="relisten",
            extra={"listen": listen_stream(view, cfg)},
        ),
        FileSpec(
            dest="/etc/systemd/system/citadel-gateway.service",
            template="gateway/citadel-gateway.service.j2",
            extra={"stop_timeout_s": cfg.drain_s + 15},
        ),
    ]
    return out


SOCKET_UNIT = "/etc/systemd/system/citadel-gateway.socket"


def fronted(view: HostView) -> bool:
    """nginx on this host is the client-facing front (templates/edge_tls)."""
    return view.host.edge_tls is not None and view.deployed(view.host, "edge_tls")


def listen_stream(view: HostView, cfg: Config) -> str:
    """Where systemd listens for the gateway: nginx's unix socket, else the gateway's port."""
    return GATEWAY_SOCKET if fronted(view) else f"0.0.0.0:{cfg.port}"


VENV = "/opt/citadel-gateway"
PUBLIC_KEY = f"{ETC}/jwt-public.pem"


def config_yaml(config: gw.GatewayConfig) -> str:
    """What was set (the rest is the gateway's defaults), in the model's order."""
    data = config.model_dump(mode="json", exclude_unset=True)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


def gateway_config(view: HostView, cfg: Config) -> gw.GatewayConfig:
    """The gateway's config for this host: backends, Qdrant, PostgreSQL, Redis, the metrics
    allow-list and /health's services from the inventory; the rest from ``cfg``."""
    cluster, host = view.cluster, view.host
    served: dict[str, tuple[str, list[Host]]] = {}
    for h in cluster.model_hosts():
        if h.model is not None and view.deployed(h, "model"):
            served.setdefault(h.model.served_name, (h.model.api, []))[1].append(h)
    qdrant_hosts = cluster.with_role("qdrant")
    qdrants = [h for h in qdrant_hosts if view.deployed(h, "qdrant")]
    databases = cluster.with_role("postgres")
    redises = cluster.with_role("redis")
    front = fronted(view)
    sections: dict[str, Any] = {
        # nginx on this host is the client-facing front (templates/edge_tls): the gateway
        # serves it on a unix socket and takes the client's address from its X-Real-IP
        "listen": _listen(cfg, GATEWAY_SOCKET if front else None),
        "models": {
            name: gw.Model(
                kind=api,
                timeout_s=cfg.backend_timeout_s,
                backends=[_backend(view, h) for h in hosts],
            )
            for name, (api, hosts) in sorted(served.items())
        },
        "redis": _redis(cfg, redises[0] if redises else None),
        "auth": _auth(cfg.auth, _forwarders(view)),
        "rate_limits": cfg.rate_limits.model_dump(),  # written whole: the limits in force
        "cache": _cache(cfg),
        "cors": gw.Cors(allowed_origins=cfg.cors.allowed_origins),
        "metrics": gw.Metrics(
            allow=["127.0.0.1/32", *(f"{h.address}/32" for h in cluster.with_role("monitoring"))]
        ),
    }
    if qdrants:
        q = qdrants[0]
        assert q.qdrant is not None
        sections["qdrant"] = gw.Qdrant(
            url=f"http://{q.address}:{q.qdrant.http_port}",
            api_key_file=SECRET_FILES["qdrant_api_key"],
        )
    if databases:
        db = databases[0]
        assert db.postgres is not None
        sections["postgres"] = gw.Postgres(host=str(db.address), port=db.postgres.port)
    services: dict[str, Any] = {
        HEALTH_NAMES[api]: {"probe": "model", "model": name}
        for name, (api, _) in sorted(served.items())
    }
    if qdrants:
        services["vector_db"] = {"probe": "qdrant"}
    elif qdrant_hosts:
        q = qdrant_hosts[0]
        why = f"Qdrant on {q.name} is not deployed: {view.skipped_reason(q, 'qdrant')}"
        services["vector_db"] = {"probe": "skipped", "reason": why}
    if databases:
        services["database"] = {"probe": "postgres"}
    sections["health"] = {"services": services}
    try:
        return gw.GatewayConfig(**sections)
    except ValidationError as exc:
        raise CitadelError(f"{host.name}: gateway config: {_problems(exc)}") from None


def _backend(view: HostView, h: Host) -> gw.Backend:
    assert h.model is not None
    fields: dict[str, Any] = {"url": f"http://{h.address}:{h.model.port}/v1"}
    if h.model.engine == "vllm":
        fields["api_key_file"] = SECRET_FILES["model_api_key"]
    if h.gpu_exporter is not None and view.deployed(h, "gpu_exporter"):
        fields["gpu_metrics_url"] = f"http://{h.address}:{h.gpu_exporter.port}/metrics"
    return gw.Backend(**fields)


def _listen(cfg: Config, unix_socket: str | None) -> gw.Listen:
    fields: dict[str, Any] = {
        "host": "0.0.0.0",
        "port": cfg.port,
        "workers": cfg.workers,
        "drain_s": cfg.drain_s,
    }
    if unix_socket is not None:
        fields["unix_socket"] = unix_socket
    return gw.Listen(**fields)


def _redis(cfg: Config, server: Host | None) -> gw.Redis:
    fields: dict[str, Any] = {"socket_timeout_ms": 200, "failure_mode": cfg.redis_failure}
    if server is not None:
        assert server.redis is not None
        fields["url"] = f"redis://{server.address}:{server.redis.port}/0"
        fields["password_file"] = SECRET_FILES["redis_password"]
    return gw.Redis(**fields)


def _forwarders(view: HostView) -> dict[str, gw.Forwarder]:
    """OpenWebUI, where the inventory deploys it: its service token (the secret
    `webui_gateway_token`, which it sends as OPENAI_API_KEY) is accepted from the webui hosts'
    addresses only, and its X-OpenWebUI-User-Id header (ENABLE_FORWARD_USER_INFO_HEADERS) names
    the subject rate limits and the access log count (services/gateway/README.md)."""
    webuis = [h for h in view.cluster.with_role("webui") if view.deployed(h, "webui")]
    if not webuis:
        return {}
    return {
        WEBUI_FORWARDER: gw.Forwarder(
            token_file=SECRET_FILES["webui_gateway_token"],
            addresses=[f"{h.address}/32" for h in webuis],
        )
    }


def _auth(auth: Auth, forwarders: dict[str, gw.Forwarder] | None = None) -> gw.Auth:
    fields: dict[str, Any] = (
        {"jwks_url": auth.jwks_url} if auth.jwks_url else {"public_key_file": PUBLIC_KEY}
    )
    fields |= {
        "issuers": auth.issuers,
        "authorized_parties": auth.authorized_parties,
        "leeway_s": auth.leeway_s,
        "route_permissions": auth.route_permissions,
    }
    if auth.audiences:
        fields["audience"] = auth.audiences
    if forwarders:
        fields["forwarders"] = forwarders
    return gw.Auth(**fields)


def _cache(cfg: Config) -> gw.Cache:
    return gw.Cache(enabled=True, ttl_s=cfg.cache_ttl_s)


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
    )


def _section(field: str, build: Callable[[], T]) -> T:
    """One of the gateway's sections built from ``field``; the gateway's refusal, named."""
    try:
        return build()
    except ValidationError as exc:
        raise ValueError(f"{field}: the gateway refuses it: {_problems(exc)}") from None


def _public_keys(view: HostView, path: str) -> str:
    """The signing key's public half, read on the controller; while the key is rotated
    (`citadel rotate jwt_signing_key`, accept and switch) the previous one after it."""
    pems = []
    for key in KeyRing(Path(path)).accepted_public():
        try:
            pems.append(key.read_text(encoding="utf-8"))
        except OSError:
            if view.masked:
                return f"# {key} is not on this controller yet (`citadel lab up` makes it)\n"
            raise CitadelError(
                f"gateway.auth.public_key_file: cannot read {key} on the controller"
            ) from None
    return "".join(p if p.endswith("\n") else p + "\n" for p in pems)


COMPONENT = Component(
    name="gateway",
    config=Config,
    role="gateway",
    files=files,
    scrape=lambda cfg, host: Scrape(f"{host.address}:{cfg.port}"),
)
