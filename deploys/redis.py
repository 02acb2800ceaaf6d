"""Redis: Debian's package, redis.conf from the model (validated by redis-server itself before it
goes live), restarted only when the config changed."""

from __future__ import annotations

from citadel.components.redis import Config
from deploys._service import apt_service

SERVICE = "redis-server"

install, configure, activate, apply = apt_service(
    "redis", Config, SERVICE, [SERVICE, "redis-tools"]
)
