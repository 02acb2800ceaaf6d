"""Prometheus node exporter on every host."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from citadel.model.common import ComponentConfig, Port, PortNumber
from citadel.model.component import Component, Scrape
from citadel.model.files import FileSpec, sandbox_dropin

if TYPE_CHECKING:
    from citadel.render import HostView


class Config(ComponentConfig):
    port: PortNumber = 9100
    # The textfile collector reads *.prom here (Debian's default directory; other components,
    # e.g. postgres backups, write their freshness metrics into it atomically).
    textfile_directory: str = Field(
        default="/var/lib/prometheus/node-exporter", pattern=r"^(/[A-Za-z0-9._-]+)+$"
    )

    def ports(self) -> list[Port]:
        return [
            Port(service="node_exporter", number=self.port, clients=("monitoring",), field="port")
        ]


def files(view: HostView, cfg: Config) -> list[FileSpec]:
    return [
        FileSpec(
            dest="/etc/default/prometheus-node-exporter",
            template="node_exporter/prometheus-node-exporter.default.j2",
        ),
        sandbox_dropin("prometheus-node-exporter", "node_exporter/sandbox.conf.j2"),
    ]


COMPONENT = Component(
    name="node_exporter",
    config=Config,
    role="base",
    files=files,
    scrape=lambda cfg, host: Scrape(f"{host.address}:{cfg.port}"),
)
