"""NVML GPU exporter (services/gpu_exporter) on GPU hosts.

Installed from a wheel built on the controller into a venv on the host; a host with no GPU or
driver (the lab) still runs it and exports ``nvidia_gpu_up 0``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from citadel.model.common import ComponentConfig, Port, PortNumber
from citadel.model.component import Component, Scrape
from citadel.model.files import FileSpec

if TYPE_CHECKING:
    from citadel.render import HostView

VENV = "/opt/citadel-gpu-exporter"
UNIT = "/etc/systemd/system/citadel-gpu-exporter.service"
SERVICE = "citadel-gpu-exporter"
# The fact helper: one JSON object describing the GPUs NVML sees (deploys/facts/gpu.py).
PROBE = f"{VENV}/bin/python -m citadel_gpu_exporter.probe"


class Config(ComponentConfig):
    port: PortNumber = 9835

    def ports(self) -> list[Port]:
        return [
            # the gateway reads it for the chat responses' performance.gpu_utilization
            Port(
                service="gpu_exporter",
                number=self.port,
                clients=("monitoring", "gateway"),
                field="port",
            )
        ]


def files(view: HostView, cfg: Config) -> list[FileSpec]:
    return [
        FileSpec(
            dest=UNIT,
            template="gpu_exporter/citadel-gpu-exporter.service.j2",
            extra={"venv": VENV},
        )
    ]


COMPONENT = Component(
    name="gpu_exporter",
    config=Config,
    role="gpu",
    files=files,
    scrape=lambda cfg, host: Scrape(f"{host.address}:{cfg.port}"),
)
