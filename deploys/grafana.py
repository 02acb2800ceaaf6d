"""Grafana: the Grafana apt repository (signed-by keyring, version pinned), provisioned files.

Before touching the host, one bounded probe from the controller fetches the repository's Release
file; when it cannot be had the deploy stops with one line (ArtifactUnavailable) and the rest of
the converge goes on. The dashboards are rendered and validated by unit tests either way.
"""

from __future__ import annotations

import urllib.error
import urllib.request

from pyinfra import host
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.server import Command
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

from citadel.artifacts import ArtifactUnavailable
from citadel.components import grafana as model
from citadel.components.grafana import Config
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._files import put_files

SERVICE = "grafana-server"
KEYRING = "/etc/apt/keyrings/grafana.asc"
PROBE_TIMEOUT_S = 10


def probe_repository(cfg: Config) -> None:
    """One bounded request for the repository's Release file; raise ArtifactUnavailable if none."""
    url = cfg.release_url
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as rsp:
            rsp.read(64)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ArtifactUnavailable(
            f"grafana {cfg.version}: apt repository {cfg.repository} unavailable ({reason})"
        ) from None


@deploy("grafana: install")
def install(ctx: DeployContext, cfg: Config) -> None:
    files.directory(name="Directory /etc/apt/keyrings", path="/etc/apt/keyrings", mode="0755")
    files.download(
        name="Grafana repository key",
        src=cfg.key_url,
        dest=KEYRING,
        mode="0644",
    )
    repo = apt.repo(
        name="Grafana apt repository",
        src=f"deb [signed-by={KEYRING}] {cfg.repository} {cfg.suite} main",
        filename="grafana",
    )
    apt.update(name="apt update (Grafana repository added)", _if=repo.did_change)
    apt.packages(
        name=f"Install grafana {cfg.version}",
        packages=[f"grafana={cfg.version}"],
        no_recommends=True,
    )
    held = (host.get_fact(Command, command="apt-mark showhold") or "").split()
    if "grafana" not in held:
        server.shell(name="Hold grafana at the pinned version", commands=["apt-mark hold grafana"])


@deploy("grafana: configure")
def configure(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    files.directory(
        name=f"Directory {model.DASHBOARDS_DIR}", path=model.DASHBOARDS_DIR, mode="0755"
    )
    return put_files(ctx.files("grafana"))


@deploy("grafana: activate")
def activate(ctx: DeployContext, cfg: Config, changed: list[OperationMeta]) -> None:
    dests = [f.spec.dest for f in ctx.files("grafana")]
    by_dest = dict(zip(dests, changed, strict=True))
    # Dashboards are re-read by the file provider (updateIntervalSeconds); the rest needs a restart.
    restart = [op for d, op in by_dest.items() if not d.startswith(model.DASHBOARDS_DIR + "/")]
    systemd.service(name=f"Run {SERVICE}", service=SERVICE, running=True, enabled=True)
    systemd.service(
        name=f"Restart {SERVICE} (configuration changed)",
        service=SERVICE,
        restarted=True,
        _if=any_changed(*restart),
    )
    # admin_password in grafana.ini only seeds a new database: set it on the existing one too.
    server.shell(
        name="Set the Grafana admin password (password file changed)",
        commands=[
            "grafana cli --homepath /usr/share/grafana --config /etc/grafana/grafana.ini "
            f"admin reset-admin-password --password-from-stdin < {model.PASSWORD_FILE}"
        ],
        _if=by_dest[model.PASSWORD_FILE].did_change,
    )


def apply(ctx: DeployContext, cfg: Config) -> None:
    probe_repository(cfg)
    install(ctx, cfg)
    activate(ctx, cfg, configure(ctx, cfg))
