"""PostgreSQL state as a pyinfra fact: is the server up, which roles (with a digest of their
stored password), does the database exist, the pgvector version, the applied migrations.

Read-only. The command holds no secret; the output holds md5 digests of SCRAM verifiers only.
"""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra.api import FactBase

from citadel.migrations import TABLE, Applied, parse_applied


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class PostgresState(FactBase[dict[str, Any]]):
    """
    Returns the state citadel's postgres deploy plans from:

    .. code:: python

        {
            "state": "up",            # "absent" (no psql / no postgres user), "down", "up"
            "roles": {"citadel_app": {"login": True, "password_md5": "…"}},
            "database": True,
            "databases": ["openwebui"],  # which of the asked application databases exist
            "extension": "0.8.0",     # pgvector in the database, or None
            "available": "0.8.0",     # pgvector's default version in the installed package
            "migrations_table": True,
            "migrations": {1: Applied(1, "extensions_and_schemas", "…")},
        }
    """

    def requires_command(self, *args: Any, **kwargs: Any) -> str:
        return "sh"

    @staticmethod
    def default() -> dict[str, Any]:
        return {
            "state": "absent",
            "roles": {},
            "database": False,
            "databases": [],
            "extension": None,
            "available": None,
            "migrations_table": False,
            "migrations": {},
        }

    def command(
        self, port: int, database: str, roles: list[str], databases: list[str] | None = None
    ) -> str:
        psql = f"runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 -p {int(port)}"
        role_list = ", ".join(_literal(r) for r in roles) or "''"
        db = _literal(database)
        q_roles = (
            "SELECT 'role|' || rolname || '|' || rolcanlogin::int || '|' || "
            f"coalesce(md5(rolpassword), '') FROM pg_authid WHERE rolname IN ({role_list})"
        )
        q_db = f"SELECT 'database|' || datname FROM pg_database WHERE datname = {db}"
        app_list = ", ".join(_literal(d) for d in databases or []) or "''"
        q_apps = f"SELECT 'appdb|' || datname FROM pg_database WHERE datname IN ({app_list})"
        q_ext = "SELECT 'extension|' || extversion FROM pg_extension WHERE extname = 'vector'"
        q_avail = (
            "SELECT 'available|' || default_version FROM pg_available_extensions "
            "WHERE name = 'vector'"
        )
        q_table = f"SELECT 'table|' || (to_regclass('{TABLE}') IS NOT NULL)::int"
        q_rows = (
            f"SELECT 'migration|' || version || '|' || name || '|' || checksum FROM {TABLE} "
            "ORDER BY version"
        )
        d = shlex.quote(database)
        return "\n".join(
            [
                "if ! command -v psql >/dev/null 2>&1 || ! id postgres >/dev/null 2>&1; then",
                "  echo state=absent; exit 0",
                "fi",
                f"if ! {psql} -d postgres -c 'SELECT 1' >/dev/null 2>&1; then",
                "  echo state=down; exit 0",
                "fi",
                "echo state=up",
                f"{psql} -d postgres -c {shlex.quote(q_roles)}",
                f"{psql} -d postgres -c {shlex.quote(q_avail)}",
                f"{psql} -d postgres -c {shlex.quote(q_apps)}",
                f"{psql} -d postgres -c {shlex.quote(q_db)} | grep -q . || exit 0",
                f"echo {shlex.quote('database|' + database)}",
                f"{psql} -d {d} -c {shlex.quote(q_ext)}",
                f"t=$({psql} -d {d} -c {shlex.quote(q_table)})",
                'echo "$t"',
                "if [ \"$t\" = 'table|1' ]; then",
                f"  {psql} -d {d} -c {shlex.quote(q_rows)}",
                "fi",
            ]
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        return parse_state(output)


def parse_state(output: list[str]) -> dict[str, Any]:
    state = PostgresState.default()
    rows: list[str] = []
    for line in output:
        line = line.strip()
        if line.startswith("state="):
            state["state"] = line.split("=", 1)[1]
        elif line.startswith("role|"):
            _, name, login, digest = [*line.split("|"), "", "", ""][:4]
            state["roles"][name] = {"login": login == "1", "password_md5": digest}
        elif line.startswith("database|"):
            state["database"] = True
        elif line.startswith("appdb|"):
            state["databases"].append(line.split("|", 1)[1])
        elif line.startswith("available|"):
            state["available"] = line.split("|", 1)[1]
        elif line.startswith("extension|"):
            state["extension"] = line.split("|", 1)[1]
        elif line.startswith("table|"):
            state["migrations_table"] = line.endswith("|1")
        elif line.startswith("migration|"):
            rows.append(line.split("|", 1)[1])
    applied: dict[int, Applied] = parse_applied(rows)
    state["migrations"] = applied
    return state
