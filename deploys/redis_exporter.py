"""prometheus-redis-exporter: Debian's package, an info-only ACL user, the host's address."""

from __future__ import annotations

from citadel.components.redis_exporter import Config
from deploys._service import apt_service

SERVICE = "prometheus-redis-exporter"

install, configure, activate, apply = apt_service("redis_exporter", Config, SERVICE)
