"""Redis: Debian's package, redis.conf from the model (validated by redis-server itself before it
goes live), restarted only when the config changed; RDB snapshots on a timer (redis.backup: the
first one right after the first converge) and /usr/local/sbin/citadel-redis-restore.

The backup's files (scripts, settings, password file, units) are read by no running server: a
change to them restarts nothing (their FileSpec.on_change is "none")."""

from __future__ import annotations

from pyinfra.api.operation import OperationMeta

from citadel.components import redis as model
from citadel.components.redis import Config
from deploys import _backup as backup
from deploys._context import DeployContext
from deploys._files import changes
from deploys._service import apt_service, restart_on_change

SERVICE = model.SERVICE


def _activate(ctx: DeployContext, cfg: Config, changed: list[OperationMeta]) -> None:
    grouped = changes(ctx.files("redis"), changed)
    restart_on_change(SERVICE, grouped.restart)
    if cfg.backup.enabled:
        backup.directory("redis", cfg.backup.target, model.OS_USER)
        # The backup's files are its "none" files: systemd re-reads its units when one changed.
        backup.timer(model.BACKUP, grouped.none)
        backup.first_backup("redis", model.BACKUP, cfg.backup)


install, configure, activate, apply = apt_service(
    "redis", Config, SERVICE, [SERVICE, "redis-tools"], activate=_activate
)
