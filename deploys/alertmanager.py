"""Alertmanager: Debian's package (it ships amtool); config from the inventory, checked first.

alertmanager.yml is staged and checked with `amtool check-config` before it replaces the live one
(deploys/_files.put_files); a changed config or receiver secret reloads it (systemctl reload =
SIGHUP), only its arguments (/etc/default/prometheus-alertmanager: listen address) restart it.
"""

from __future__ import annotations

from pyinfra.operations import apt, files

from citadel.components import alertmanager as model
from citadel.components.alertmanager import Config
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._files import Changes, put_changes
from deploys._service import restart_or_reload

SERVICE = model.SERVICE


@deploy("alertmanager: install")
def install(ctx: DeployContext, cfg: Config) -> None:
    apt.packages(name=f"Install {SERVICE}", packages=[SERVICE], no_recommends=True)


@deploy("alertmanager: configure")
def configure(ctx: DeployContext, cfg: Config) -> Changes:
    files.directory(
        name=f"Directory {model.STORAGE_DIR}",
        path=model.STORAGE_DIR,
        user="prometheus",
        group="prometheus",
        mode="0750",
    )
    return put_changes(ctx.files("alertmanager"))


@deploy("alertmanager: activate")
def activate(ctx: DeployContext, cfg: Config, changed: Changes) -> None:
    restart_or_reload(
        "alertmanager",
        SERVICE,
        changed,
        restart_why="listen address or sandbox changed",
        reload_why="configuration or receiver secret changed",
    )


def apply(ctx: DeployContext, cfg: Config) -> None:
    install(ctx, cfg)
    activate(ctx, cfg, configure(ctx, cfg))
