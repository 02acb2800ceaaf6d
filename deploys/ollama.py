"""Ollama on a GPU host: the pinned release tarball, an ``ollama`` user, a unit + drop-in, and
the served model made idempotently.

install   the release artifact (pins.yml: sha256, controller cache, mirror - citadel.artifacts;
          where it cannot be had, ArtifactUnavailable stops this component with one line before
          any operation), unpacked once into /opt/ollama/<version>, /usr/local/bin/ollama linked
configure ollama.service, the drop-in (OLLAMA_HOST / OLLAMA_MODELS / OLLAMA_KEEP_ALIVE), the
          Modelfile of the served name (FROM <base model>)
activate  restart when a file or the binary changed; wait for /api/version after a (re)start
models    a fact reads /api/tags: ``ollama pull <base>`` only when it is missing, ``ollama create
          <served name>`` only when that is missing or its Modelfile changed.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

from pyinfra import host
from pyinfra.api import FactBase
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import Directory
from pyinfra.facts.server import Arch
from pyinfra.operations import files, server
from pyinfra.operations.util import any_changed

from citadel import artifacts
from citadel.components.model_server import (
    OLLAMA_BIN,
    OLLAMA_HOME,
    OLLAMA_MODELFILES,
    OLLAMA_MODELS,
    OLLAMA_PREFIX,
    Config,
)
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._service import Ready, UnitService, system_account, unit_service

SERVICE = "ollama"
USER = "ollama"
UPLOADS = "/var/cache/citadel/artifacts"


class OllamaTags(FactBase[Any]):
    """The model names an Ollama server lists at /api/tags (None when it does not answer)."""

    def command(self, url: str) -> str:
        return f"curl -sf --max-time 5 {url}/api/tags || true"

    def process(self, output: list[str]) -> set[str] | None:
        text = "\n".join(output).strip()
        if not text:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return None
        return {str(m.get("name") or m.get("model")) for m in data.get("models") or []}


def tagged(name: str) -> str:
    """Ollama lists ``name:latest`` for an untagged name."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def release(cfg: Config, arch: str, pins: dict | None = None) -> artifacts.Artifact:
    return artifacts.pinned("ollama", cfg.ollama.version, arch, pins)


def fetch_release(ctx: DeployContext, cfg: Config, arch: str) -> str:
    """The verified tarball on the controller (raises ArtifactUnavailable)."""
    settings = ctx.cluster.artifacts
    artifact = release(cfg, arch)
    return str(artifacts.ensure_cached(artifact, settings.cache_dir, settings.mirror))


def ollama_cmd(cfg: Config, address: str, args: str) -> str:
    return f"OLLAMA_HOST={address}:{cfg.port} {OLLAMA_BIN} {args}"


def _install(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    arch = str(host.get_fact(Arch) or "x86_64")
    tarball = fetch_release(ctx, cfg, arch)  # first: an unavailable artifact stops before any op
    version_dir = f"{OLLAMA_PREFIX}/{cfg.ollama.version}"
    system_account(USER, home=OLLAMA_HOME, dirs=(OLLAMA_HOME, OLLAMA_MODELS), mode="0755")
    changed: list[OperationMeta] = []
    if not host.get_fact(Directory, path=f"{version_dir}/bin"):
        upload = f"{UPLOADS}/{posixpath.basename(tarball)}"
        files.put(
            name=f"Upload ollama {cfg.ollama.version} ({arch})",
            src=tarball,
            dest=upload,
            mode="0644",
        )
        changed.append(
            server.shell(
                name=f"Unpack ollama {cfg.ollama.version} into {version_dir}",
                commands=[
                    f"rm -rf {version_dir}.tmp && mkdir -p {version_dir}.tmp && "
                    f"tar -C {version_dir}.tmp -xzf {upload} && "
                    f"mv {version_dir}.tmp {version_dir}"
                ],
            )
        )
    changed.append(
        files.link(
            name=f"Link {OLLAMA_BIN} -> ollama {cfg.ollama.version}",
            path=OLLAMA_BIN,
            target=f"{version_dir}/bin/ollama",
        )
    )
    return changed


def ready(ctx: DeployContext, cfg: Config) -> Ready:
    url = f"http://{ctx.host.address}:{cfg.port}/api/version"
    return Ready("Wait until /api/version answers", url, '"version"', cfg.ollama.ready_timeout_s)


UNIT = UnitService(
    "model", SERVICE, "ollama", "unit, drop-in or binary changed", ready, deploy="ollama"
)
install, configure, activate, _unit_apply = unit_service(UNIT, _install)


@deploy("ollama: models")
def models(ctx: DeployContext, cfg: Config, modelfile: list[OperationMeta]) -> None:
    address = str(ctx.host.address)
    tags = host.get_fact(OllamaTags, url=f"http://{address}:{cfg.port}") or set()
    base = cfg.ollama_base_model()
    if tagged(base) not in tags:
        server.shell(
            name=f"Pull {base} (missing from /api/tags)",
            commands=[ollama_cmd(cfg, address, f"pull {base}")],
        )
    path = posixpath.join(OLLAMA_MODELFILES, cfg.served_name)
    create = ollama_cmd(cfg, address, f"create {cfg.served_name} -f {path}")
    if tagged(cfg.served_name) not in tags:
        server.shell(name=f"Create {cfg.served_name} (missing)", commands=[create])
    else:
        server.shell(
            name=f"Re-create {cfg.served_name} (Modelfile changed)",
            commands=[create],
            _if=any_changed(*modelfile),
        )


def apply(ctx: DeployContext, cfg: Config) -> None:
    written = _unit_apply(ctx, cfg)
    models(ctx, cfg, modelfile=written.none)  # the Modelfile (FileSpec.on_change "none")
