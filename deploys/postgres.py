"""PostgreSQL + pgvector: packages chosen from facts, conf.d + pg_hba from the model, roles with
SCRAM verifiers, citadel_db, grants, and versioned migrations applied only when pending.

Restart only when a restart-only parameter changed (conf.d/10-citadel-restart.conf: listen,
port, shared_buffers, max_connections, archive_mode); reload for pg_hba and the other parameters;
nothing else restarts it. Secrets never reach a command line: roles.sql holds SCRAM verifiers
(computed on the controller) and psql reads it on stdin.

Backups (postgres.backup): WAL archived by archive_command into the target's wal/, base
backups by citadel-pg-backup (the first one right after the first converge), restore by
/usr/local/sbin/citadel-pg-restore (docs/postgres.md, "Backups and point-in-time restore").
"""

from __future__ import annotations

import io
import shlex

from pyinfra import host
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

from citadel import migrations
from citadel.components import postgres as model
from citadel.components.postgres import Config, Install
from citadel.render import component_files
from deploys import _backup as backup
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._files import put_files
from deploys.facts.postgres import PostgresState

PGDG_KEYRING = "/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc"
PGDG_SOURCES = "/etc/apt/sources.list.d/pgdg.sources"
MIGRATIONS_DIR = "/var/lib/citadel/postgres/migrations"


def psql(cfg: Config, database: str) -> str:
    """psql as the postgres superuser over the local socket (peer auth); no password involved."""
    return (
        "runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 "
        f"-p {cfg.port} -d {shlex.quote(database)}"
    )


@deploy("postgres: install")
def install(ctx: DeployContext, cfg: Config) -> Install:
    distro = host.get_fact(LinuxDistribution)
    inst = model.choose_install(cfg, distro.get("release_meta") or {})
    if inst.source == "pgdg":
        files.directory(name="PGDG keyring directory", path=PGDG_KEYRING.rsplit("/", 1)[0])
        key = files.download(
            name="PGDG signing key", src=cfg.pgdg_key_url, dest=PGDG_KEYRING, mode="0644"
        )
        source = files.put(
            name="PGDG apt source (signed-by its key only)",
            src=io.StringIO(model.pgdg_sources(cfg, inst.codename, PGDG_KEYRING)),
            dest=PGDG_SOURCES,
            mode="0644",
        )
        apt.update(name="apt update (PGDG added)", _if=any_changed(key, source))
    apt.packages(
        name=f"Install PostgreSQL {inst.version} + pgvector ({inst.source})",
        packages=inst.packages,
        no_recommends=True,
    )
    return inst


@deploy("postgres: configure")
def configure(ctx: DeployContext, cfg: Config) -> dict[str, OperationMeta]:
    rendered = component_files("postgres", ctx.view, cfg)
    ops = put_files(rendered)
    if cfg.backup.enabled:
        # The archive must exist before archive_mode goes on (the restart in activate).
        for path in (cfg.backup.target, model.base_backups(cfg), model.wal_archive(cfg)):
            backup.directory("postgres", path, "postgres")
    return {f.spec.dest: op for f, op in zip(rendered, ops, strict=True)}


@deploy("postgres: activate")
def activate(ctx: DeployContext, cfg: Config, changed: dict[str, OperationMeta]) -> None:
    service = model.service_name(cfg)
    d = model.conf_dir(cfg)
    restart_conf = changed[f"{d}/conf.d/10-citadel-restart.conf"]  # archive_mode too
    sandbox = changed[model.sandbox_dropin_path(cfg)]
    reload_conf = changed[f"{d}/conf.d/20-citadel.conf"]
    hba = changed[f"{d}/pg_hba.conf"]
    systemd.service(
        name=f"Restart {service} (listen/memory/connections/archive_mode or sandbox changed)",
        service=service,
        restarted=True,
        _if=any_changed(restart_conf, sandbox),
    )
    systemd.service(
        name=f"Reload {service} (pg_hba or parameters changed)",
        service=service,
        reloaded=True,
        _if=any_changed(reload_conf, hba),
    )
    systemd.service(name="Enable postgresql", service="postgresql", enabled=True)
    systemd.service(name=f"Run {service}", service=service, running=True, enabled=True)
    if cfg.backup.enabled:
        units = [changed[model.BACKUP_SERVICE_FILE], changed[model.BACKUP_TIMER_FILE]]
        backup.timer(model.BACKUP, units)
    # PostgreSQL keeps the previous rules when pg_hba.conf has an error: make that loud.
    check = (
        psql(cfg, "postgres")
        + " -At -c "
        + shlex.quote(
            "SELECT line_number || ': ' || error FROM pg_hba_file_rules WHERE error IS NOT NULL"
        )
    )
    server.shell(
        name="Check pg_hba.conf was loaded without errors",
        commands=[
            f'errors=$({check}); [ -z "$errors" ] || '
            '{ echo "pg_hba.conf rejected (previous rules still active): $errors" >&2; exit 1; }'
        ],
        _if=any_changed(hba),
    )


@deploy("postgres: database")
def database(ctx: DeployContext, cfg: Config, changed: dict[str, OperationMeta]) -> None:
    """Roles, citadel_db, grants, pgvector and migrations; each step only when needed."""
    roles = list(cfg.role_secrets())
    apps = [d.name for d in cfg.databases]
    state = host.get_fact(
        PostgresState, port=cfg.port, database=cfg.database, roles=roles, databases=apps
    )
    verifiers = model.role_verifiers(ctx.view, cfg)
    roles_file = changed[f"{model.CONFIG_DIR}/roles.sql"]
    access_file = changed[f"{model.CONFIG_DIR}/access.sql"]

    drift = any(
        (r := state["roles"].get(role)) is None
        or not r["login"]
        or r["password_md5"] != model.verifier_digest(verifiers[role])
        for role in roles
    )
    server.shell(
        name="postgres: login roles and passwords (roles.sql)",
        commands=[f"{psql(cfg, 'postgres')} -f - < {model.CONFIG_DIR}/roles.sql"],
        _if=[] if drift else [roles_file.did_change],
    )

    db = shlex.quote(cfg.database)
    new_db = not state["database"]
    if new_db:
        exists = (
            psql(cfg, "postgres")
            + " -At -c "
            + shlex.quote(
                f"SELECT 1 FROM pg_database WHERE datname = {model.sql_literal(cfg.database)}"
            )
        )
        server.shell(
            name=f"postgres: create database {cfg.database}",
            commands=[
                f"{exists} | grep -q 1 || runuser -u postgres -- createdb -p {cfg.port} "
                f"-O {shlex.quote(cfg.owner_role)} {db}"
            ],
        )
    server.shell(
        name=f"postgres: schemas and grants of {cfg.database} (access.sql)",
        commands=[f"{psql(cfg, cfg.database)} -f - < {model.CONFIG_DIR}/access.sql"],
        _if=[] if new_db else [access_file.did_change],
    )
    if apps:
        missing = sorted(set(apps) - set(state["databases"]))
        server.shell(
            name=f"postgres: application databases {', '.join(apps)} (databases.sql)",
            commands=[f"{psql(cfg, 'postgres')} -f - < {model.DATABASES_SQL}"],
            _if=[] if missing else [changed[model.DATABASES_SQL].did_change],
        )
    apply_migrations(ctx, cfg, state)
    installed, available = state.get("extension"), state.get("available")
    if installed and available and installed != available:
        server.shell(
            name=f"postgres: update pgvector {installed} -> {available}",
            commands=[f"{psql(cfg, cfg.database)} -c 'ALTER EXTENSION vector UPDATE'"],
        )


def apply_migrations(ctx: DeployContext, cfg: Config, state: dict) -> None:
    available = migrations.for_host(ctx.view, cfg)
    try:
        pending = migrations.plan(available, state["migrations"])
    except migrations.MigrationError as exc:
        message = f"ERROR: postgres migrations of {cfg.database}: {exc}"
        server.shell(
            name="postgres: migrations (history does not match the files)",
            commands=[f"echo {shlex.quote(message)} >&2; exit 1"],
        )
        return
    if not pending:
        return
    files.directory(name="postgres: migration scripts", path=MIGRATIONS_DIR, mode="0700")
    if not state["migrations_table"]:
        server.shell(
            name=f"postgres: migration history table {migrations.TABLE}",
            commands=[
                f"{psql(cfg, cfg.database)} -f - <<'CITADEL_SQL'\n"
                f"{migrations.bootstrap_sql()}CITADEL_SQL"
            ],
        )
    for m in pending:
        path = f"{MIGRATIONS_DIR}/{m.label}.sql"
        files.put(
            name=f"postgres: stage migration {m.label}",
            src=io.StringIO(migrations.script(m)),
            dest=path,
            mode="0600",
        )
        server.shell(
            name=f"postgres: apply migration {m.label}",
            commands=[f"{psql(cfg, cfg.database)} -f - < {path}"],
        )


@deploy("postgres: backup")
def first_backup(ctx: DeployContext, cfg: Config) -> None:
    """The first base backup, once, when none has succeeded yet: point-in-time recovery (and
    the freshness metric) work from the first converge on, not from the first timer run."""
    if cfg.backup.enabled:
        backup.first_backup("postgres", model.BACKUP, cfg.backup)


def apply(ctx: DeployContext, cfg: Config) -> None:
    inst: Install = install(ctx, cfg)
    resolved = model.resolved(cfg, inst.version)
    changed = configure(ctx, resolved)
    activate(ctx, resolved, changed)
    database(ctx, resolved, changed)
    first_backup(ctx, resolved)
