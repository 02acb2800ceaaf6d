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
from deploys._deploy import deploy
from deploys._files import Changes, put_changes
from deploys._service import Ready, unit_activate
from deploys._venv import host_python_version, install_project_service, project_wheels

PROJECT = Path(__file__).resolve().parent.parent / "services" / "gpu_exporter"
STAGE = "/var/cache/citadel/wheels/gpu-exporter"


@deploy("gpu_exporter: install")
def install(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    built = project_wheels(PROJECT, SERVICE, host_python_version())
    return install_project_service(built, label=SERVICE, venv=VENV, stage=STAGE)


@deploy("gpu_exporter: configure")
def configure(ctx: DeployContext, cfg: Config) -> Changes:
    return put_changes(ctx.files("gpu_exporter"))


@deploy("gpu_exporter: activate")
def activate(
    ctx: DeployContext, cfg: Config, unit: Changes, installed: list[OperationMeta]
) -> None:
    url = f"http://{ctx.host.address}:{cfg.port}/metrics"
    unit_activate(
        SERVICE,
        unit,
        units="exporter unit",
        restart_why="unit or package changed",
        installed=installed,
        ready=Ready(f"Wait until {url} answers", url, "nvidia_gpu_up ", 30),
    )


def apply(ctx: DeployContext, cfg: Config) -> None:
    installed = install(ctx, cfg)
    unit = configure(ctx, cfg)
    activate(ctx, cfg, unit=unit, installed=installed)
