"""Alertmanager: Debian's package (it ships amtool); config from the inventory, checked first.

alertmanager.yml is staged and checked with `amtool check-config` before it replaces the live one
(deploys/_files.put_files); a changed config or receiver secret reloads it (systemctl reload =
SIGHUP), only its arguments (/etc/default/prometheus-alertmanager: listen address) restart it.
"""

from __future__ import annotations

from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt, files, systemd
from pyinfra.operations.util import any_changed

from citadel.components import alertmanager as model
from citadel.components.alertmanager import Config
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._files import put_files

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
    dests = [f.spec.dest for f in ctx.files("alertmanager")]
    args = [op for op, dest in zip(changed, dests, strict=True) if dest == model.DEFAULTS_FILE]
    reloadable = [op for op in changed if op not in args]
    systemd.service(name=f"Run {SERVICE}", service=SERVICE, running=True, enabled=True)
    systemd.service(
        name=f"Restart {SERVICE} (listen address changed)",
        service=SERVICE,
        restarted=True,
        _if=any_changed(*args),
    )
    systemd.service(
        name=f"Reload {SERVICE} (configuration or receiver secret changed)",
        service=SERVICE,
        reloaded=True,
        _if=any_changed(*reloadable),
    )


def apply(ctx: DeployContext, cfg: Config) -> None:
    install(ctx, cfg)
    activate(ctx, cfg, configure(ctx, cfg))
