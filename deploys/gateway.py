"""The API gateway (services/gateway): a venv on the gateway host, a wheel built here.

The wheel is built once per source state on the controller and installed offline with its
dependency wheels (deploys/_venv.py). Config changes reload the gateway (SIGHUP: it re-reads and
validates its config, keeping the old one on error); a new package, unit, key or secret restarts it.
"""

from __future__ import annotations

from pathlib import Path

from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

from citadel.components.edge_tls import GATEWAY_SOCKET
from citadel.components.gateway import ETC, VENV, Config
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._files import put_files
from deploys._service import ready_check, system_account
from deploys._venv import host_python_version, install_wheels, project_wheels

PROJECT = Path(__file__).resolve().parent.parent / "services" / "gateway"
STAGE = "/var/cache/citadel/wheels/gateway"
SERVICE = "citadel-gateway"
USER = "citadel-gateway"


@deploy("gateway: install")
def install(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    wheel, req, deps = project_wheels(PROJECT, "citadel-gateway", host_python_version())
    apt.packages(
        name="Install python3-venv and curl", packages=["python3-venv", "curl"], no_recommends=True
    )
    system_account(USER, home="/nonexistent")
    op = install_wheels(
        label=SERVICE,
        venv=VENV,
        requirement=req,
        main_wheel=wheel,
        dependency_wheels=deps,
        stage=STAGE,
        force_main=True,
    )
    return [op] if op is not None else []


@deploy("gateway: configure")
def configure(ctx: DeployContext, cfg: Config) -> tuple[list[OperationMeta], list[OperationMeta]]:
    """Returns (config changes: reload, everything else: restart)."""
    for path in (ETC, f"{ETC}/secrets"):
        files.directory(name=f"Directory {path}", path=path, user="root", group=USER, mode="0750")
    rendered = ctx.files("gateway")
    reload: list[OperationMeta] = []
    restart: list[OperationMeta] = []
    for f, op in zip(rendered, put_files(rendered), strict=True):
        (reload if f.spec.dest == f"{ETC}/config.yml" else restart).append(op)
    return reload, restart


@deploy("gateway: activate")
def activate(
    ctx: DeployContext,
    cfg: Config,
    reload: list[OperationMeta],
    restart: list[OperationMeta],
    installed: list[OperationMeta],
) -> None:
    systemd.daemon_reload(name="Reload systemd units (gateway unit)", _if=any_changed(*restart))
    restarted = systemd.service(
        name=f"Restart {SERVICE} (package, unit, key or secret changed)",
        service=SERVICE,
        restarted=True,
        _if=any_changed(*restart, *installed),
    )
    started = systemd.service(name=f"Run {SERVICE}", service=SERVICE, running=True, enabled=True)
    systemd.service(
        name=f"Reload {SERVICE} (config changed)",
        service=SERVICE,
        reloaded=True,
        _if=lambda: (
            any(op.did_change() for op in reload)
            and not restarted.did_change()
            and not started.did_change()
        ),
    )
    if ctx.host.edge_tls is not None and ctx.view.deployed(ctx.host, "edge_tls"):
        url = f"--unix-socket {GATEWAY_SOCKET} http://localhost/health"  # nginx fronts it
    else:
        url = f"http://127.0.0.1:{cfg.port}/health"
    server.shell(
        name=f"Wait until {url} answers",
        commands=[ready_check(SERVICE, url, '"status"', 60)],
        _if=any_changed(restarted, started, *reload),
    )


def apply(ctx: DeployContext, cfg: Config) -> None:
    installed = install(ctx, cfg)
    reload, restart = configure(ctx, cfg)
    activate(ctx, cfg, reload, restart, installed)
