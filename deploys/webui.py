"""OpenWebUI: a venv from controller-prepared wheels, its env/unit, nginx on port 80, the admin.

install   nginx, python3-venv and curl, user ``open-webui`` (home /var/lib/open-webui), the venv
          with ``open-webui[postgres]==<version>``: the wheel, the wheels PyPI ships only as
          source (built once here, pure Python) and the dependency set (with webui.constraints:
          the CPU torch) are fetched once on the CONTROLLER (citadel.wheels), uploaded and
          installed offline; a fingerprint fact makes a re-run upload nothing and run no pip.
configure /etc/open-webui/open-webui.env (0640: secrets, DATABASE_URL), open-webui.service, the
          admin's sign-up body (0600), the nginx site (checked with ``nginx -t`` first).
activate  restart when the package, the unit or the env changed (``unit_activate``), wait for
          /health (the first start runs its migrations), then create the admin account when
          the instance has none yet; nginx reloads only when the site changed.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt, files, server
from pyinfra.operations.util import any_changed

from citadel import wheels
from citadel.artifacts import ArtifactUnavailable
from citadel.components.webui import (
    ADMIN_FILE,
    DATA_DIR,
    ETC,
    SERVICE,
    STAGE,
    STATE_DIR,
    SUPPORTED_PYTHON,
    USER,
    VENV,
    Config,
)
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._files import Changes, put_changes
from deploys._service import Ready, nginx_activate, system_account, unit_activate
from deploys._venv import DEFAULT_PYTHON, install_wheels, interpreter_version

PACKAGES = ["nginx", "python3-venv", "curl"]


def python_version(ctx: DeployContext, cfg: Config) -> str:
    """``X.Y`` of the venv's interpreter on the host; stops with one line when open-webui cannot
    run on it (Debian 13's python3 is 3.13)."""
    version = interpreter_version(cfg.python)
    if version is None and cfg.python == "python3":
        version = DEFAULT_PYTHON.get(("debian", ctx.host.distribution.removeprefix("debian-")))
    if version not in SUPPORTED_PYTHON:
        found = f"is Python {version}" if version else "is not installed"
        raise ArtifactUnavailable(
            f"{cfg.python} on {ctx.host.name} {found}: open-webui {cfg.version} needs Python "
            f"{' or '.join(SUPPORTED_PYTHON)} (give the host distribution: debian-12, or point "
            "webui.python at a python3.11 / python3.12)"
        )
    return version


def check_python(ctx: DeployContext, cfg: Config) -> None:
    """The preflight's read-only check (deploys.CHECKS)."""
    python_version(ctx, cfg)


def controller_wheels(cfg: Config, python_version: str) -> tuple[Path, list[Path]]:
    """open-webui's wheel and its dependency wheels for the host's Python, fetched once here."""
    req = cfg.requirement
    env = wheels.pip_environment(cfg.pip_extra_index_urls, cfg.pip_find_links)
    source_env = {
        **wheels.pip_environment(cfg.pip_extra_index_urls, cfg.pip_find_links, only_binary=False),
        **cfg.source_build_env,
    }
    try:
        for source in cfg.source_builds:
            wheels.ensure_pure_wheel(source, source_env)
        wheel = wheels.ensure_wheel(req, env)
        deps = wheels.ensure_dependency_wheels(
            req, python_version=python_version, env=env, constraints=cfg.constraints
        )
    except wheels.ArtifactError as exc:
        raise ArtifactUnavailable(f"{req}: {exc}") from None
    return wheel, sorted(deps.glob("*.whl"))


@deploy("webui: install")
def install(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    """Packages, the service account, the venv with the pinned open-webui. Returns what changed
    (a new package restarts the service)."""
    pyver = python_version(ctx, cfg)
    wheel, deps = controller_wheels(cfg, pyver)
    apt.packages(name=f"Install {', '.join(PACKAGES)}", packages=PACKAGES, no_recommends=True)
    system_account(
        USER,
        home=STATE_DIR,
        dirs=(STATE_DIR, DATA_DIR, f"{STATE_DIR}/static", f"{STATE_DIR}/cache"),
        mode="0750",
    )
    files.directory(name=f"Directory {ETC}", path=ETC, group=USER, mode="0750")
    pip_op = install_wheels(
        label="OpenWebUI",
        venv=VENV,
        requirement=cfg.requirement,
        main_wheel=wheel,
        dependency_wheels=deps,
        stage=STAGE,
        python=cfg.python,
    )
    return [pip_op] if pip_op is not None else []


@deploy("webui: configure")
def configure(ctx: DeployContext, cfg: Config) -> Changes:
    files.link(
        name="Remove nginx's default site (port 80 is OpenWebUI's)",
        path="/etc/nginx/sites-enabled/default",
        present=False,
    )
    return put_changes(ctx.files("webui"))


def health_url(cfg: Config) -> str:
    return f"http://127.0.0.1:{cfg.internal_port}"


def admin_command(cfg: Config) -> str:
    """Sign the admin up when the instance has no account yet (OpenWebUI's /api/config says
    ``onboarding``); the body, with the password, is read from the 0600 file, never a command
    line. A no-op when an account exists."""
    base = health_url(cfg)
    signup = (
        f"curl -sf --max-time 60 -o /dev/null -H 'Content-Type: application/json' "
        f"--data-binary @{ADMIN_FILE} {base}/api/v1/auths/signup"
    )
    check = f"curl -sf --max-time 10 {base}/api/config"
    return (
        f"config=$({check}) && "
        "{ printf '%s' \"$config\" | grep -q '\"onboarding\": *true' || exit 0; } && "
        f"{signup} && echo {shlex.quote(f'created the admin account {cfg.admin_email}')}"
    )


@deploy("webui: activate")
def activate(
    ctx: DeployContext, cfg: Config, written: Changes, installed: list[OperationMeta]
) -> None:
    # The site and the drop-in are nginx's (Changes.reload, .unit); OpenWebUI restarts on its
    # package, unit and env.
    unit_activate(
        SERVICE,
        written._replace(reload=[], unit=[]),
        units="open-webui unit",
        restart_why="package, unit or settings changed",
        installed=installed,
        ready=Ready(
            "Wait until OpenWebUI answers /health (the first start runs its migrations)",
            f"{health_url(cfg)}/health",
            None,
            cfg.ready_timeout_s,
        ),
    )
    server.shell(
        name=f"Create the admin account {cfg.admin_email} (when OpenWebUI has none)",
        commands=[admin_command(cfg)],
        _if=any_changed(*installed, *written.restart),
    )
    nginx_activate(written)


def apply(ctx: DeployContext, cfg: Config) -> None:
    installed = install(ctx, cfg)
    activate(ctx, cfg, configure(ctx, cfg), installed)
