"""The API gateway (services/gateway): a venv on the gateway host, a wheel built here.

The pinned release's wheel (``gateway.version``: citadel.releases) is installed offline with its
dependency wheels (deploys/_venv.py). Config, key and secret changes reload the gateway (SIGHUP: it
re-reads and validates its config and the files it names, keeping the old ones on error; a rotated
secret is taken without a refused request); a new package or unit restarts it. systemd holds its
listening socket (citadel-gateway.socket), so such a restart — an upgrade or a rollback — refuses
no connection: the old process drains, new connections wait in the socket for the new one. Only a
change of the socket unit itself (where it listens) re-creates the socket, stopping the gateway
for that moment.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files, systemd
from pyinfra.operations.util import any_changed

from citadel.components.edge_tls import GATEWAY_SOCKET
from citadel.components.gateway import ETC, SOCKET_UNIT, VENV, Config
from citadel.releases import release_wheels
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._files import Changes, changes, put_files
from deploys._service import Ready, unit_activate
from deploys._venv import host_python_version, install_project_service

PROJECT = Path(__file__).resolve().parent.parent / "services" / "gateway"
STAGE = "/var/cache/citadel/wheels/gateway"
SERVICE = "citadel-gateway"
SOCKET = "citadel-gateway.socket"
USER = "citadel-gateway"


@deploy("gateway: install")
def install(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    built = release_wheels(PROJECT, cfg.version, SERVICE, host_python_version())
    return install_project_service(built, label=SERVICE, venv=VENV, stage=STAGE, user=USER)


class Configured(NamedTuple):
    changed: Changes
    socket: list[OperationMeta]  # the socket unit's own operation: it re-creates the socket


@deploy("gateway: configure")
def configure(ctx: DeployContext, cfg: Config) -> Configured:
    """config.yml, the key and the secrets reload (their FileSpec.on_change); the units restart."""
    for path in (ETC, f"{ETC}/secrets"):
        files.directory(name=f"Directory {path}", path=path, user="root", group=USER, mode="0750")
    rendered = ctx.files("gateway")
    ops = put_files(rendered)
    socket = [op for f, op in zip(rendered, ops, strict=True) if f.spec.dest == SOCKET_UNIT]
    return Configured(changes(rendered, ops), socket)


@deploy("gateway: activate")
def activate(
    ctx: DeployContext, cfg: Config, configured: Configured, installed: list[OperationMeta]
) -> None:
    if ctx.host.edge_tls is not None and ctx.view.deployed(ctx.host, "edge_tls"):
        url = f"--unix-socket {GATEWAY_SOCKET} http://localhost/health"  # nginx fronts it
    else:
        url = f"http://127.0.0.1:{cfg.port}/health"
    changed, socket_changed = configured
    # a new listen address: the socket is re-created, with the gateway stopped meanwhile
    systemd.daemon_reload(
        name="Reload systemd units (gateway socket)", _if=any_changed(*socket_changed)
    )
    systemd.service(
        name=f"Stop {SERVICE} (its socket changed)",
        service=SERVICE,
        running=False,
        _if=any_changed(*socket_changed),
    )
    systemd.service(
        name=f"Restart {SOCKET} (its unit changed)",
        service=SOCKET,
        running=True,
        restarted=True,
        _if=any_changed(*socket_changed),
    )
    systemd.service(name=f"Run {SOCKET}", service=SOCKET, running=True, enabled=True)
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
