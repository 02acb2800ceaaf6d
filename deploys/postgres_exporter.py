"""prometheus-postgres-exporter: Debian's package, a pg_monitor login from secrets, listening on
the host's address. The login role is (re)applied only when its file changes or it drifts."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt, server, systemd
from pyinfra.operations.util import any_changed

from citadel.components import postgres
from citadel.components.postgres_exporter import ROLE_SQL, Config
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._files import put_files
from deploys.facts.postgres import PostgresState
from deploys.postgres import psql

SERVICE = "prometheus-postgres-exporter"


@deploy("postgres_exporter: install")
def install(ctx: DeployContext, cfg: Config) -> None:
    apt.packages(
        name=f"Install {SERVICE}",
        packages=[SERVICE],
        no_recommends=True,
    )


@deploy("postgres_exporter: configure")
def configure(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    return put_files(ctx.files("postgres_exporter"))


@deploy("postgres_exporter: activate")
def activate(ctx: DeployContext, cfg: Config, changed: list[OperationMeta]) -> None:
    pg = ctx.host.postgres
    assert pg is not None
    role_file, env_file = changed
    state = host.get_fact(PostgresState, port=pg.port, database=pg.database, roles=[cfg.role])
    verifier = postgres.scram_sha256(ctx.secret("postgres_exporter_password"), cfg.role)
    r = state["roles"].get(cfg.role)
    drift = r is None or r["password_md5"] != postgres.verifier_digest(verifier)
    server.shell(
        name=f"postgres_exporter: login role {cfg.role} (pg_monitor)",
        commands=[f"{psql(pg, 'postgres')} -f - < {ROLE_SQL}"],
        _if=[] if drift else [role_file.did_change],
    )
    systemd.service(
        name=f"Restart {SERVICE} (config changed)",
        service=SERVICE,
        restarted=True,
        _if=any_changed(env_file),
    )
    systemd.service(name=f"Run {SERVICE}", service=SERVICE, running=True, enabled=True)


def apply(ctx: DeployContext, cfg: Config) -> None:
    install(ctx, cfg)
    activate(ctx, cfg, configure(ctx, cfg))
