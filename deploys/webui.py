"""OpenWebUI (production; the lab skips it by an explicit override, see inventory/lab.yml).

A venv on a Python open-webui supports (webui.python: 3.11 or 3.12), the pinned open-webui from
PyPI, its settings in an env file (secrets, 0640), a systemd unit on loopback, and nginx on the
document's port 80 proxying to it (websockets too), checked with `nginx -t` before reload.
When the interpreter is not on the host the component stops with one line; nothing is faked.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.server import Which
from pyinfra.operations import apt, files, pip, server, systemd
from pyinfra.operations.util import any_changed

from citadel.artifacts import ArtifactUnavailable
from citadel.components.webui import (
    DATA_DIR,
    ENV_FILE,
    SERVICE,
    SITE,
    STATE_DIR,
    SUPPORTED_PYTHON,
    UNIT,
    USER,
    VENV,
    Config,
)
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._files import put_files


def check_python(ctx: DeployContext, cfg: Config) -> None:
    if not host.get_fact(Which, command=cfg.python):
        raise ArtifactUnavailable(
            f"{cfg.python} is not installed on {ctx.host.name}: open-webui {cfg.version} needs "
            f"Python {' or '.join(SUPPORTED_PYTHON)} (install it, or point webui.python at one)"
        )


@deploy("webui: install")
def install(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    apt.packages(
        name="Install nginx",
        packages=["nginx"],
        no_recommends=True,
    )
    server.group(name=f"Group {USER}", group=USER, system=True)
    server.user(
        name=f"User {USER} (no login)",
        user=USER,
        group=USER,
        home=STATE_DIR,
        shell="/usr/sbin/nologin",
        system=True,
        ensure_home=False,
    )
    for path in (STATE_DIR, DATA_DIR, f"{STATE_DIR}/static", f"{STATE_DIR}/cache"):
        files.directory(name=f"Directory {path}", path=path, user=USER, group=USER, mode="0750")
    files.directory(
        name="Directory /etc/open-webui", path="/etc/open-webui", group=USER, mode="0750"
    )
    venv = pip.virtualenv(
        name=f"venv {VENV} ({cfg.python})", path=VENV, python=cfg.python, venv=True
    )
    package = pip.packages(
        name=f"open-webui=={cfg.version} in {VENV}",
        packages=[f"open-webui=={cfg.version}"],
        pip=f"{VENV}/bin/pip",
    )
    return [venv, package]


@deploy("webui: configure")
def configure(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    files.link(
        name="Remove nginx's default site (port 80 is OpenWebUI's)",
        path="/etc/nginx/sites-enabled/default",
        present=False,
    )
    return put_files(ctx.files("webui"))


@deploy("webui: activate")
def activate(
    ctx: DeployContext, cfg: Config, installed: list[OperationMeta], changed: list[OperationMeta]
) -> None:
    dests = [f.spec.dest for f in ctx.files("webui")]
    by_dest = dict(zip(dests, changed, strict=True))
    systemd.daemon_reload(name="Reload systemd units", _if=by_dest[UNIT].did_change)
    systemd.service(
        name=f"Restart {SERVICE} (package, unit or settings changed)",
        service=SERVICE,
        restarted=True,
        _if=any_changed(*installed, by_dest[UNIT], by_dest[ENV_FILE]),
    )
    systemd.service(name=f"Run {SERVICE}", service=SERVICE, running=True, enabled=True)
    systemd.service(name="Run nginx", service="nginx", running=True, enabled=True)
    systemd.service(
        name="Reload nginx (site changed, checked with nginx -t)",
        service="nginx",
        reloaded=True,
        _if=by_dest[SITE].did_change,
    )


def apply(ctx: DeployContext, cfg: Config) -> None:
    check_python(ctx, cfg)
    installed = install(ctx, cfg)
    activate(ctx, cfg, installed, configure(ctx, cfg))
