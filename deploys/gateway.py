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

from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files

from citadel.components.edge_tls import GATEWAY_SOCKET
from citadel.components.gateway import ETC, VENV, Config
from citadel.releases import release_wheels
from deploys._context import DeployContext
from deploys._files import Changes, put_changes
from deploys._service import Ready, UnitService, unit_service
from deploys._venv import host_python_version, install_project_service

PROJECT = Path(__file__).resolve().parent.parent / "services" / "gateway"
STAGE = "/var/cache/citadel/wheels/gateway"
SERVICE = "citadel-gateway"
USER = "citadel-gateway"


def _install(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    built = release_wheels(PROJECT, cfg.version, SERVICE, host_python_version())
    return install_project_service(built, label=SERVICE, venv=VENV, stage=STAGE, user=USER)


def _configure(ctx: DeployContext, cfg: Config) -> Changes:
    """config.yml, the key and the secrets reload (their FileSpec.on_change); the unit restarts,
    the socket unit re-creates the socket."""
    for path in (ETC, f"{ETC}/secrets"):
        files.directory(name=f"Directory {path}", path=path, user="root", group=USER, mode="0750")
    return put_changes(ctx.files("gateway"))


def ready(ctx: DeployContext, cfg: Config) -> Ready:
    if ctx.host.edge_tls is not None and ctx.view.deployed(ctx.host, "edge_tls"):
        url = f"--unix-socket {GATEWAY_SOCKET} http://localhost/health"  # nginx fronts it
    else:
        url = f"http://127.0.0.1:{cfg.port}/health"
    return Ready(f"Wait until {url} answers", url, '"status"', 60)


UNIT = UnitService(
    "gateway",
    SERVICE,
    "gateway unit",
    "package or unit changed",
    ready,
    reload_why="config, key or secret changed",
    sockets=(f"{SERVICE}.socket",),
)
install, configure, activate, apply = unit_service(UNIT, _install, _configure)
