"""PostgreSQL with pgvector: citadel_db, its schemas, least-privilege roles, migrations.

Pure model code: which packages (from the host's distribution facts), which files; its pg_hba
rules (citadel.model.pg_hba) and SCRAM verifiers (citadel.model.scram). The deploy
(deploys/postgres.py) reads facts and runs operations.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, model_validator

from citadel.errors import CitadelError
from citadel.model.backup import (
    LAST_SUCCESS,
    BackupSettings,
    Calendar,
    Target,
    Unit,
    textfile_directory,
    unit_files,
)
from citadel.model.common import ComponentConfig, Port, PortNumber, StrictModel
from citadel.model.component import Component
from citadel.model.files import SANDBOX_DROPIN, UNIT_DIR, FileSpec, sandbox_dropin
from citadel.model.pg_hba import HbaRule as HbaRule
from citadel.model.pg_hba import client_networks as client_networks
from citadel.model.pg_hba import hba_rules as hba_rules
from citadel.model.scram import SCRAM_ITERATIONS as SCRAM_ITERATIONS
from citadel.model.scram import scram_sha256 as scram_sha256
from citadel.model.scram import sql_literal as sql_literal
from citadel.model.scram import verifier_digest as verifier_digest

if TYPE_CHECKING:
    from citadel.render import HostView

DOCUMENT_SCHEMAS = ["ai_models", "embeddings", "users", "experiments", "monitoring"]
SQL_NAME = r"^[a-z_][a-z0-9_]{0,62}$"

# Distributions that ship pgvector for their own PostgreSQL: (os-release ID, VERSION_ID) -> major.
DISTRO_PGVECTOR: dict[tuple[str, str], int] = {
    ("debian", "13"): 17,
    ("ubuntu", "24.04"): 16,
}
# What PGDG installs when the version is "auto", and what previews assume when no facts exist.
PGDG_DEFAULT_VERSION = 17
PREVIEW_VERSION = 17

CONFIG_DIR = "/etc/citadel/postgres"
CHECKCONF = "/usr/local/lib/citadel/pg-checkconf"
DATABASES_SQL = f"{CONFIG_DIR}/databases.sql"  # the application databases (Config.databases)

# Backups (base backups + WAL archive): scripts, their settings, the systemd units.
ARCHIVE_WAL = "/usr/local/lib/citadel/pg-archive-wal"
BACKUP_SCRIPT = "/usr/local/sbin/citadel-pg-backup"
RESTORE_SCRIPT = "/usr/local/sbin/citadel-pg-restore"
BACKUP_ENV = f"{CONFIG_DIR}/backup.env"
BACKUP_UNIT = "citadel-pg-backup"
BACKUP = Unit(
    name=BACKUP_UNIT,
    script=BACKUP_SCRIPT,
    user="postgres",
    server="postgresql",  # replaced by the cluster's unit (backup_unit)
    description="PostgreSQL base backup (pg_basebackup) and retention",
    setting="postgres.backup.schedule",
)
BACKUP_SERVICE_FILE = BACKUP.service_file
BACKUP_TIMER_FILE = BACKUP.timer_file
METRIC_FILE = "citadel_backup_postgres.prom"


class Tuning(StrictModel):
    shared_buffers: str = Field(default="1GB", pattern=r"^[0-9]+(kB|MB|GB)$")
    max_connections: int = Field(default=200, ge=10, le=10000)
    work_mem: str = Field(default="16MB", pattern=r"^[0-9]+(kB|MB|GB)$")
    effective_cache_size: str = Field(default="4GB", pattern=r"^[0-9]+(kB|MB|GB)$")


class Backup(BackupSettings):
    """Point-in-time recovery: WAL archived continuously + base backups on a timer, kept under
    `target` (base/<UTC stamp>/, wal/); the newest `keep_base_backups` and the WAL they need."""

    DATA_DIRS: ClassVar[tuple[str, ...]] = ("/var/lib/postgresql",)
    KIND: ClassVar[str] = "postgres_base"
    ALERT: ClassVar[str] = "PostgresBackupStale"
    WHAT: ClassVar[str] = "PostgreSQL base backup"

    target: Target = "/var/backups/citadel/postgres"
    schedule: Calendar = "*-*-* 02:30:00"
    keep_base_backups: int = Field(default=7, ge=1, le=365)
    # A WAL segment is archived at the latest this long after a write (bounds data loss).
    archive_timeout: str = Field(default="5min", pattern=r"^[0-9]+(s|min|h)$")


class AppDatabase(StrictModel):
    """A database of its own for one application (OpenWebUI's users and chats): a login role
    named like it owns it and nothing else (no access to the document's database), reachable
    only from `clients` (hosts or roles), with the password in the secret
    `postgres_<name>_password`. Covered by the cluster's backups like every database."""

    name: str = Field(pattern=SQL_NAME)
    clients: list[str] = Field(min_length=1)

    @property
    def role(self) -> str:
        return self.name

    @property
    def password_secret(self) -> str:
        return f"postgres_{self.name}_password"


class Config(ComponentConfig):
    # "auto": the distribution's version where it ships pgvector, else PGDG's default.
    version: Literal["auto", 15, 16, 17] = "auto"
    source: Literal["auto", "distribution", "pgdg"] = "auto"
    # PGDG: the apt repository (or a mirror of it) and its signing key.
    pgdg_url: str = "https://apt.postgresql.org/pub/repos/apt"
    pgdg_key_url: str = "https://www.postgresql.org/media/keys/ACCC4CF8.asc"
    port: PortNumber = 5432
    database: str = Field(default="citadel_db", pattern=SQL_NAME)
    schemas: list[str] = Field(default_factory=lambda: list(DOCUMENT_SCHEMAS))
    embedding_dimension: int = Field(default=4096, ge=1, le=16000)
    owner_role: str = Field(default="citadel_owner", pattern=SQL_NAME)
    app_role: str = Field(default="citadel_app", pattern=SQL_NAME)
    readonly_role: str = Field(default="citadel_readonly", pattern=SQL_NAME)
    # Who reaches the document's database (as the app or read-only role).
    allowed_clients: list[str] = Field(default_factory=lambda: ["gateway"])
    # Databases of their own for applications (OpenWebUI's state), each reachable by its owner
    # role from its own clients only.
    databases: list[AppDatabase] = Field(default_factory=list)
    tuning: Tuning = Tuning()
    backup: Backup = Backup()

    @model_validator(mode="after")
    def _own_names(self) -> Config:
        taken = {self.database, self.owner_role, self.app_role, self.readonly_role, "postgres"}
        seen: set[str] = set()
        for db in self.databases:
            if db.name in taken or db.name in seen or db.name.startswith("pg_"):
                raise ValueError(
                    f"databases: {db.name!r} clashes with another database or role "
                    "(or a reserved pg_ name)"
                )
            seen.add(db.name)
        return self

    def ports(self) -> list[Port]:
        apps = [c for d in self.databases for c in d.clients]
        clients = dict.fromkeys([*self.allowed_clients, *apps])
        return [
            Port(
                service="postgres",
                number=self.port,
                clients=tuple(clients),
                field="allowed_clients",
            )
        ]

    def secrets(self) -> list[str]:
        return [
            "postgres_owner_password",
            "postgres_app_password",
            "postgres_readonly_password",
            *(d.password_secret for d in self.databases),
        ]

    def references(self) -> dict[str, list[str]]:
        refs = {"allowed_clients": self.allowed_clients}
        for i, db in enumerate(self.databases):
            refs[f"databases[{i}].clients"] = db.clients
        return refs

    def role_secrets(self) -> dict[str, str]:
        """Login role -> the secret holding its password."""
        return {
            self.owner_role: "postgres_owner_password",
            self.app_role: "postgres_app_password",
            self.readonly_role: "postgres_readonly_password",
            **{d.role: d.password_secret for d in self.databases},
        }


# -- packages from facts ----------------------------------------------------------------------


@dataclass(frozen=True)
class Install:
    source: Literal["distribution", "pgdg"]
    version: int
    packages: list[str]
    codename: str

    @property
    def bindir(self) -> str:
        return f"/usr/lib/postgresql/{self.version}/bin"


def choose_install(cfg: Config, release_meta: dict[str, str]) -> Install:
    """Packages from the distribution where it ships pgvector, else PGDG; config overrides.

    `release_meta` is pyinfra's LinuxDistribution fact's `release_meta` (os-release keys).
    """
    distro = str(release_meta.get("ID", "")).lower()
    version_id = str(release_meta.get("VERSION_ID", ""))
    codename = str(release_meta.get("VERSION_CODENAME", ""))
    shipped = DISTRO_PGVECTOR.get((distro, version_id))
    label = f"{distro or 'unknown'} {version_id or '?'}"
    source = cfg.source
    if source == "auto":
        wanted = cfg.version
        source = "distribution" if shipped is not None and wanted in ("auto", shipped) else "pgdg"
    if source == "distribution":
        if shipped is None:
            raise CitadelError(
                f"postgres: source=distribution, but {label} ships no pgvector package "
                "(set postgres.source to pgdg or auto)"
            )
        if cfg.version not in ("auto", shipped):
            raise CitadelError(
                f"postgres: {label} ships PostgreSQL {shipped}, not {cfg.version} "
                "(set postgres.source to pgdg for another version)"
            )
        version = shipped
    else:
        if not codename:
            raise CitadelError(f"postgres: PGDG needs the release codename; {label} has none")
        version = PGDG_DEFAULT_VERSION if cfg.version == "auto" else cfg.version
    return Install(
        source=source,
        version=version,
        packages=[f"postgresql-{version}", f"postgresql-{version}-pgvector"],
        codename=codename,
    )


def pgdg_sources(cfg: Config, codename: str, keyring: str) -> str:
    """The deb822 source for PGDG, signed by its keyring only."""
    return (
        "# PostgreSQL Global Development Group (managed by citadel)\n"
        "Types: deb\n"
        f"URIs: {cfg.pgdg_url}\n"
        f"Suites: {codename}-pgdg\n"
        "Components: main\n"
        f"Signed-By: {keyring}\n"
    )


def resolved(cfg: Config, version: int) -> Config:
    return cfg.model_copy(update={"version": version})


def major_version(cfg: Config) -> int:
    """The version the files are for: resolved by the deploy; previews assume PREVIEW_VERSION."""
    return cfg.version if isinstance(cfg.version, int) else PREVIEW_VERSION


def conf_dir(cfg: Config) -> str:
    return f"/etc/postgresql/{major_version(cfg)}/main"


def service_name(cfg: Config) -> str:
    return f"postgresql@{major_version(cfg)}-main"


def sandbox_dropin_path(cfg: Config) -> str:
    return f"{UNIT_DIR}/{service_name(cfg)}.service.d/{SANDBOX_DROPIN}"


def data_dir(cfg: Config) -> str:
    return f"/var/lib/postgresql/{major_version(cfg)}/main"


# -- backups ----------------------------------------------------------------------------------


def wal_archive(cfg: Config) -> str:
    return f"{cfg.backup.target}/wal"


def base_backups(cfg: Config) -> str:
    return f"{cfg.backup.target}/base"


def archive_command(cfg: Config, script: str = ARCHIVE_WAL) -> str:
    """PostgreSQL's archive_command: copy the segment into the archive atomically (temp file,
    fsync, rename), never overwrite a different file (an identical one is success, so a retry
    after a crash between the copy and PostgreSQL's bookkeeping does not wedge archiving)."""
    return f'{script} "%p" "{wal_archive(cfg)}/%f"'


def restore_command(cfg: Config) -> str:
    """recovery's restore_command (written by citadel-pg-restore into postgresql.auto.conf)."""
    return f'cp "{wal_archive(cfg)}/%f" "%p"'


# -- SCRAM verifiers (citadel.model.scram) ---------------------------------------------------


def role_verifiers(view: HostView, cfg: Config) -> dict[str, str]:
    """Login role -> SCRAM verifier (masked previews get the verifier of the mask)."""
    return {role: scram_sha256(view.secret(s), role) for role, s in cfg.role_secrets().items()}


# -- files ------------------------------------------------------------------------------------


def files(view: HostView, cfg: Config) -> list[FileSpec]:
    version = major_version(cfg)
    bindir = f"/usr/lib/postgresql/{version}/bin"
    check = f"{CHECKCONF} {bindir} {{path}}"
    d = conf_dir(cfg)
    return [
        FileSpec(dest=CHECKCONF, template="postgres/pg-checkconf.sh.j2", mode="0755"),
        # Parameters that only take effect on a restart (listen, memory, connections).
        FileSpec(
            dest=f"{d}/conf.d/10-citadel-restart.conf",
            template="postgres/10-citadel-restart.conf.j2",
            validate=check,
        ),
        # Parameters a reload applies.
        FileSpec(
            dest=f"{d}/conf.d/20-citadel.conf",
            template="postgres/20-citadel.conf.j2",
            validate=check,
            extra={"archive_command": archive_command(cfg)},
        ),
        FileSpec(
            dest=f"{d}/pg_hba.conf",
            template="postgres/pg_hba.conf.j2",
            mode="0640",
            user="postgres",
            group="postgres",
            extra={"rules": hba_rules(view.cluster, view.host, cfg)},
        ),
        FileSpec(
            dest=f"{CONFIG_DIR}/roles.sql",
            template="postgres/roles.sql.j2",
            mode="0600",
            secret=True,
            extra={"verifiers": role_verifiers(view, cfg), "literal": sql_literal},
        ),
        FileSpec(
            dest=f"{CONFIG_DIR}/access.sql",
            template="postgres/access.sql.j2",
            mode="0600",
        ),
        *(
            [
                FileSpec(
                    dest=DATABASES_SQL,
                    template="postgres/databases.sql.j2",
                    mode="0600",
                    extra={"literal": sql_literal},
                )
            ]
            if cfg.databases
            else []
        ),
        *backup_files(view, cfg),
        sandbox_dropin(
            service_name(cfg), "postgres/sandbox.conf.j2", writable=sandbox_writable(cfg)
        ),
    ]


def sandbox_writable(cfg: Config) -> list[str]:
    """What the server writes (the sandbox drop-in's ReadWritePaths=): its data and log, its
    sockets and lock files, and the WAL archive archive_command fills (the deploy makes it
    before the restart that turns archiving on)."""
    paths = ["/var/lib/postgresql", "/var/log/postgresql", "/run/postgresql"]
    return paths + ([wal_archive(cfg)] if cfg.backup.enabled else [])


def backup_files(view: HostView, cfg: Config) -> list[FileSpec]:
    """The WAL archiver, the base backup + retention script, the restore script, and the
    timer that runs the backup (backup_unit_files)."""
    if not cfg.backup.enabled:
        return []
    bash = "bash -n {path}"
    common = {"env_file": BACKUP_ENV}
    return [
        FileSpec(
            dest=ARCHIVE_WAL, template="postgres/pg-archive-wal.sh.j2", mode="0755", validate=bash
        ),
        FileSpec(
            dest=BACKUP_ENV,
            template="postgres/backup.env.j2",
            extra={
                "bindir": f"/usr/lib/postgresql/{major_version(cfg)}/bin",
                "data_dir": data_dir(cfg),
                "service": service_name(cfg),
                "textfile_dir": textfile_directory(view),
            },
        ),
        FileSpec(
            dest=BACKUP_SCRIPT,
            template="postgres/citadel-pg-backup.sh.j2",
            mode="0755",
            validate=bash,
            extra={**common, "last_success": LAST_SUCCESS, "metric_file": METRIC_FILE},
        ),
        FileSpec(
            dest=RESTORE_SCRIPT,
            template="postgres/citadel-pg-restore.sh.j2",
            mode="0755",
            validate=bash,
            extra={**common, "restore_command": restore_command(cfg)},
        ),
        *backup_unit_files(cfg),
    ]


COMPONENT = Component(name="postgres", config=Config, role="postgres", files=files)


def backup_unit(cfg: Config) -> Unit:
    return replace(BACKUP, server=service_name(cfg))


def backup_unit_files(cfg: Config) -> list[FileSpec]:
    """The schedule (postgres.backup.schedule): citadel-pg-backup.service (sandboxed, as the
    postgres user, only while the cluster runs) and its timer (citadel.model.backup)."""
    return unit_files(backup_unit(cfg), cfg.backup)
