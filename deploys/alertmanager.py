"""Alertmanager: Debian's package (it ships amtool); config from the inventory, checked first.

alertmanager.yml is staged and checked with `amtool check-config` before it replaces the live one
(deploys/_files.put_files); a changed config or receiver secret reloads it (systemctl reload =
SIGHUP), only its arguments (/etc/default/prometheus-alertmanager: listen address) restart it.
"""

from __future__ import annotations

from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt, files

from citadel.components import alertmanager as model
from citadel.components.alertmanager import Config
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._files import put_files
from deploys._service import restart_or_reload

SERVICE = model.SERVICE


@deploy("alertmanager: install")
def install(ctx: DeployContext, cfg: Config) -> None:
    apt.packages(name=f"Install {SERVICE}", packages=[SERVICE], no_recommends=True)


@deploy("alertmanager: configure")
def configure(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    files.directory(
        name=f"Directory {model.STORAGE_DIR}",
        path=model.STORAGE_DIR,
        user="prometheus",
        group="prometheus",
        mode="0750",
    )
    return put_files(ctx.files("alertmanager"))


@deploy("alertmanager: activate")
def activate(ctx: DeployContext, cfg: Config, changed: list[OperationMeta]) -> None:
    restart_or_reload(
        "alertmanager",
        SERVICE,
        changed,
        [f.spec.dest for f in ctx.files("alertmanager")],
        restart_on={model.DEFAULTS_FILE},
        restart_why="listen address changed",
        reload_why="configuration or receiver secret changed",
    )


def apply(ctx: DeployContext, cfg: Config) -> None:
    install(ctx, cfg)
    activate(ctx, cfg, configure(ctx, cfg))
