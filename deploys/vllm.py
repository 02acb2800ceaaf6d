"""vLLM on a GPU host: a venv with the pinned vllm, the model fetched once, one systemd unit.

install   python3-venv, user ``vllm``, /opt/vllm venv with ``vllm==<version>`` (pip.packages:
          a fact compares the installed version, so a re-run installs nothing)
configure /etc/vllm/vllm.env (0600: VLLM_API_KEY from the ``model_api_key`` secret, HF_TOKEN
          when the model is gated, HF_HOME, offline flags) and vllm.service
fetch     the model snapshot into HF_HOME, only when a fact finds it missing; the server then
          runs with HF_HUB_OFFLINE=1 and never downloads at start
activate  restart when a file or the package changed; then poll /health (bounded: loading the
          weights takes minutes) only when the unit was (re)started.
"""

from __future__ import annotations

import json
import shlex

from pyinfra import host
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.server import Command
from pyinfra.operations import apt, pip, server, systemd
from pyinfra.operations.util import any_changed

from citadel.components.model_server import (
    VLLM_ENV_FILE,
    VLLM_HF_HOME,
    VLLM_HOME,
    VLLM_VENV,
    Config,
)
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._files import put_files
from deploys._service import ready_check, system_account

SERVICE = "vllm"
USER = "vllm"


def hf_cache_dir(source: str) -> str:
    """Where huggingface_hub keeps ``org/name`` under HF_HOME (hub/models--org--name)."""
    return f"{VLLM_HF_HOME}/hub/models--{source.replace('/', '--')}"


def model_present_command(source: str) -> str:
    """A fact command: prints a snapshot's config.json when the model is in the cache."""
    return f"ls -d {hf_cache_dir(source)}/snapshots/*/config.json 2>/dev/null | head -n 1 || true"


def fetch_command(source: str) -> str:
    """Download the snapshot as the vllm user, with the token from the 0600 env file.

    The token never appears on a command line: the env file is sourced by root's shell and
    runuser keeps the environment.
    """
    code = f"from huggingface_hub import snapshot_download; snapshot_download({json.dumps(source)})"
    return (
        f"set -a && . {VLLM_ENV_FILE} && set +a && "
        "export HF_HUB_OFFLINE=0 TRANSFORMERS_OFFLINE=0 && "
        f"runuser -u {USER} -- {VLLM_VENV}/bin/python -c {shlex.quote(code)}"
    )


@deploy("vllm: install")
def install(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    apt.packages(
        name="Install python3-venv and curl",
        packages=["python3-venv", "curl"],
        no_recommends=True,
    )
    system_account(USER, home=VLLM_HOME, dirs=(VLLM_HOME, VLLM_HF_HOME), mode="0750")
    pip.venv(name=f"vLLM: virtualenv {VLLM_VENV}", path=VLLM_VENV, python="python3")
    package = pip.packages(
        name=f"vLLM: vllm=={cfg.vllm.version}",
        packages=[f"vllm=={cfg.vllm.version}"],
        virtualenv=VLLM_VENV,
    )
    return [package]


@deploy("vllm: configure")
def configure(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    return put_files(ctx.files("model"))


@deploy("vllm: fetch model")
def fetch(ctx: DeployContext, cfg: Config) -> None:
    if cfg.source.startswith("/"):
        return  # a model directory already on the host
    if host.get_fact(Command, command=model_present_command(cfg.source)):
        return
    server.shell(
        name=f"Download {cfg.source} into {VLLM_HF_HOME} (once; the server runs offline)",
        commands=[fetch_command(cfg.source)],
    )


@deploy("vllm: activate")
def activate(
    ctx: DeployContext, cfg: Config, written: list[OperationMeta], installed: list[OperationMeta]
) -> None:
    systemd.daemon_reload(name="Reload systemd units (vllm unit)", _if=any_changed(*written))
    restart = systemd.service(
        name=f"Restart {SERVICE} (config or package changed)",
        service=SERVICE,
        restarted=True,
        _if=any_changed(*written, *installed),
    )
    start = systemd.service(name=f"Run {SERVICE}", service=SERVICE, running=True, enabled=True)
    server.shell(
        name=f"Wait until /health answers (loading {cfg.source} takes minutes)",
        commands=[
            ready_check(
                SERVICE,
                f"http://{ctx.host.address}:{cfg.port}/health",
                None,
                cfg.vllm.ready_timeout_s,
            )
        ],
        _if=any_changed(restart, start),
    )


def apply(ctx: DeployContext, cfg: Config) -> None:
    installed = install(ctx, cfg)
    written = configure(ctx, cfg)
    fetch(ctx, cfg)
    activate(ctx, cfg, written=written, installed=installed)
