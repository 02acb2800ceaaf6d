"""Redis from the distribution: ACL users with hashed passwords in an ACL file (loaded live with
ACL LOAD: a rotated password never restarts the server), bound to the host's address; RDB
snapshots on a timer (redis.backup) and a restore command."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from citadel.model.backup import (
    LAST_SUCCESS,
    BackupSettings,
    Calendar,
    Target,
    Unit,
    textfile_directory,
    unit_files,
)
from citadel.model.common import ComponentConfig, Port, PortNumber
from citadel.model.component import Component
from citadel.model.files import FileSpec

if TYPE_CHECKING:
    from citadel.render import HostView

CONF = "/etc/redis/redis.conf"
# The users (redis.conf's aclfile): its change is applied with ACL LOAD, all or nothing, after
# redis-server itself checked the candidate (CHECKCONF --acl).
ACLFILE = "/etc/redis/users.acl"
CHECKCONF = "/usr/local/lib/citadel/redis-checkconf"
SERVICE = "redis-server"
OS_USER = "redis"
# Where redis-server keeps its data (redis.conf's dir, dbfilename, appenddirname, appendfilename).
DATA_DIR = "/var/lib/redis"
DBFILENAME = "dump.rdb"
AOF_DIR = "appendonlydir"
AOF_FILENAME = "appendonly.aof"

# Snapshots (redis.backup): the scripts, their settings, the password file, the systemd units.
CONFIG_DIR = "/etc/citadel/redis"
BACKUP_ENV = f"{CONFIG_DIR}/backup.env"
# redis_password alone, root 0600: the backup unit's credential (LoadCredential=), read by the
# restore and by the deploy's ACL LOAD as root; redis-cli gets it as REDISCLI_AUTH, never on a
# command line.
PASSWORD_FILE = f"{CONFIG_DIR}/password"
BACKUP_SCRIPT = "/usr/local/sbin/citadel-redis-backup"
RESTORE_SCRIPT = "/usr/local/sbin/citadel-redis-restore"
METRIC_FILE = "citadel_backup_redis.prom"
BACKUP = Unit(
    name="citadel-redis-backup",
    script=BACKUP_SCRIPT,
    user=OS_USER,
    server=SERVICE,
    description="Redis RDB snapshot (redis-cli --rdb), its check and retention",
    setting="redis.backup.schedule",
    families="AF_UNIX AF_INET",
    credentials=(("redis_password", PASSWORD_FILE),),
)
EXPORTER_USER = "citadel_exporter"
# What the exporter may run: connection handling and read-only server introspection, no keys.
EXPORTER_ACL = (
    "resetkeys resetchannels -@all +@connection +info +config|get +slowlog|get +slowlog|len "
    "+latency|latest +latency|histogram +memory|stats +client|list +cluster|info +dbsize +select"
)


class Backup(BackupSettings):
    """RDB snapshots of the running server under `target` (<UTC stamp>.rdb), each checked with
    redis-check-rdb before it counts; the newest `keep_snapshots` kept."""

    DATA_DIRS: ClassVar[tuple[str, ...]] = (DATA_DIR,)
    KIND: ClassVar[str] = "redis_rdb"
    ALERT: ClassVar[str] = "RedisBackupStale"
    WHAT: ClassVar[str] = "Redis snapshot"

    target: Target = "/var/backups/citadel/redis"
    schedule: Calendar = "*-*-* *:15:00"  # hourly
    keep_snapshots: int = Field(default=48, ge=1, le=10000)
    stale_after_hours: int = Field(default=6, ge=1, le=24 * 90)


class Config(ComponentConfig):
    port: PortNumber = 6379
    maxmemory: str = Field(default="2gb", pattern=r"^[0-9]+(kb|mb|gb)$")
    maxmemory_policy: Literal["allkeys-lru", "allkeys-lfu", "volatile-lru", "noeviction"] = (
        "allkeys-lru"
    )
    persistence: Literal["rdb", "aof", "none"] = "rdb"
    allowed_clients: list[str] = Field(default_factory=lambda: ["gateway"])
    backup: Backup = Backup()

    def ports(self) -> list[Port]:
        return [
            Port(
                service="redis",
                number=self.port,
                clients=tuple(self.allowed_clients),
                field="allowed_clients",
            )
        ]

    def secrets(self) -> list[str]:
        return ["redis_password"]

    def references(self) -> dict[str, list[str]]:
        return {"allowed_clients": self.allowed_clients}


def acl_hash(password: str) -> str:
    """Redis ACL `#<sha256>` form: the config never holds a plaintext password."""
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


def acl_users(view: HostView) -> list[tuple[str, list[str], str]]:
    """(user, sha256 of each password it accepts, rules): `default` is the document's
    password-only AUTH. A user accepts two passwords while one is rotated (citadel rotate:
    accept and switch), the new one only once it is retired."""

    def digests(secret: str) -> list[str]:
        return [acl_hash(v) for v in view.accepted(secret)]

    users = [("default", digests("redis_password"), "~* &* +@all")]
    exporter = view.host.redis_exporter
    if exporter is not None and exporter.skip is None:
        users.append((EXPORTER_USER, digests("redis_exporter_password"), EXPORTER_ACL))
    return users


def files(view: HostView, cfg: Config) -> list[FileSpec]:
    return [
        FileSpec(dest=CHECKCONF, template="redis/redis-checkconf.sh.j2", mode="0755"),
        # Before redis.conf, which names it: redis.conf's check (and a start) reads it.
        FileSpec(
            dest=ACLFILE,
            template="redis/users.acl.j2",
            mode="0640",
            group="redis",
            secret=True,  # password hashes only, but kept out of diffs all the same
            validate=f"{CHECKCONF} --acl {{path}}",
            on_change="reload",  # ACL LOAD (deploys/redis.py)
            extra={"users": acl_users(view)},
        ),
        FileSpec(
            dest=CONF,
            template="redis/redis.conf.j2",
            mode="0640",
            group="redis",
            validate=f"{CHECKCONF} {{path}}",
            extra={
                "aclfile": ACLFILE,
                "data_dir": DATA_DIR,
                "dbfilename": DBFILENAME,
                "aof_dir": AOF_DIR,
                "aof_filename": AOF_FILENAME,
            },
        ),
        # The deploy's ACL LOAD authenticates with it; the backup's credential.
        FileSpec(
            dest=PASSWORD_FILE,
            template="redis/password.j2",
            mode="0600",
            secret=True,
            on_change="none",
        ),
        *backup_files(view, cfg),
    ]


def backup_files(view: HostView, cfg: Config) -> list[FileSpec]:
    """The snapshot script, the restore script, their settings and the timer (the password file
    is always written). None of them is read by redis-server: a change restarts nothing
    (on_change "none")."""
    if not cfg.backup.enabled:
        return []
    bash = "bash -n {path}"
    common = {"env_file": BACKUP_ENV}
    return [
        FileSpec(
            dest=BACKUP_ENV,
            template="redis/backup.env.j2",
            on_change="none",
            extra={
                "service": SERVICE,
                "conf": CONF,
                "os_user": OS_USER,
                "data_dir": DATA_DIR,
                "dbfilename": DBFILENAME,
                "aof_dir": AOF_DIR,
                "aof_filename": AOF_FILENAME,
                "password_file": PASSWORD_FILE,
                "textfile_dir": textfile_directory(view),
            },
        ),
        FileSpec(
            dest=BACKUP_SCRIPT,
            template="redis/citadel-redis-backup.sh.j2",
            mode="0755",
            validate=bash,
            on_change="none",
            extra={**common, "last_success": LAST_SUCCESS, "metric_file": METRIC_FILE},
        ),
        FileSpec(
            dest=RESTORE_SCRIPT,
            template="redis/citadel-redis-restore.sh.j2",
            mode="0755",
            validate=bash,
            on_change="none",
            extra=common,
        ),
        *unit_files(BACKUP, cfg.backup),
    ]


COMPONENT = Component(name="redis", config=Config, role="redis", files=files)
