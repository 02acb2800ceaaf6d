"""prometheus-redis-exporter beside Redis, as an ACL user that may only read server info."""

from __future__ import annotations

from typing import TYPE_CHECKING

from citadel.model.common import ComponentConfig, Port, PortNumber
from citadel.model.component import Component, Scrape
from citadel.model.files import FileSpec, sandbox_dropin

if TYPE_CHECKING:
    from citadel.render import HostView

ENV_FILE = "/etc/default/prometheus-redis-exporter"


class Config(ComponentConfig):
    port: PortNumber = 9121

    def ports(self) -> list[Port]:
        return [
            Port(service="redis_exporter", number=self.port, clients=("monitoring",), field="port")
        ]

    def secrets(self) -> list[str]:
        return ["redis_exporter_password"]


def files(view: HostView, cfg: Config) -> list[FileSpec]:
    from citadel.components.postgres_exporter import env_quote
    from citadel.components.redis import EXPORTER_USER

    redis = view.host.redis
    return [
        FileSpec(
            dest=ENV_FILE,
            template="redis_exporter/prometheus-redis-exporter.default.j2",
            mode="0600",
            secret=True,
            extra={
                "redis_port": redis.port if redis is not None else 6379,
                "user": EXPORTER_USER,
                "env_quote": env_quote,
            },
        ),
        sandbox_dropin("prometheus-redis-exporter", "redis_exporter/sandbox.conf.j2"),
    ]


COMPONENT = Component(
    name="redis_exporter",
    config=Config,
    role="redis",
    files=files,
    scrape=lambda cfg, host: Scrape(f"{host.address}:{cfg.port}"),
)
