"""The NVML GPU exporter (services/gpu_exporter): a venv on the host, a wheel built here.

The wheel is built once per source state on the controller (citadel.wheels.ensure_project_wheel,
cached under /var/cache/citadel/wheels) together with its dependency wheels for the host's
Python, uploaded and installed offline (deploys/_venv.py). The unit runs
``citadel-gpu-exporter --listen <host address> --port 9835``; without a GPU it serves
``nvidia_gpu_up 0`` and keeps running.
"""

from __future__ import annotations

from pathlib import Path

from pyinfra.api.operation import OperationMeta

from citadel.components.gpu_exporter import SERVICE, VENV, Config
from deploys._context import DeployContext
from deploys._service import Ready, UnitService, unit_service
from deploys._venv import host_python_version, install_project_service, project_wheels

PROJECT = Path(__file__).resolve().parent.parent / "services" / "gpu_exporter"
STAGE = "/var/cache/citadel/wheels/gpu-exporter"


def ready(ctx: DeployContext, cfg: Config) -> Ready:
    url = f"http://{ctx.host.address}:{cfg.port}/metrics"
    return Ready(f"Wait until {url} answers", url, "nvidia_gpu_up ", 30)


def _install(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    built = project_wheels(PROJECT, SERVICE, host_python_version())
    return install_project_service(built, label=SERVICE, venv=VENV, stage=STAGE)


UNIT = UnitService("gpu_exporter", SERVICE, "exporter unit", "unit or package changed", ready)
install, configure, activate, apply = unit_service(UNIT, _install)
