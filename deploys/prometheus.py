"""Prometheus: Debian's package; config and rules from the inventory, checked by promtool first.

Every rendered rule file and prometheus.yml is staged and checked with promtool before it
replaces the live one (deploys/_files.put_files); a file Prometheus re-reads on SIGHUP reloads
it (systemctl reload), only the listen address / retention (/etc/default/prometheus) restart it.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import apt, files

from citadel.components import prometheus as model
from citadel.components.prometheus import Config
from citadel.render import RenderedFile
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._files import Changes, put_changes
from deploys._service import restart_or_reload

SERVICE = "prometheus"
PROBE_TIMEOUT_S = 10


@deploy("prometheus: install")
def install(ctx: DeployContext, cfg: Config) -> None:
    distro = host.get_fact(LinuxDistribution)
    major = distro.get("major") if isinstance(distro, dict) else None
    # Debian 13 ships promtool as its own package (prometheus depends on it); 12 bundles it.
    packages = [SERVICE, "promtool"] if isinstance(major, int) and major >= 13 else [SERVICE]
    apt.packages(
        name=f"Install {', '.join(packages)}",
        packages=packages,
        no_recommends=True,
    )


def rendered(ctx: DeployContext) -> list[RenderedFile]:
    return ctx.files("prometheus")


@deploy("prometheus: configure")
def configure(ctx: DeployContext, cfg: Config) -> Changes:
    rendered_files = rendered(ctx)
    if any(f.spec.dest.startswith(model.SECRETS_DIR + "/") for f in rendered_files):
        files.directory(
            name=f"Directory {model.SECRETS_DIR}",
            path=model.SECRETS_DIR,
            user="root",
            group="prometheus",
            mode="0750",
        )
    else:
        files.file(
            name=f"No {model.QDRANT_KEY_FILE} (no Qdrant target)",
            path=model.QDRANT_KEY_FILE,
            present=False,
        )
    files.directory(name=f"Directory {model.RULES_DIR}", path=model.RULES_DIR, mode="0755")
    return put_changes(rendered_files)


@deploy("prometheus: activate")
def activate(ctx: DeployContext, cfg: Config, changed: Changes) -> None:
    restart_or_reload(
        "prometheus",
        SERVICE,
        changed,
        restart_why="listen address, retention or sandbox changed",
        reload_why="configuration or rules changed",
    )


def apply(ctx: DeployContext, cfg: Config) -> None:
    install(ctx, cfg)
    activate(ctx, cfg, configure(ctx, cfg))
