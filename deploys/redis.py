"""Redis: Debian's package, redis.conf from the model (validated by redis-server itself before it
goes live), restarted only when the config changed."""

from __future__ import annotations

from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt

from citadel.components.redis import Config
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._files import put_files
from deploys._service import restart_on_change

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
    restart_on_change(SERVICE, changed)


def apply(ctx: DeployContext, cfg: Config) -> None:
    install(ctx, cfg)
    activate(ctx, cfg, configure(ctx, cfg))
