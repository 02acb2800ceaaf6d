"""Gateway configuration: one YAML file, validated by pydantic.

Secrets are never inline: the config names files (``redis.password_file``,
``qdrant.api_key_file``, ``auth.public_key_file``, ``auth.forwarders.*.token_file``,
``models.*.backends[].api_key_file``) and :func:`load_config` reads them, so an unreadable
secret is a config error like any other.

Modules: ``backends`` (models, their backends, ``upstream``, Qdrant, PostgreSQL, Redis),
``auth`` (token verification, route permissions, ``auth.forwarders``), ``limits``
(``rate_limits``, ``cache``), ``server`` (``listen``, ``cors``, ``metrics``, ``health``,
``logging``), ``loading`` (the whole :class:`GatewayConfig` and :func:`load_config`); ``_base``
is what they share. Everything is imported from here: ``from citadel_gateway.config import X``.
"""

from ._base import ConfigError, _set_private
from .auth import FORWARDER_NAME, FORWARDER_TOKEN_MIN, Auth, Forwarder, Permission
from .backends import Backend, Model, ModelTimeoutS, Postgres, Qdrant, Redis, Upstream
from .limits import Cache, Limit, RateLimits
from .loading import ENV_CONFIG, GatewayConfig, config_path_from_env, load_config
from .server import (
    Cors,
    Health,
    HttpProbe,
    Listen,
    Logging,
    Metrics,
    ModelProbe,
    Probe,
    SimpleProbe,
    SkippedProbe,
    TcpProbe,
)

__all__ = [
    "ENV_CONFIG",
    "FORWARDER_NAME",
    "FORWARDER_TOKEN_MIN",
    "Auth",
    "Backend",
    "Cache",
    "ConfigError",
    "Cors",
    "Forwarder",
    "GatewayConfig",
    "Health",
    "HttpProbe",
    "Limit",
    "Listen",
    "Logging",
    "Metrics",
    "Model",
    "ModelProbe",
    "ModelTimeoutS",
    "Permission",
    "Postgres",
    "Probe",
    "Qdrant",
    "RateLimits",
    "Redis",
    "SimpleProbe",
    "SkippedProbe",
    "TcpProbe",
    "Upstream",
    "_set_private",
    "config_path_from_env",
    "load_config",
]
