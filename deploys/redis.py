"""Redis: Debian's package, redis.conf from the model (validated by redis-server itself before it
goes live), restarted only when the config changed."""

from __future__ import annotations

from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt, systemd
from pyinfra.operations.util import any_changed

from citadel.components.redis import Config
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._files import put_files

SERVICE = "redis-server"


@deploy("redis: install")
def install(ctx: DeployContext, cfg: Config) -> None:
    apt.packages(
        name="Install redis-server",
        packages=["redis-server", "redis-tools"],
        no_recommends=True,
    )


@deploy("redis: configure")
def configure(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    return put_files(ctx.files("redis"))


@deploy("redis: activate")
def activate(ctx: DeployContext, cfg: Config, changed: list[OperationMeta]) -> None:
    systemd.service(
        name=f"Restart {SERVICE} (config changed)",
        service=SERVICE,
        restarted=True,
        _if=any_changed(*changed),
    )
    systemd.service(name=f"Run {SERVICE}", service=SERVICE, running=True, enabled=True)


def apply(ctx: DeployContext, cfg: Config) -> None:
    # (pyinfra types @deploy functions as operations: cast to call them with our arguments)
    install(ctx, cfg)
    activate(ctx, cfg, configure(ctx, cfg))
