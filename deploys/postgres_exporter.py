"""prometheus-postgres-exporter: Debian's package, a pg_monitor login from secrets, listening on
the host's address. The login role is (re)applied only when its file changes or it drifts."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import server

from citadel.components import postgres
from citadel.components.postgres_exporter import ROLE_SQL, Config
from deploys._context import DeployContext
from deploys._files import changes
from deploys._service import apt_service, restart_on_change
from deploys.facts.postgres import PostgresState
from deploys.postgres import psql

SERVICE = "prometheus-postgres-exporter"


def _activate(ctx: DeployContext, cfg: Config, changed: list[OperationMeta]) -> None:
    """The login role (when its file changed or it drifted), then the exporter, restarted only
    when its environment file or its sandbox drop-in changed."""
    pg = ctx.host.postgres
    assert pg is not None
    grouped = changes(ctx.files("postgres_exporter"), changed)
    (role_file,) = grouped.none
    state = host.get_fact(PostgresState, port=pg.port, database=pg.database, roles=[cfg.role])
    verifier = postgres.scram_sha256(ctx.secret("postgres_exporter_password"), cfg.role)
    r = state["roles"].get(cfg.role)
    drift = r is None or r["password_md5"] != postgres.verifier_digest(verifier)
    server.shell(
        name=f"postgres_exporter: login role {cfg.role} (pg_monitor)",
        commands=[f"{psql(pg, 'postgres')} -f - < {ROLE_SQL}"],
        _if=[] if drift else [role_file.did_change],
    )
    restart_on_change(SERVICE, [*grouped.restart, *grouped.unit])


install, configure, activate, apply = apt_service(
    "postgres_exporter", Config, SERVICE, activate=_activate
)
