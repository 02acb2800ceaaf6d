"""Gateway configuration: one YAML file, validated by pydantic.

Secrets are never inline: the config names files (``redis.password_file``,
``qdrant.api_key_file``, ``auth.public_key_file``, ``models.*.backends[].api_key_file``) and
:func:`load_config` reads them, so an unreadable secret is a config error like any other.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

ENV_CONFIG = "CITADEL_GATEWAY_CONFIG"


class ConfigError(Exception):
    """A config problem, already formatted as ``file: field.path: problem`` lines."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        super().__init__("; ".join(lines))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL, got {value!r}")
    return value.rstrip("/")


def _read_secret(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None


def _cidr_list(v: list[str]) -> list[str]:
    for cidr in v:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ValueError(f"{cidr!r} is not a CIDR") from None
    return v


def _address_in(host: str | None, cidrs: list[str]) -> bool:
    """``host`` is an IP address inside one of ``cidrs``."""
    if not host or not cidrs:
        return False
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(addr in ipaddress.ip_network(c, strict=False) for c in cidrs)


class Listen(_Strict):
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    # serve on this unix socket instead of host:port: for a front server on the same host
    # (nginx: timeouts, header limits and connection caps; docs/gateway-front.md)
    unix_socket: str | None = None
    workers: int = Field(1, ge=1, le=64)
    # request bodies are read only once the request is admitted (token, rate limit): at most
    # max_body_bytes each, at most max_buffered_bytes over all requests in flight (then 503)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_buffered_bytes: int = Field(128 * 1024 * 1024, ge=65536)
    body_timeout_s: float = Field(30.0, gt=0, le=3600)  # the whole body, once admitted
    # peers whose X-Real-IP names the real client (the TLS edge on this host): per-IP limits and
    # the access log use that address; /metrics' allow-list always uses the peer itself
    trusted_proxies: list[str] = []

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        return _cidr_list(v)

    def trusts(self, peer: str | None) -> bool:
        return _address_in(peer, self.trusted_proxies)


class Backend(_Strict):
    url: str
    api_key_file: str | None = None
    # the backend host's GPU exporter: read with the health probes for `gpu_utilization`
    gpu_metrics_url: str | None = None
    _api_key: str | None = PrivateAttr(default=None)

    @field_validator("url", "gpu_metrics_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else _http_url(v)

    @property
    def api_key(self) -> str | None:
        return self._api_key


def _backend_from_str(v: Any) -> Any:
    return {"url": v} if isinstance(v, str) else v


# a model's deadline for one request (all its retries); citadel's gateway.backend_timeout_s
ModelTimeoutS = Annotated[float, Field(gt=0, le=3600)]


class Model(_Strict):
    kind: Literal["chat", "completions", "embeddings"]
    backends: list[Annotated[Backend, Field()]] = Field(min_length=1)
    timeout_s: ModelTimeoutS = 120.0
    upstream_model: str | None = None
    # The engine completes with a `suffix` (fill-in-the-middle). Llama 3 does not, and vLLM
    # refuses any non-null suffix for such a model: an empty one is dropped, another refused.
    fill_in_middle: bool = False

    @field_validator("backends", mode="before")
    @classmethod
    def _strings(cls, v: Any) -> Any:
        return [_backend_from_str(x) for x in v] if isinstance(v, list) else v


class Upstream(_Strict):
    connect_timeout_s: float = Field(2.0, gt=0, le=60)
    retries: int = Field(1, ge=0, le=10)
    max_connections: int = Field(1000, ge=1)
    # idle upstream connections are dropped after this; below the 5 s uvicorn-based backends
    # (vLLM, llama.cpp's server) keep theirs, so a reused connection is rarely a closed one
    keepalive_s: float = Field(4.0, gt=0, le=300)
    health_timeout_s: float = Field(2.0, gt=0)
    health_path: str = "/models"
    breaker_failures: int = Field(3, ge=1)
    breaker_open_s: float = Field(10.0, gt=0)
    # what a backend may send: more is a broken backend (503 MODEL_UNAVAILABLE). A body read
    # whole (not `stream: true`, which is relayed as it comes) is parsed in memory.
    max_response_bytes: int = Field(16 * 1024 * 1024, ge=65536)
    max_response_header_bytes: int = Field(65536, ge=4096, le=16 * 1024 * 1024)
    max_response_headers: int = Field(100, ge=16, le=10_000)


class Qdrant(_Strict):
    url: str
    api_key_file: str | None = None
    timeout_s: float = Field(10.0, gt=0)
    _api_key: str | None = PrivateAttr(default=None)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http_url(v)

    @property
    def api_key(self) -> str | None:
        return self._api_key


class Postgres(_Strict):
    host: str
    port: int = Field(5432, ge=1, le=65535)


class Redis(_Strict):
    url: str = "redis://127.0.0.1:6379/0"
    password_file: str | None = None
    socket_timeout_ms: int = Field(200, ge=10, le=10_000)
    failure_mode: Literal["open", "closed"] = "open"
    retry_after_failure_s: float = Field(1.0, ge=0)
    _password: str | None = PrivateAttr(default=None)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if urlsplit(v).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return v

    @property
    def password(self) -> str | None:
        return self._password


Permission = str | list[str]

# A forwarder's name: the subject of its service credential and the prefix of its users'.
FORWARDER_NAME = r"^[a-z][a-z0-9-]{0,31}$"
# An HTTP header name (RFC 9110 token), lower-case as ASGI servers give it.
_HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]{1,64}$")
FORWARDER_TOKEN_MIN = 16
_TOKEN = re.compile(rf"^[A-Za-z0-9._~+/-]{{{FORWARDER_TOKEN_MIN},}}=*$")  # RFC 6750 b64token


class Forwarder(_Strict):
    """A front application (OpenWebUI) that calls with a service credential of its own and names
    the user it acts for in a header. The credential is a static bearer token, accepted only from
    ``addresses`` (the client's address: behind the front, its X-Real-IP); the header counts
    only on a request with that credential from there. Elsewhere it is ignored (docs:
    services/gateway/README.md, "Users behind a forwarder")."""

    token_file: str
    addresses: list[str] = Field(min_length=1)
    user_header: str = "x-openwebui-user-id"
    # what the credential grants (auth.route_permissions): none by default
    permissions: list[str] = []
    _token: str | None = PrivateAttr(default=None)

    @field_validator("addresses")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        return _cidr_list(v)

    @field_validator("user_header")
    @classmethod
    def _header(cls, v: str) -> str:
        v = v.lower()
        if not _HEADER_NAME.match(v) or v in ("authorization", "x-real-ip", "host"):
            raise ValueError(f"{v!r} is not a header name a forwarder may set")
        return v

    @property
    def token(self) -> str | None:
        return self._token

    def allows(self, host: str | None) -> bool:
        return _address_in(host, self.addresses)


class Auth(_Strict):
    public_key_file: str | None = None
    jwks_url: str | None = None
    jwks_cache_s: float = Field(3600.0, gt=0)
    jwks_min_refetch_s: float = Field(30.0, ge=0)
    issuers: list[str] = Field(min_length=1)
    authorized_parties: list[str] = []
    audience: list[str] = []
    leeway_s: float = Field(5.0, ge=0, le=300)
    required_claims: list[str] = ["exp", "iss", "sub"]
    route_permissions: dict[str, Permission] = {}
    # what a token needs for /health?detailed=true (backend URLs, their last errors); "" or
    # null: any valid token
    health_detailed_permission: str | None = "health:detailed"
    # name -> a front application whose users count as subjects of their own (Forwarder)
    forwarders: dict[Annotated[str, Field(pattern=FORWARDER_NAME)], Forwarder] = {}
    _public_key_pem: str | None = PrivateAttr(default=None)

    @field_validator("jwks_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else _http_url(v)

    @field_validator("route_permissions")
    @classmethod
    def _patterns(cls, v: dict[str, Permission]) -> dict[str, Permission]:
        for pattern in v:
            if not pattern.startswith("/"):
                raise ValueError(f"route pattern {pattern!r} must start with '/'")
        return v

    @model_validator(mode="after")
    def _one_key_source(self) -> Auth:
        if (self.public_key_file is None) == (self.jwks_url is None):
            raise ValueError("set exactly one of public_key_file or jwks_url")
        return self

    @property
    def public_key_pem(self) -> str | None:
        return self._public_key_pem

    def permissions_for(self, path: str) -> list[str]:
        needed: list[str] = []
        for pattern, perm in self.route_permissions.items():
            if fnmatch.fnmatchcase(path, pattern):
                needed.extend([perm] if isinstance(perm, str) else perm)
        return needed


class Limit(_Strict):
    per_minute: int = Field(ge=1, le=1_000_000)
    burst: int = Field(ge=1, le=1_000_000)


class RateLimits(_Strict):
    enabled: bool = True
    # send a model request's rate-limit check and the request itself at once when the
    # subject's last decision left room (ratelimit.RateLimiter.start); false: always wait
    overlap_upstream: bool = True
    chat_completions: Limit = Limit(per_minute=60, burst=10)
    completions: Limit = Limit(per_minute=60, burst=10)
    embeddings: Limit = Limit(per_minute=120, burst=20)
    collection_search: Limit = Limit(per_minute=300, burst=50)
    health: Limit = Limit(per_minute=600, burst=100)


class Cache(_Strict):
    enabled: bool = True
    ttl_s: int = Field(3600, ge=1)
    max_entry_bytes: int = Field(1_048_576, ge=1)


class Cors(_Strict):
    """Browser origins (``scheme://host[:port]``) allowed to call the API (cors.py)."""

    allowed_origins: list[str] = []

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        for origin in v:
            if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", origin):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], no path)")
        return v


class Metrics(_Strict):
    allow: list[str] = ["127.0.0.1/32", "::1/128"]
    multiproc_dir: str | None = None

    @field_validator("allow")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        return _cidr_list(v)

    def allows(self, host: str | None) -> bool:
        return _address_in(host, self.allow)


class ModelProbe(_Strict):
    probe: Literal["model"]
    model: str


class SimpleProbe(_Strict):
    probe: Literal["qdrant", "postgres", "redis"]


class TcpProbe(_Strict):
    probe: Literal["tcp"]
    host: str
    port: int = Field(ge=1, le=65535)


class HttpProbe(_Strict):
    probe: Literal["http"]
    url: str

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http_url(v)


class SkippedProbe(_Strict):
    """A service the inventory has but the deploy could not install (e.g. an artifact that
    cannot be had): /health says ``skipped`` and the reason, and it does not count as down."""

    probe: Literal["skipped"]
    reason: str = Field(min_length=1)


Probe = Annotated[
    ModelProbe | SimpleProbe | TcpProbe | HttpProbe | SkippedProbe, Field(discriminator="probe")
]

HEALTH_SERVICES = ("llama_chat", "llama_instruct", "embeddings", "vector_db", "database")


class Health(_Strict):
    interval_s: float = Field(5.0, gt=0)
    timeout_s: float = Field(2.0, gt=0)
    services: dict[str, Probe] = {}


class Logging(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"


class GatewayConfig(_Strict):
    listen: Listen = Listen()
    models: dict[str, Model] = Field(min_length=1)
    upstream: Upstream = Upstream()
    qdrant: Qdrant | None = None
    postgres: Postgres | None = None
    redis: Redis = Redis()
    auth: Auth
    rate_limits: RateLimits = RateLimits()
    cache: Cache = Cache()
    cors: Cors = Cors()
    metrics: Metrics = Metrics()
    health: Health = Health()
    logging: Logging = Logging()

    @model_validator(mode="after")
    def _cross(self) -> GatewayConfig:
        for name, probe in self.health.services.items():
            if isinstance(probe, ModelProbe) and probe.model not in self.models:
                raise ValueError(f"health.services.{name}: unknown model {probe.model!r}")
            if isinstance(probe, SimpleProbe):
                if probe.probe == "qdrant" and self.qdrant is None:
                    raise ValueError(f"health.services.{name}: probe qdrant needs a qdrant section")
                if probe.probe == "postgres" and self.postgres is None:
                    raise ValueError(
                        f"health.services.{name}: probe postgres needs a postgres section"
                    )
        return self


def _loc(loc: tuple[int | str, ...]) -> str:
    parts = list(loc)
    # drop the discriminator tag pydantic inserts after health.services.<name>
    if len(parts) >= 4 and parts[0] == "health" and parts[1] == "services":
        del parts[3]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "list[str]", "[key]", "function-before[_strings(), list[Backend]]"):
            continue
        else:
            out += ("." if out else "") + part
    return out or "(root)"


def _set_private(model: BaseModel, name: str, value: str | None) -> None:
    private = model.__pydantic_private__
    assert private is not None
    private[name] = value


def _load_secrets(cfg: GatewayConfig) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []

    def read(where: str, path: str) -> str | None:
        try:
            return _read_secret(path)
        except ValueError as exc:
            errors.append((where, str(exc)))
            return None

    if cfg.auth.public_key_file:
        pem = read("auth.public_key_file", cfg.auth.public_key_file)
        if pem is not None and "PUBLIC KEY" not in pem:
            errors.append(("auth.public_key_file", "not a PEM public key"))
        _set_private(cfg.auth, "_public_key_pem", pem)
    tokens: dict[str, str] = {}
    for name, fwd in cfg.auth.forwarders.items():
        where = f"auth.forwarders.{name}.token_file"
        token = read(where, fwd.token_file)
        if token is not None:
            if not _TOKEN.match(token):
                errors.append((where, f"not a bearer token of {FORWARDER_TOKEN_MIN}+ characters"))
            elif token in tokens:
                errors.append((where, f"the same token as auth.forwarders.{tokens[token]}"))
            tokens.setdefault(token, name)
        _set_private(fwd, "_token", token)
    if cfg.redis.password_file:
        _set_private(cfg.redis, "_password", read("redis.password_file", cfg.redis.password_file))
    if cfg.qdrant and cfg.qdrant.api_key_file:
        _set_private(cfg.qdrant, "_api_key", read("qdrant.api_key_file", cfg.qdrant.api_key_file))
    for name, model in cfg.models.items():
        for i, backend in enumerate(model.backends):
            if backend.api_key_file:
                _set_private(
                    backend,
                    "_api_key",
                    read(f"models.{name}.backends[{i}].api_key_file", backend.api_key_file),
                )
    return errors


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Load, validate and resolve secrets. Raises :class:`ConfigError` (never a traceback)."""
    label = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{label}: cannot read: {exc.strerror or exc}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "yaml"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([f"{label}: {where}: {problem}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError([f"{label}: (root): must be a mapping"])
    try:
        cfg = GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field"
            lines.append(f"{label}: {_loc(tuple(err['loc']))}: {msg}")
        raise ConfigError(lines) from None
    errors = _load_secrets(cfg)
    if errors:
        raise ConfigError([f"{label}: {where}: {problem}" for where, problem in errors])
    return cfg


def config_path_from_env() -> str:
    path = os.environ.get(ENV_CONFIG)
    if not path:
        raise ConfigError([f"no config: pass --config or set {ENV_CONFIG}"])
    return path
