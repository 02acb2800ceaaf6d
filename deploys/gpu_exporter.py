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
from pyinfra.operations import apt, server, systemd
from pyinfra.operations.util import any_changed

from citadel.components.gpu_exporter import SERVICE, VENV, Config
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._files import put_files
from deploys._service import ready_check
from deploys._venv import host_python_version, install_wheels, project_wheels

PROJECT = Path(__file__).resolve().parent.parent / "services" / "gpu_exporter"
STAGE = "/var/cache/citadel/wheels/gpu-exporter"


@deploy("gpu_exporter: install")
def install(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    wheel, req, deps = project_wheels(PROJECT, "citadel-gpu-exporter", host_python_version())
    apt.packages(
        name="Install python3-venv and curl",
        packages=["python3-venv", "curl"],
        no_recommends=True,
    )
    op = install_wheels(
        label="citadel-gpu-exporter",
        venv=VENV,
        requirement=req,
        main_wheel=wheel,
        dependency_wheels=deps,
        stage=STAGE,
        force_main=True,
    )
    return [op] if op is not None else []


@deploy("gpu_exporter: configure")
def configure(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    return put_files(ctx.files("gpu_exporter"))


@deploy("gpu_exporter: activate")
def activate(
    ctx: DeployContext, cfg: Config, unit: list[OperationMeta], installed: list[OperationMeta]
) -> None:
    systemd.daemon_reload(name="Reload systemd units (exporter unit)", _if=any_changed(*unit))
    restart = systemd.service(
        name=f"Restart {SERVICE} (unit or package changed)",
        service=SERVICE,
        restarted=True,
        _if=any_changed(*unit, *installed),
    )
    start = systemd.service(name=f"Run {SERVICE}", service=SERVICE, running=True, enabled=True)
    url = f"http://{ctx.host.address}:{cfg.port}/metrics"
    server.shell(
        name=f"Wait until {url} answers",
        commands=[ready_check(SERVICE, url, "nvidia_gpu_up ", 30)],
        _if=any_changed(restart, start),
    )


def apply(ctx: DeployContext, cfg: Config) -> None:
    installed = install(ctx, cfg)
    unit = configure(ctx, cfg)
    activate(ctx, cfg, unit=unit, installed=installed)
