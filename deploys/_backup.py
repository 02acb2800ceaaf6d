"""The deploy side of a backup (citadel.model.backup): its directory, its timer running, and the
first backup once, so that the freshness metric and a restore work from the first converge on
instead of from the first timer run."""

from __future__ import annotations

from collections.abc import Sequence

from pyinfra import host
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import File
from pyinfra.operations import files, systemd
from pyinfra.operations.util import any_changed

from citadel.model.backup import LAST_SUCCESS, BackupSettings, Unit


def directory(component: str, path: str, owner: str) -> None:
    """A backup directory, the backup user's alone (it holds the data)."""
    files.directory(
        name=f"{component}: backup directory {path}",
        path=path,
        user=owner,
        group=owner,
        mode="0700",
    )


def timer(unit: Unit, units: Sequence[OperationMeta]) -> None:
    """systemd re-reads the service and timer when either changed; the timer runs, enabled."""
    systemd.daemon_reload(name=f"Reload systemd units ({unit.name})", _if=any_changed(*units))
    systemd.service(
        name=f"Run {unit.name}.timer ({unit.setting})",
        service=f"{unit.name}.timer",
        running=True,
        enabled=True,
    )


def first_backup(component: str, unit: Unit, settings: BackupSettings) -> None:
    """Start the service once when no backup has succeeded yet (no `<target>/last-success`)."""
    if host.get_fact(File, path=f"{settings.target}/{LAST_SUCCESS}"):
        return
    systemd.service(
        name=f"{component}: first {settings.WHAT} (none yet; the timer takes over)",
        service=f"{unit.name}.service",
        running=True,  # a oneshot: systemctl start waits until the backup finished
    )
