"""prometheus-redis-exporter: Debian's package, an info-only ACL user, the host's address."""

from __future__ import annotations

from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt

from citadel.components.redis_exporter import Config
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._files import put_files
from deploys._service import restart_on_change

SERVICE = "prometheus-redis-exporter"


@deploy("redis_exporter: install")
def install(ctx: DeployContext, cfg: Config) -> None:
    apt.packages(
        name=f"Install {SERVICE}",
        packages=[SERVICE],
        no_recommends=True,
    )


@deploy("redis_exporter: configure")
def configure(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    return put_files(ctx.files("redis_exporter"))


@deploy("redis_exporter: activate")
def activate(ctx: DeployContext, cfg: Config, changed: list[OperationMeta]) -> None:
    restart_on_change(SERVICE, changed)


def apply(ctx: DeployContext, cfg: Config) -> None:
    install(ctx, cfg)
    activate(ctx, cfg, configure(ctx, cfg))
