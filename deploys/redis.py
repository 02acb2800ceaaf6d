"""Redis: Debian's package, redis.conf from the model (validated by redis-server itself before it
goes live), restarted only when the config changed; its users (users.acl, checked the same way)
loaded live with ACL LOAD, so a rotated password restarts nothing; RDB snapshots on a timer
(redis.backup: the first one right after the first converge) and
/usr/local/sbin/citadel-redis-restore.

The backup's files (scripts, settings, password file, units) are read by no running server: a
change to them restarts nothing (their FileSpec.on_change is "none")."""

from __future__ import annotations

from pyinfra.api.operation import OperationMeta
from pyinfra.operations import server

from citadel.components import redis as model
from citadel.components.redis import Config
from deploys import _backup as backup
from deploys._context import DeployContext
from deploys._files import changes
from deploys._service import apt_service, restart_on_change

SERVICE = model.SERVICE


def acl_load_command(cfg: Config) -> str:
    """ACL LOAD of the users file through redis-cli on the host, the password from its root-only
    file as REDISCLI_AUTH (never an argument); all or nothing (Redis keeps its users on error)."""
    auth = f'REDISCLI_AUTH="$(cat {model.PASSWORD_FILE})"'
    return (
        f"out=$({auth} redis-cli -h 127.0.0.1 -p {cfg.port} ACL LOAD 2>&1); "
        '[ "$out" = OK ] || { echo "ACL LOAD refused: $out" >&2; exit 1; }'
    )


def _activate(ctx: DeployContext, cfg: Config, changed: list[OperationMeta]) -> None:
    grouped = changes(ctx.files("redis"), changed)
    restarted, started = restart_on_change(SERVICE, grouped.restart)
    # The users changed and the server was not (re)started with them: load them live.
    acl = grouped.reload
    server.shell(
        name=f"Load {model.ACLFILE} into {SERVICE} (ACL LOAD: users changed)",
        commands=[acl_load_command(cfg)],
        _if=lambda: (
            any(op.did_change() for op in acl)
            and not restarted.did_change()
            and not started.did_change()
        ),
    )
    if cfg.backup.enabled:
        backup.directory("redis", cfg.backup.target, model.OS_USER)
        # The backup's files are its "none" files: systemd re-reads its units when one changed.
        backup.timer(model.BACKUP, grouped.none)
        backup.first_backup("redis", model.BACKUP, cfg.backup)


install, configure, activate, apply = apt_service(
    "redis", Config, SERVICE, [SERVICE, "redis-tools"], activate=_activate
)
