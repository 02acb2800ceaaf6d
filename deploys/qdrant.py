"""Qdrant from its pinned release artifact: fetched once to the controller cache (sha256-checked,
mirror-overridable), pushed to the host, run by systemd as the `qdrant` user; the model's
collections created through the HTTP API only when missing; collection snapshots on a timer
(qdrant.backup: the first one right after the first converge) and citadel-qdrant-restore.

Where the artifact cannot be had, `ArtifactUnavailable` is raised before any operation: the deploy
stops for Qdrant alone with one line naming the artifact and the source tried.
"""

from __future__ import annotations

from typing import Any

from pyinfra import host
from pyinfra.api import FactBase
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.server import Arch
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from citadel.artifacts import ensure_cached, pinned
from citadel.components import qdrant as model
from citadel.components.qdrant import Config
from deploys import _backup as backup
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._files import changes, put_files


class QdrantCollections(FactBase[dict[str, Any]]):
    """Each named collection's vector size and distance (None where missing or unreachable)."""

    def command(self, url: str, names: list[str]) -> str:
        return model.collections_command(url, names)

    def process(self, output: list[str]) -> dict[str, Any]:
        return model.parse_collections(output)


@deploy("qdrant: install")
def install(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    arch = host.get_fact(Arch) or "x86_64"
    artifact = pinned("qdrant", cfg.version, arch)
    # Raises ArtifactUnavailable (one line: artifact + source) before any operation is queued.
    local = ensure_cached(artifact, ctx.cluster.artifacts.cache_dir, ctx.cluster.artifacts.mirror)
    server.group(name="qdrant group", group=model.USER, system=True)
    server.user(
        name="qdrant system user",
        user=model.USER,
        group=model.USER,
        home=model.HOME,
        shell="/usr/sbin/nologin",
        system=True,
    )
    for path in (model.HOME, cfg.storage_path, cfg.snapshots_path):
        files.directory(
            name=f"qdrant directory {path}",
            path=path,
            user=model.USER,
            group=model.USER,
            mode="0750",
        )
    files.directory(name="/etc/qdrant", path="/etc/qdrant", group=model.USER, mode="0750")
    dest = model.install_dir(cfg)
    files.directory(name=f"qdrant {cfg.version} directory", path=dest, mode="0755")
    tarball = files.put(
        name=f"Push {artifact.filename} (sha256-verified on the controller)",
        src=str(local),
        dest=f"{dest}/{artifact.filename}",
        mode="0644",
    )
    extracted = server.shell(
        name=f"Unpack qdrant {cfg.version}",
        commands=[model.extract_command(f"{dest}/{artifact.filename}", dest)],
        _if=tarball.did_change,
    )
    link = files.link(
        name=f"{model.BINARY_LINK} -> qdrant {cfg.version}",
        path=model.BINARY_LINK,
        target=f"{dest}/qdrant",
    )
    return [extracted, link]


@deploy("qdrant: configure")
def configure(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    return put_files(ctx.files("qdrant"))


@deploy("qdrant: activate")
def activate(
    ctx: DeployContext, cfg: Config, binary: list[OperationMeta], changed: list[OperationMeta]
) -> None:
    config, _header, unit = changed[:3]
    systemd.daemon_reload(name="Reload systemd units (qdrant)", _if=unit.did_change)
    systemd.service(
        name="Restart qdrant (binary, config or unit changed)",
        service=model.SERVICE,
        restarted=True,
        _if=any_changed(config, unit, *binary),
    )
    systemd.service(name="Run qdrant", service=model.SERVICE, running=True, enabled=True)

    url = model.base_url(str(ctx.host.address), cfg)
    existing = host.get_fact(QdrantCollections, url=url, names=[c.name for c in cfg.collections])
    create, conflicts = model.collection_plan(cfg.collections, existing)
    for problem in conflicts:
        server.shell(
            name="qdrant: collection differs from the model (left as it is)",
            commands=[f"echo 'ERROR: qdrant: {problem}' >&2; exit 1"],
        )
    for c in create:
        server.shell(
            name=f"qdrant: create collection {c.name} ({c.size}, {c.distance})",
            commands=[model.create_command(url, c)],
        )


@deploy("qdrant: backup")
def backup_timer(ctx: DeployContext, cfg: Config, changed: list[OperationMeta]) -> None:
    """Snapshots on qdrant.backup.schedule (citadel-qdrant-backup), the first one right away."""
    if not cfg.backup.enabled:
        return
    backup.directory("qdrant", cfg.backup.target, model.USER)
    # The backup's files are qdrant's "none" files: systemd re-reads its units when one changed.
    backup.timer(model.BACKUP, changes(ctx.files("qdrant"), changed).none)
    backup.first_backup("qdrant", model.BACKUP, cfg.backup)


def apply(ctx: DeployContext, cfg: Config) -> None:
    binary = install(ctx, cfg)
    changed = configure(ctx, cfg)
    activate(ctx, cfg, binary, changed)
    backup_timer(ctx, cfg, changed)
