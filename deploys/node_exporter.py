"""Prometheus node exporter: Debian's package, listening on the host's own address.

The reference component: copy this shape (install / configure / activate + apply) for a new one.
"""

from __future__ import annotations

from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt

from citadel.components.node_exporter import Config
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._files import put_files
from deploys._service import restart_on_change

SERVICE = "prometheus-node-exporter"
# Installed with the base packages in one apt transaction (deploys/base.py); listed here too so
# this component stands alone (then a no-op: the package fact already has it).
PACKAGES = [SERVICE]


@deploy("node_exporter: install")
def install(ctx: DeployContext, cfg: Config) -> None:
    apt.packages(
        name="Install prometheus-node-exporter",
        packages=PACKAGES,
        no_recommends=True,
    )


@deploy("node_exporter: configure")
def configure(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    return put_files(ctx.files("node_exporter"))


@deploy("node_exporter: activate")
def activate(ctx: DeployContext, cfg: Config, changed: list[OperationMeta]) -> None:
    restart_on_change(SERVICE, changed)


def apply(ctx: DeployContext, cfg: Config) -> None:
    install(ctx, cfg)
    activate(ctx, cfg, configure(ctx, cfg))
