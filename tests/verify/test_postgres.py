"""postgres: citadel_db with pgvector answers the API document's SQL, as the app role, only from
the clients the inventory allows; roles and migrations as the model says; data survives a restart.

Passwords go to psql on stdin (never on a command line that testinfra or pytest could print).
"""

from __future__ import annotations

import shlex
import time

import pytest

from citadel import migrations
from citadel.components import postgres
from citadel.render import HostView
from tests.acceptance.examples import PERFORMANCE_QUERY as DOC_METRICS_QUERY
from tests.acceptance.examples import SIMILARITY_QUERY as DOC_SIMILAR_QUERY
from tests.verify.test_gateway import MAX_EXPOSURE, assert_sandboxed, exposure

COMPONENT = "postgres"
# postgresql@<version>-main with its sandbox drop-in scores this or below
# (Debian's unit alone 9.6; JIT: no MemoryDenyWriteExecute; docs/security.md).
SANDBOX_EXPOSURE = 2.0

# A Python one-liner run on another host: send a PostgreSQL startup message and report what the
# server answers first ("R": it asks for authentication; "E ...": refused with the reason).
STARTUP_PROBE = r"""
import socket, struct, sys
host, port, user, db = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
try:
    s = socket.create_connection((host, port), timeout=5)
except OSError as exc:
    print("blocked", exc); sys.exit(0)
p = b"user\0" + user.encode() + b"\0database\0" + db.encode() + b"\0\0"
s.sendall(struct.pack("!ii", 8 + len(p), 196608) + p)
s.settimeout(5)
kind = s.recv(1).decode()
if kind == "R":
    _, code = struct.unpack("!ii", s.recv(8)); print("R", code)
else:
    print(kind, s.recv(4096).decode(errors="replace").replace("\0", " "))
"""


def run_stdin(infra, command: str, data: str, timeout: int = 120) -> tuple[int, str, str]:
    """Run `command` on the host with `data` on its stdin (paramiko, the verify connection)."""
    client = infra.backend.client
    stdin, stdout, stderr = client.exec_command(command, timeout=timeout)
    stdin.write(data)
    stdin.channel.shutdown_write()
    out = stdout.read().decode()
    err = stderr.read().decode()
    return stdout.channel.recv_exit_status(), out, err


def psql(target, sql: str, role_secret: str = "postgres_app_password", role: str | None = None):
    """Run SQL over loopback TCP as a login role (scram); returns psql's unaligned output."""
    cfg = target.host.postgres
    role = role or {v: k for k, v in cfg.role_secrets().items()}[role_secret]
    command = (
        "sh -c 'IFS= read -r PGPASSWORD; export PGPASSWORD; exec psql -X -q -A -t "
        f"-v ON_ERROR_STOP=1 -h 127.0.0.1 -p {cfg.port} -U {role} -d {cfg.database}'"
    )
    rc, out, err = run_stdin(target.infra, command, target.secret(role_secret) + "\n" + sql)
    assert rc == 0, f"psql as {role} failed: {err.strip()}"
    return out


def superuser(target, sql: str, database: str | None = None) -> str:
    cfg = target.host.postgres
    db = database or cfg.database
    return target.infra.check_output(
        f"runuser -u postgres -- psql -X -A -t -p {cfg.port} -d {db} -c {shlex.quote(sql)}"
    )


def vector_literal(dim: int, value: float) -> str:
    return "[" + ",".join([repr(value)] * dim) + "]"


def major(target) -> int:
    return int(target.infra.check_output("ls /etc/postgresql | sort -n | tail -n 1"))


def test_service_runs_and_is_enabled(target):
    service = target.infra.service(f"postgresql@{major(target)}-main")
    assert service.is_running
    assert service.is_enabled


def test_listens_on_host_address_and_loopback_only(target):
    port = target.host.postgres.port
    assert target.infra.socket(f"tcp://{target.host.address}:{port}").is_listening
    assert target.infra.socket(f"tcp://127.0.0.1:{port}").is_listening
    assert not target.infra.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_pgvector_extension_version(target):
    got = superuser(target, "SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    available = superuser(
        target, "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
    )
    assert got, "CREATE EXTENSION vector was not run in the database"
    assert got == available, f"pgvector {got} in the database, {available} installed"
    assert tuple(int(x) for x in got.split(".")[:2]) >= (0, 7)


def test_document_schemas_exist(target):
    got = set(psql(target, "SELECT nspname FROM pg_namespace;").split())
    assert set(postgres.DOCUMENT_SCHEMAS) <= got


def test_document_metrics_query_returns_rows(target):
    sql = (
        "BEGIN;\n"
        "INSERT INTO ai_models.performance_metrics "
        "(model_name, avg_inference_time_ms, total_requests, success_rate) "
        "VALUES ('llama-3-chat', 412.5, 1200, 0.995);\n"
        f"{DOC_METRICS_QUERY}\n"
        "ROLLBACK;\n"
    )
    out = psql(target, sql)
    assert "llama-3-chat|412.5|1200|0.995" in out


def test_document_similarity_query_returns_rows(target):
    dim = target.host.postgres.embedding_dimension
    query = vector_literal(dim, 0.01)
    sql = (
        "BEGIN;\n"
        "INSERT INTO embeddings.document_vectors (doc_id, vector, similarity_score) VALUES "
        f"('verify-near', array_fill(0.01::real, ARRAY[{dim}])::vector, 0.98), "
        f"('verify-far', array_fill(0.5::real, ARRAY[{dim}])::vector, 0.10);\n"
        # The document's query verbatim, with $1 bound by psql's \bind (extended protocol).
        f"{DOC_SIMILAR_QUERY.rstrip(';')} \\bind '{query}' \\g\n"
        "ROLLBACK;\n"
    )
    out = psql(target, sql)
    assert "verify-near|0.98" in out
    assert "verify-far" not in out


def test_index_assisted_search_function(target):
    dim = target.host.postgres.embedding_dimension
    sql = (
        "BEGIN;\n"
        "INSERT INTO embeddings.document_vectors (doc_id, vector, similarity_score) VALUES "
        f"('verify-near', array_fill(0.01::real, ARRAY[{dim}])::vector, 0.98);\n"
        "SELECT doc_id FROM embeddings.similar_documents("
        f"array_fill(0.01::real, ARRAY[{dim}])::vector);\n"
        "ROLLBACK;\n"
    )
    assert "verify-near" in psql(target, sql)
    indexes = superuser(
        target,
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'embeddings' "
        "AND tablename = 'document_vectors' AND indexdef LIKE '%hnsw%'",
    )
    assert "hnsw" in indexes


def test_roles_have_least_privilege(target):
    cfg = target.host.postgres
    out = superuser(
        target,
        "SELECT rolname || ':' || rolsuper::int || rolcreatedb::int || rolcreaterole::int "
        "FROM pg_roles WHERE rolname LIKE 'citadel%' ORDER BY 1",
    )
    for role in (cfg.owner_role, cfg.app_role, cfg.readonly_role):
        assert f"{role}:000" in out
    # The app role writes rows but creates nothing; the read-only role only reads.
    with pytest.raises(AssertionError, match="permission denied"):
        psql(target, "CREATE TABLE ai_models.verify_forbidden (id int);")
    with pytest.raises(AssertionError, match="permission denied"):
        psql(
            target,
            "INSERT INTO ai_models.performance_metrics (model_name, avg_inference_time_ms) "
            "VALUES ('x', 1);",
            role_secret="postgres_readonly_password",
        )
    assert (
        psql(
            target,
            "SELECT count(*) >= 0 FROM ai_models.performance_metrics;",
            role_secret="postgres_readonly_password",
        ).strip()
        == "t"
    )


def test_passwords_are_scram(target):
    out = superuser(
        target,
        "SELECT count(*) FROM pg_authid WHERE rolname LIKE 'citadel%' "
        "AND rolpassword NOT LIKE 'SCRAM-SHA-256$%'",
    )
    assert out.strip() == "0"


def test_migrations_recorded_with_checksums(target):
    cfg = target.host.postgres
    view = HostView(target.cluster, target.host, target.loaded.secrets)
    expected = {m.version: m.checksum for m in migrations.for_host(view, cfg)}
    rows = superuser(target, f"SELECT version || '|' || checksum FROM {migrations.TABLE}")
    got = dict(line.split("|") for line in rows.split())
    assert {int(k): v for k, v in got.items()} == expected


def test_allowed_client_is_asked_for_scram(target):
    cfg = target.host.postgres
    clients = [h for ref in cfg.allowed_clients for h in target.cluster.resolve(ref)]
    probe_from = next((h for h in clients if h.name == "gateway"), clients[0])
    out = target.on(probe_from.name).check_output(
        f"python3 -c {shlex.quote(STARTUP_PROBE)} {target.host.address} {cfg.port} "
        f"{cfg.app_role} {cfg.database}"
    )
    assert out.strip() == "R 10", f"from {probe_from.name}: {out}"  # 10 = SASL (scram-sha-256)


def test_login_from_a_host_not_allowed_is_refused(target):
    cfg = target.host.postgres
    allowed = {h.name for ref in cfg.allowed_clients for h in target.cluster.resolve(ref)}
    other = next(
        h for h in target.cluster.hosts if h.name not in allowed and h.name != target.host.name
    )
    out = target.on(other.name).check_output(
        f"python3 -c {shlex.quote(STARTUP_PROBE)} {target.host.address} {cfg.port} "
        f"{cfg.app_role} {cfg.database}"
    )
    # Either the firewall drops it, or pg_hba refuses it: never an authentication request.
    assert out.startswith("blocked") or "no pg_hba.conf entry" in out, f"from {other.name}: {out}"


def test_data_survives_service_restart(target):
    canary = (
        "INSERT INTO monitoring.events (host, kind) SELECT 'verify', 'citadel-verify-canary' "
        "WHERE NOT EXISTS (SELECT FROM monitoring.events WHERE kind = 'citadel-verify-canary');\n"
        "SELECT id || '|' || recorded_at FROM monitoring.events "
        "WHERE kind = 'citadel-verify-canary' ORDER BY id LIMIT 1;\n"
    )
    before = psql(target, canary).strip()
    target.infra.check_output(f"systemctl restart postgresql@{major(target)}-main")
    for _ in range(30):
        if target.infra.run(f"pg_isready -q -h 127.0.0.1 -p {target.host.postgres.port}").rc == 0:
            break
        time.sleep(1)
    after = psql(target, canary).strip()
    assert before and before == after


def test_wal_archiving_works(target):
    """archive_command copies a switched segment into the backup target; nothing failed."""
    b = target.host.postgres.backup
    before = int(superuser(target, "SELECT archived_count FROM pg_stat_archiver", "postgres"))
    segment = superuser(target, "SELECT pg_walfile_name(pg_switch_wal())", "postgres").strip()
    for _ in range(30):
        if (
            int(superuser(target, "SELECT archived_count FROM pg_stat_archiver", "postgres"))
            > before
        ):
            break
        time.sleep(1)
    assert superuser(target, "SELECT failed_count FROM pg_stat_archiver", "postgres") == "0"
    assert superuser(target, "SHOW archive_mode", "postgres") == "on"
    assert b.enabled
    assert target.infra.file(f"{postgres.wal_archive(target.host.postgres)}/{segment}").exists


def test_a_base_backup_exists_after_the_first_converge(target):
    cfg = target.host.postgres
    base = postgres.base_backups(cfg)
    names = target.infra.check_output(f"ls -1 {base}").split()
    assert names, f"no base backup in {base}"
    assert target.infra.file(f"{base}/{sorted(names)[-1]}/citadel-backup.info").exists
    assert target.infra.file(f"{cfg.backup.target}/{postgres.LAST_SUCCESS}").exists
    textfile = target.host.node_exporter.textfile_directory
    metric = target.infra.file(f"{textfile}/{postgres.METRIC_FILE}").content_string
    assert 'citadel_backup_last_success_timestamp_seconds{kind="postgres_base"}' in metric
    assert target.infra.file(postgres.RESTORE_SCRIPT).mode == 0o755


def test_the_backup_timer_is_enabled_and_its_unit_sandboxed(target):
    """Base backups run on postgres.backup.schedule (Persistent: a missed run starts at boot)."""
    if not target.host.postgres.backup.enabled:
        return
    timer = target.infra.service("citadel-pg-backup.timer")
    assert timer.is_enabled and timer.is_running
    report = target.infra.check_output(
        "LC_ALL=C systemd-analyze security --no-pager citadel-pg-backup.service"
    )
    assert exposure(report) <= MAX_EXPOSURE, report


def test_application_databases_are_their_own_roles_only(target):
    """postgres.databases (OpenWebUI's): each owned by its login role, which is no superuser and
    creates no roles or databases; from its clients that role is asked for scram on its own
    database only, and the document's roles are refused there (and it on citadel_db)."""
    cfg = target.host.postgres
    for app in cfg.databases:
        owner = superuser(
            target,
            "SELECT pg_get_userbyid(datdba) || ':' || r.rolsuper::int || r.rolcreatedb::int "
            "|| r.rolcreaterole::int FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba "
            f"WHERE datname = {postgres.sql_literal(app.name)}",
        )
        assert owner.strip() == f"{app.role}:000", owner
        client = next(h for ref in app.clients for h in target.cluster.resolve(ref))
        probe = f"python3 -c {shlex.quote(STARTUP_PROBE)} {target.host.address} {cfg.port}"
        on = target.on(client.name)
        assert on.check_output(f"{probe} {app.role} {app.name}").strip() == "R 10"
        for role, db in ((app.role, cfg.database), (cfg.app_role, app.name)):
            out = on.check_output(f"{probe} {role} {db}")
            assert "no pg_hba.conf entry" in out, f"{role} -> {db} from {client.name}: {out}"


def test_service_is_sandboxed(target):
    """Debian's unit with citadel's drop-in (templates/_shared/sandbox.j2), as systemd loaded it."""
    assert_sandboxed(target.infra, postgres.service_name(target.host.postgres), SANDBOX_EXPOSURE)
