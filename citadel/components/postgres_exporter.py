"""prometheus-postgres-exporter with a least-privilege monitoring login (pg_monitor only)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from citadel.errors import CitadelError
from citadel.model.common import ComponentConfig, Port, PortNumber
from citadel.model.component import Component, Scrape
from citadel.model.files import FileSpec, sandbox_dropin

if TYPE_CHECKING:
    from citadel.render import HostView

ENV_FILE = "/etc/default/prometheus-postgres-exporter"
ROLE_SQL = "/etc/citadel/postgres/exporter-role.sql"


class Config(ComponentConfig):
    port: PortNumber = 9187
    role: str = Field(default="citadel_monitor", pattern=r"^[a-z_][a-z0-9_]{0,62}$")

    def ports(self) -> list[Port]:
        return [
            Port(
                service="postgres_exporter", number=self.port, clients=("monitoring",), field="port"
            )
        ]

    def secrets(self) -> list[str]:
        return ["postgres_exporter_password"]


def env_quote(value: str) -> str:
    """A value for a systemd EnvironmentFile, double-quoted with its escapes."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$")
    return f'"{escaped}"'


def files(view: HostView, cfg: Config) -> list[FileSpec]:
    from citadel.components import postgres

    pg = view.host.postgres
    if pg is None:
        raise CitadelError(f"{view.host.name}: postgres_exporter needs the postgres component")
    verifier = postgres.scram_sha256(view.secret("postgres_exporter_password"), cfg.role)
    return [
        FileSpec(
            dest=ROLE_SQL,
            template="postgres_exporter/exporter-role.sql.j2",
            mode="0600",
            secret=True,
            extra={"pg": pg, "verifier": verifier, "literal": postgres.sql_literal},
            on_change="none",  # psql applies it (the deploy); the exporter does not read it
        ),
        FileSpec(
            dest=ENV_FILE,
            template="postgres_exporter/prometheus-postgres-exporter.default.j2",
            mode="0600",
            secret=True,
            extra={"pg": pg, "env_quote": env_quote},
        ),
        sandbox_dropin("prometheus-postgres-exporter", "postgres_exporter/sandbox.conf.j2"),
    ]


COMPONENT = Component(
    name="postgres_exporter",
    config=Config,
    role="postgres",
    files=files,
    scrape=lambda cfg, host: Scrape(f"{host.address}:{cfg.port}"),
)
