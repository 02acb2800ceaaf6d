"""The whole config (:class:`GatewayConfig`, with the checks across its sections) and
:func:`load_config`: read the YAML, validate it, read the secret files it names."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import Field, ValidationError, model_validator

from ._base import ConfigError, _read_secret, _set_private, _Strict
from .auth import _TOKEN, FORWARDER_TOKEN_MIN, Auth
from .backends import Model, Postgres, Qdrant, Redis, Upstream
from .limits import Cache, RateLimits
from .server import Cors, Health, Listen, Logging, Metrics, ModelProbe, SimpleProbe

ENV_CONFIG = "CITADEL_GATEWAY_CONFIG"


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
