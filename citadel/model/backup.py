"""Backups on a systemd timer: one shape for every component that keeps data (PostgreSQL, Redis,
Qdrant; docs/backups in docs/postgres.md and docs/qdrant.md).

Each component's `backup` section is a subclass of `BackupSettings` (enabled, target, schedule,
stale_after_hours, plus its own retention); its files come from `unit_files` (a oneshot service
in the shared sandbox, as the server's own user, never starting the server itself, and its timer,
checked with `systemd-analyze calendar`); its script writes `<target>/last-success` and the
freshness metric `citadel_backup_last_success_timestamp_seconds{kind=KIND}` into node_exporter's
textfile directory; Prometheus alerts `ALERT` when it is older than `stale_after_hours` or absent
(citadel.components.prometheus.backup_alerts).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, ClassVar

from pydantic import Field, StringConstraints, field_validator

from citadel.model.common import StrictModel
from citadel.model.files import FileSpec

if TYPE_CHECKING:
    from citadel.render import HostView

METRIC = "citadel_backup_last_success_timestamp_seconds"
# Written by each backup script after a successful backup (epoch seconds): the deploy runs the
# first backup itself when this file is absent under the target.
LAST_SUCCESS = "last-success"
SERVICE_TEMPLATE = "_shared/backup.service.j2"
TIMER_TEMPLATE = "_shared/backup.timer.j2"
UNIT_DIR = "/etc/systemd/system"
SYSTEM_TREES = ("/etc/", "/usr/", "/proc/", "/sys/", "/boot/", "/dev/", "/run/")

# An absolute directory on the component's host (a mounted backup volume in production).
Target = Annotated[str, StringConstraints(pattern=r"^(/[A-Za-z0-9._-]+)+$")]
# A systemd OnCalendar expression (checked with `systemd-analyze calendar` before it goes live).
Calendar = Annotated[str, StringConstraints(min_length=1, pattern=r"^[A-Za-z0-9*:.,/~ +_-]+$")]


class BackupSettings(StrictModel):
    """What every component's `backup` section has. A subclass sets the defaults, its own
    retention field, and the ClassVars: the data directories a target must stay out of, the
    metric's `kind`, the alert's name and what one backup is called."""

    DATA_DIRS: ClassVar[tuple[str, ...]] = ()
    KIND: ClassVar[str] = ""
    ALERT: ClassVar[str] = ""
    WHAT: ClassVar[str] = ""

    enabled: bool = True
    target: Target
    schedule: Calendar
    # The freshness alert: no successful backup for this long.
    stale_after_hours: int = Field(default=36, ge=1, le=24 * 90)

    @field_validator("target")
    @classmethod
    def _not_a_system_dir(cls, value: str) -> str:
        parts = value.split("/")
        if ".." in parts or "." in parts:
            raise ValueError("must not contain '.' or '..' components")
        inside = tuple(d.rstrip("/") + "/" for d in cls.DATA_DIRS)
        if (value + "/").startswith(inside + SYSTEM_TREES) or value.count("/") < 2:
            raise ValueError(
                "must be a dedicated directory (at least two levels deep), outside the "
                "data directory and system trees, e.g. /var/backups/citadel/<component>"
            )
        return value.rstrip("/")


def textfile_directory(view: HostView) -> str:
    """Where node_exporter's textfile collector reads *.prom on this host ("" when it does not
    run here: the backup scripts then write no metric)."""
    ne = view.host.node_exporter
    if ne is None or ne.skip is not None:
        return ""
    return ne.textfile_directory


@dataclass(frozen=True)
class Unit:
    """A backup's systemd pair: `<name>.service` runs `script` (then `script --publish-metric`
    as root: node_exporter's directory is root's) as `user` in the shared sandbox; `<name>.timer`
    starts it on the schedule."""

    name: str
    script: str
    user: str
    server: str  # the server's unit: required running, never started by a backup
    description: str  # "Redis RDB snapshot and retention"
    setting: str  # "redis.backup.schedule"
    families: str = "AF_UNIX"
    # LoadCredential= (name, root-only file): the secret reaches the script as a file in
    # $CREDENTIALS_DIRECTORY, never in its command line, environment or log.
    credentials: tuple[tuple[str, str], ...] = ()

    @property
    def service_file(self) -> str:
        return f"{UNIT_DIR}/{self.name}.service"

    @property
    def timer_file(self) -> str:
        return f"{UNIT_DIR}/{self.name}.timer"


def unit_files(unit: Unit, settings: BackupSettings) -> list[FileSpec]:
    """The service and its timer; the timer's calendar checked before it goes live."""
    calendar = f"systemd-analyze calendar {shlex.quote(settings.schedule)} >/dev/null"
    extra = {"unit": unit, "backup": settings}
    return [
        FileSpec(dest=unit.service_file, template=SERVICE_TEMPLATE, extra=extra, on_change="none"),
        FileSpec(
            dest=unit.timer_file,
            template=TIMER_TEMPLATE,
            validate=calendar,
            extra=extra,
            on_change="none",
        ),
    ]
