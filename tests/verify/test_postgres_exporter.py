"""postgres_exporter: answers on the host's address and logs in as its pg_monitor role."""

import time

from tests.verify.test_gateway import assert_sandboxed

COMPONENT = "postgres_exporter"
# prometheus-postgres-exporter with its sandbox drop-in scores this or below
# (Debian's unit alone 9.2; docs/security.md).
SANDBOX_EXPOSURE = 1.5


def test_service_runs_and_is_enabled(target):
    service = target.infra.service("prometheus-postgres-exporter")
    assert service.is_running
    assert service.is_enabled


def test_listens_on_host_address(target):
    port = target.host.postgres_exporter.port
    assert target.infra.socket(f"tcp://{target.host.address}:{port}").is_listening


def test_metrics_say_postgres_up(target):
    url = f"http://{target.host.address}:{target.host.postgres_exporter.port}/metrics"
    out = ""
    for _ in range(10):  # the first scrape after a PostgreSQL restart reconnects
        out = target.infra.check_output(f"curl -sf --max-time 10 {url}")
        if "pg_up 1" in out:
            break
        time.sleep(1)
    assert "pg_up 1" in out
    assert "pg_stat_database_" in out


def test_monitoring_role_is_least_privilege(target):
    role = target.host.postgres_exporter.role
    port = target.host.postgres.port
    out = target.infra.check_output(
        f"runuser -u postgres -- psql -X -A -t -p {port} -d postgres -c "
        f'"SELECT rolsuper::int::text || rolcreaterole::int::text || '
        f"rolcreatedb::int::text || ':' || "
        f"pg_has_role('{role}', 'pg_monitor', 'member')::int::text FROM pg_roles "
        f"WHERE rolname = '{role}'\""
    )
    assert out.strip() == "000:1"


def test_service_is_sandboxed(target):
    """Debian's unit with citadel's drop-in (templates/_shared/sandbox.j2), as systemd loaded it."""
    assert_sandboxed(target.infra, "prometheus-postgres-exporter", SANDBOX_EXPOSURE)
