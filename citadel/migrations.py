"""Versioned, checksummed schema migrations for PostgreSQL (pure logic; no pyinfra, no psql).

Migrations are `templates/postgres/migrations/NNNN_name.sql.j2`, rendered with the host's
postgres config (role names, embedding dimension). Each applied migration is recorded in
`citadel_meta.schema_migrations` with the sha256 of its rendered SQL. Planning compares the files
with that table:

- applied and unchanged: nothing to do (a re-run applies nothing);
- not applied: pending, applied in version order, each in one transaction with its record;
- applied but its SQL changed, applied but no longer present, or pending below the newest
  applied version: a `MigrationError` (never a silent re-apply: write a new migration instead).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from citadel.errors import CitadelError

if TYPE_CHECKING:
    from citadel.components.postgres import Config as PostgresConfig
    from citadel.render import HostView

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "templates" / "postgres" / "migrations"
TEMPLATE_PREFIX = "postgres/migrations/"
META_SCHEMA = "citadel_meta"
TABLE = f"{META_SCHEMA}.schema_migrations"
FILE_NAME = re.compile(r"^(?P<version>[0-9]{4})_(?P<name>[a-z0-9_]+)\.sql(?:\.j2)?$")


class MigrationError(CitadelError):
    """The database's migration history does not match the migration files."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass(frozen=True)
class Applied:
    version: int
    name: str
    checksum: str


def discover(directory: Path = MIGRATIONS_DIR) -> list[tuple[int, str, str]]:
    """(version, name, file name) of every migration file, in version order.

    Files not named NNNN_name.sql[.j2] and duplicate versions are errors.
    """
    found: dict[int, tuple[int, str, str]] = {}
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        m = FILE_NAME.match(path.name)
        if m is None:
            raise MigrationError(
                f"{path.name}: migration files are named NNNN_name.sql or NNNN_name.sql.j2"
            )
        version = int(m["version"])
        if version == 0:
            raise MigrationError(f"{path.name}: versions start at 0001")
        if version in found:
            raise MigrationError(f"{path.name}: version {version:04d} is also {found[version][2]}")
        found[version] = (version, m["name"], path.name)
    return [found[v] for v in sorted(found)]


def load(render: Callable[[str], str], directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration with its rendered SQL; `render` maps a file name to its SQL text."""
    return [Migration(v, name, render(fname)) for v, name, fname in discover(directory)]


def parse_applied(rows: Iterable[str]) -> dict[int, Applied]:
    """Rows `version|name|checksum` (psql -At output) -> {version: Applied}."""
    applied: dict[int, Applied] = {}
    for row in rows:
        row = row.strip()
        if not row:
            continue
        parts = row.split("|")
        if len(parts) != 3 or not parts[0].isdigit():
            raise MigrationError(f"unreadable row in {TABLE}: {row!r}")
        applied[int(parts[0])] = Applied(int(parts[0]), parts[1], parts[2])
    return applied


def plan(available: list[Migration], applied: dict[int, Applied]) -> list[Migration]:
    """The migrations to apply, in order; raises MigrationError where history and files differ."""
    by_version = {m.version: m for m in available}
    problems: list[str] = []
    for version, done in sorted(applied.items()):
        m = by_version.get(version)
        if m is None:
            problems.append(f"migration {version:04d}_{done.name} is applied but its file is gone")
        elif m.checksum != done.checksum:
            problems.append(
                f"migration {m.label} changed after it was applied (checksum {done.checksum[:12]} "
                f"in {TABLE}, {m.checksum[:12]} now); applied migrations are immutable: revert "
                "the change and add a new migration"
            )
    newest = max(applied, default=0)
    pending = [m for m in available if m.version not in applied]
    for m in pending:
        if m.version < newest:
            problems.append(
                f"migration {m.label} is pending but {newest:04d} is already applied "
                "(renumber it after the newest applied migration)"
            )
    if problems:
        raise MigrationError("; ".join(problems))
    return pending


def bootstrap_sql() -> str:
    """Create the history table (idempotent)."""
    return (
        f"CREATE SCHEMA IF NOT EXISTS {META_SCHEMA};\n"
        f"REVOKE ALL ON SCHEMA {META_SCHEMA} FROM PUBLIC;\n"
        f"CREATE TABLE IF NOT EXISTS {TABLE} (\n"
        "    version    integer PRIMARY KEY,\n"
        "    name       text NOT NULL,\n"
        "    checksum   text NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),\n"
        "    applied_at timestamptz NOT NULL DEFAULT now()\n"
        ");\n"
    )


def script(m: Migration) -> str:
    """A psql script applying one migration: in one transaction with its history row.

    Safe to run twice: it re-checks the history under a lock at execution time, does nothing when
    the same migration is recorded, and fails when a different checksum is recorded.
    """
    return (
        f"-- citadel migration {m.label} (sha256 {m.checksum})\n"
        "\\set ON_ERROR_STOP on\n"
        "BEGIN;\n"
        f"LOCK TABLE {TABLE} IN EXCLUSIVE MODE;\n"
        f"SELECT coalesce((SELECT checksum FROM {TABLE} WHERE version = {m.version}), '')"
        " AS recorded \\gset\n"
        f"SELECT :'recorded' NOT IN ('', '{m.checksum}') AS changed,"
        " :'recorded' <> '' AS done \\gset\n"
        "\\if :changed\n"
        f"DO $citadel$ BEGIN RAISE EXCEPTION 'migration {m.label} changed after it was applied';"
        " END $citadel$;\n"
        "\\endif\n"
        "\\if :done\n"
        "ROLLBACK;\n"
        "\\quit\n"
        "\\endif\n"
        f"{m.sql.rstrip()}\n"
        "RESET ROLE;\n"
        f"INSERT INTO {TABLE} (version, name, checksum) "
        f"VALUES ({m.version}, '{m.name}', '{m.checksum}');\n"
        "COMMIT;\n"
    )


def for_host(view: HostView, cfg: PostgresConfig) -> list[Migration]:
    """The host's migrations, rendered with its postgres config (what a converge applies)."""
    from citadel.render import render_template

    def render(file_name: str) -> str:
        return render_template(
            TEMPLATE_PREFIX + file_name,
            view=view,
            cluster=view.cluster,
            host=view.host,
            cfg=cfg,
        )

    return load(render)
