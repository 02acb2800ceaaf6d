"""The API gateway (services/gateway): a venv on the gateway host, a wheel built here.

The wheel is built once per source state on the controller and installed offline with its
dependency wheels (deploys/_venv.py). Config, key and secret changes reload the gateway (SIGHUP: it
re-reads and validates its config and the files it names, keeping the old ones on error; a rotated
secret is taken without a refused request); a new package or unit restarts it.
"""

from __future__ import annotations

from pathlib import Path

from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files

from citadel.components.edge_tls import GATEWAY_SOCKET
from citadel.components.gateway import ETC, VENV, Config
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._files import Changes, put_changes
from deploys._service import Ready, unit_activate
from deploys._venv import host_python_version, install_project_service, project_wheels

PROJECT = Path(__file__).resolve().parent.parent / "services" / "gateway"
STAGE = "/var/cache/citadel/wheels/gateway"
SERVICE = "citadel-gateway"
USER = "citadel-gateway"


@deploy("gateway: install")
def install(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    built = project_wheels(PROJECT, SERVICE, host_python_version())
    return install_project_service(built, label=SERVICE, venv=VENV, stage=STAGE, user=USER)


@deploy("gateway: configure")
def configure(ctx: DeployContext, cfg: Config) -> Changes:
    """config.yml, the key and the secrets reload (their FileSpec.on_change); the unit restarts."""
    for path in (ETC, f"{ETC}/secrets"):
        files.directory(name=f"Directory {path}", path=path, user="root", group=USER, mode="0750")
    return put_changes(ctx.files("gateway"))


@deploy("gateway: activate")
def activate(
    ctx: DeployContext, cfg: Config, changed: Changes, installed: list[OperationMeta]
) -> None:
    if ctx.host.edge_tls is not None and ctx.view.deployed(ctx.host, "edge_tls"):
        url = f"--unix-socket {GATEWAY_SOCKET} http://localhost/health"  # nginx fronts it
    else:
        url = f"http://127.0.0.1:{cfg.port}/health"
    unit_activate(
        SERVICE,
        changed,
        units="gateway unit",
        restart_why="package or unit changed",
        reload_why="config, key or secret changed",
        installed=installed,
        ready=Ready(f"Wait until {url} answers", url, '"status"', 60),
    )


def apply(ctx: DeployContext, cfg: Config) -> None:
    installed = install(ctx, cfg)
    activate(ctx, cfg, configure(ctx, cfg), installed)
