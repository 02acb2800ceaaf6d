"""postgres: packages from distribution facts, pg_hba from the inventory's allowed clients, the
rendered conf fragments checked by the `postgres` binary, SCRAM verifiers and the migration
script checked against a throw-away local PostgreSQL when one is installed (else skipped)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from citadel import migrations
from citadel.components import postgres
from citadel.components.postgres import Config
from citadel.errors import CitadelError
from citadel.loader import load_cluster
from citadel.migrations import Migration
from citadel.model.cluster import Cluster
from citadel.render import HostView, component_files
from citadel.secrets import MaskedSecrets, SecretStore

ROOT = Path(__file__).resolve().parents[2]
DEBIAN_13 = {"ID": "debian", "VERSION_ID": "13", "VERSION_CODENAME": "trixie"}
DEBIAN_12 = {"ID": "debian", "VERSION_ID": "12", "VERSION_CODENAME": "bookworm"}
UBUNTU_2404 = {"ID": "ubuntu", "VERSION_ID": "24.04", "VERSION_CODENAME": "noble"}
UBUNTU_2204 = {"ID": "ubuntu", "VERSION_ID": "22.04", "VERSION_CODENAME": "jammy"}


@pytest.fixture(scope="module", params=["inventory/production.yml", "inventory/lab.yml"])
def cluster(request: pytest.FixtureRequest) -> Cluster:
    return load_cluster(ROOT / request.param).cluster


def files_of(cluster: Cluster, secrets: SecretStore | None = None, version: int = 17):
    host = cluster.host("data")
    assert host.postgres is not None
    cfg = postgres.resolved(host.postgres, version)
    view = HostView(cluster, host, secrets or MaskedSecrets())
    return {f.spec.dest: f for f in component_files("postgres", view, cfg)}


# -- packages ---------------------------------------------------------------------------------


def test_debian_13_uses_its_own_pgvector() -> None:
    inst = postgres.choose_install(Config(), DEBIAN_13)
    assert (inst.source, inst.version) == ("distribution", 17)
    assert inst.packages == ["postgresql-17", "postgresql-17-pgvector"]


def test_ubuntu_2404_uses_its_own_pgvector() -> None:
    inst = postgres.choose_install(Config(), UBUNTU_2404)
    assert (inst.source, inst.packages) == (
        "distribution",
        ["postgresql-16", "postgresql-16-pgvector"],
    )


@pytest.mark.parametrize("meta", [DEBIAN_12, UBUNTU_2204])
def test_without_distribution_pgvector_pgdg(meta: dict[str, str]) -> None:
    inst = postgres.choose_install(Config(), meta)
    assert inst.source == "pgdg"
    assert inst.version == postgres.PGDG_DEFAULT_VERSION
    assert inst.codename == meta["VERSION_CODENAME"]


def test_version_override_goes_to_pgdg_when_the_distribution_has_another() -> None:
    inst = postgres.choose_install(Config(version=16), DEBIAN_13)
    assert (inst.source, inst.version) == ("pgdg", 16)


def test_forced_distribution_without_pgvector_is_an_error() -> None:
    with pytest.raises(CitadelError, match="ships no pgvector"):
        postgres.choose_install(Config(source="distribution"), DEBIAN_12)
    with pytest.raises(CitadelError, match="ships PostgreSQL 17, not 16"):
        postgres.choose_install(Config(source="distribution", version=16), DEBIAN_13)


def test_forced_pgdg_and_its_signed_source() -> None:
    cfg = Config(source="pgdg", pgdg_url="https://mirror.example/pgdg")
    inst = postgres.choose_install(cfg, DEBIAN_13)
    assert (inst.source, inst.version) == ("pgdg", 17)
    src = postgres.pgdg_sources(cfg, inst.codename, "/usr/share/k.asc")
    assert "URIs: https://mirror.example/pgdg" in src
    assert "Suites: trixie-pgdg" in src
    assert "Signed-By: /usr/share/k.asc" in src


# -- pg_hba -----------------------------------------------------------------------------------


def test_pg_hba_allows_exactly_the_inventory_clients(cluster: Cluster) -> None:
    host = cluster.host("data")
    cfg = host.postgres
    assert cfg is not None
    rules = postgres.hba_rules(cluster, host, cfg)
    remote = {
        r.address for r in rules if r.type == "host" and not r.address.startswith(("127.", "::1"))
    }
    expected = {f"{h.address}/32" for ref in cfg.allowed_clients for h in cluster.resolve(ref)}
    document = {r.address for r in rules if r.database == cfg.database} - {
        "127.0.0.1/32",
        "::1/128",
    }
    assert document == expected
    assert f"{cluster.host('monitoring').address}/32" not in remote
    assert all(r.method in ("scram-sha-256", "peer") for r in rules)
    assert all(
        r.users == (cfg.app_role, cfg.readonly_role)
        for r in rules
        if r.address in remote and r.database == cfg.database
    )
    # An application database: its own role, from its own clients, nothing else.
    apps = {d.name: d for d in cfg.databases}
    assert set(apps) == {"openwebui"}
    app_rules = [r for r in rules if r.database in apps]
    assert [(r.database, r.users, r.address) for r in app_rules] == [
        ("openwebui", ("openwebui",), f"{cluster.host('webui').address}/32")
    ]
    assert remote == expected | {r.address for r in app_rules}
    text = files_of(cluster)[f"{postgres.conf_dir(postgres.resolved(cfg, 17))}/pg_hba.conf"].content
    assert "0.0.0.0" not in text and " trust" not in text and " md5" not in text


def test_pg_hba_follows_the_model(cluster: Cluster) -> None:
    host = cluster.host("data")
    assert host.postgres is not None
    cfg = host.postgres.model_copy(update={"allowed_clients": ["monitoring"]})
    rules = postgres.hba_rules(cluster, host, cfg)
    remote = [r.address for r in rules if r.comment == "monitoring"]
    assert remote == [f"{cluster.host('monitoring').address}/32"]


def test_listen_and_tuning_fragments(cluster: Cluster) -> None:
    host = cluster.host("data")
    f = files_of(cluster)
    restart = f["/etc/postgresql/17/main/conf.d/10-citadel-restart.conf"].content
    assert f"listen_addresses = '{host.address},localhost'" in restart
    assert f"shared_buffers = {host.postgres.tuning.shared_buffers}" in restart  # type: ignore[union-attr]
    reload_ = f["/etc/postgresql/17/main/conf.d/20-citadel.conf"].content
    assert "password_encryption = 'scram-sha-256'" in reload_
    assert "listen_addresses" not in reload_ and "shared_buffers" not in reload_


def test_secret_files_hold_verifiers_never_passwords(cluster: Cluster) -> None:
    secrets = SecretStore(
        {
            "postgres_owner_password": "owner-Secret-1",
            "postgres_app_password": "app-Secret-2",
            "postgres_readonly_password": "ro-Secret-3",
            "postgres_openwebui_password": "webui-Secret-4",
        }
    )
    f = files_of(cluster, secrets)
    roles = f["/etc/citadel/postgres/roles.sql"]
    assert roles.spec.secret and roles.spec.mode == "0600"
    for value in ("owner-Secret-1", "app-Secret-2", "ro-Secret-3", "webui-Secret-4"):
        assert all(value not in x.content for x in f.values())
    assert roles.content.count("PASSWORD 'SCRAM-SHA-256$4096:") == 4
    for spec in (x.spec for x in f.values()):
        if spec.validate:
            assert "Secret" not in spec.validate


def test_scram_verifier_is_stable_and_per_role() -> None:
    a = postgres.scram_sha256("pw", "citadel_app")
    assert a == postgres.scram_sha256("pw", "citadel_app")
    assert a != postgres.scram_sha256("pw", "citadel_readonly")
    assert a.startswith("SCRAM-SHA-256$4096:")


# -- the real binary --------------------------------------------------------------------------


def _pg_bin() -> Path | None:
    for version in (17, 16, 15):
        p = Path(f"/usr/lib/postgresql/{version}/bin")
        if (p / "postgres").exists() and (p / "initdb").exists():
            return p
    return None


def _as_postgres(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)


@pytest.fixture(scope="module")
def pg() -> Iterator[tuple[Path, Path, int]]:
    """A throw-away PostgreSQL on a unix socket only (no TCP unless asked)."""
    bindir = _pg_bin()
    if bindir is None or (os.geteuid() == 0 and shutil.which("runuser") is None):
        pytest.skip("no local PostgreSQL server binaries")
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a postgres user")
    base = Path(tempfile.mkdtemp(prefix="citadel-pg-", dir="/tmp"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
    port = 55432 + os.getpid() % 1000
    try:
        r = _as_postgres(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "-U",
                "postgres",
            ]
        )
        assert r.returncode == 0, r.stderr
        r = _as_postgres(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-w",
                "-l",
                str(base / "log"),
                "-o",
                f"-c listen_addresses=127.0.0.1 -c port={port} -k {sock}",
                "start",
            ]
        )
        assert r.returncode == 0, r.stderr + (base / "log").read_text()
        yield bindir, sock, port
    finally:
        _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(base, ignore_errors=True)


def psql(
    pg: tuple[Path, Path, int], sql: str, db: str = "postgres"
) -> subprocess.CompletedProcess[str]:
    _, sock, port = pg
    return _as_postgres(
        [
            "psql",
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(sock),
            "-p",
            str(port),
            "-d",
            db,
            "-f",
            "-",
        ],
        input=sql,
    )


def test_conf_fragments_pass_postgres_itself(cluster: Cluster) -> None:
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("no local PostgreSQL server binaries")
    f = files_of(cluster)
    script = f[postgres.CHECKCONF].content
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        checker = Path(d) / "pg-checkconf"
        checker.write_text(script)
        checker.chmod(0o755)
        for dest in ("10-citadel-restart.conf", "20-citadel.conf"):
            candidate = Path(d) / dest
            candidate.write_text(f[f"/etc/postgresql/17/main/conf.d/{dest}"].content)
            if os.geteuid() != 0:
                pytest.skip("the checker runs as root (install -o postgres, runuser)")
            r = subprocess.run(
                [str(checker), str(bindir), str(candidate)], capture_output=True, text=True
            )
            assert r.returncode == 0, r.stderr
        bad = Path(d) / "bad.conf"
        bad.write_text("shared_buffers = lots\n")
        r = subprocess.run([str(checker), str(bindir), str(bad)], capture_output=True, text=True)
        assert r.returncode != 0


def test_rendered_pg_hba_parses_without_errors(cluster: Cluster, pg) -> None:
    text = files_of(cluster)["/etc/postgresql/17/main/pg_hba.conf"].content
    r = psql(pg, "SHOW hba_file;")
    hba = Path(r.stdout.strip())
    original = hba.read_text()
    try:
        hba.write_text(text)
        r = psql(
            pg,
            "SELECT pg_reload_conf();\n"
            "SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL;",
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout.split()[-1] == "0"
    finally:
        hba.write_text(original)
        psql(pg, "SELECT pg_reload_conf();")


def test_scram_verifier_logs_in(pg) -> None:
    _, _, port = pg
    verifier = postgres.scram_sha256("s3cret 'x", "citadel_unit")
    r = psql(pg, f"CREATE ROLE citadel_unit LOGIN PASSWORD {postgres.sql_literal(verifier)};")
    assert r.returncode == 0, r.stderr
    login = subprocess.run(
        [
            "psql",
            "-X",
            "-At",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "citadel_unit",
            "-d",
            "postgres",
            "-c",
            "SELECT current_user",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PGPASSWORD": "s3cret 'x"},
        timeout=30,
    )
    assert login.stdout.strip() == "citadel_unit", login.stderr


def test_migration_script_applies_once_and_refuses_a_changed_one(pg) -> None:
    assert psql(pg, "CREATE DATABASE citadel_unit;").returncode == 0
    assert psql(pg, migrations.bootstrap_sql(), db="citadel_unit").returncode == 0
    first = Migration(1, "make_t", "CREATE TABLE t (id int);")
    for _ in range(2):  # the second run finds it recorded and does nothing
        r = psql(pg, migrations.script(first), db="citadel_unit")
        assert r.returncode == 0, r.stderr
    rows = psql(pg, f"SELECT version, checksum FROM {migrations.TABLE};", db="citadel_unit").stdout
    assert rows.split() == [f"1|{first.checksum}"]
    changed = Migration(1, "make_t", "CREATE TABLE t (id bigint);")
    r = psql(pg, migrations.script(changed), db="citadel_unit")
    assert r.returncode != 0
    assert "changed after it was applied" in r.stderr
    broken = Migration(2, "broken", "CREATE TABLE u (id int); SELECT 1/0;")
    r = psql(pg, migrations.script(broken), db="citadel_unit")
    assert r.returncode != 0
    exists = psql(pg, "SELECT to_regclass('public.u') IS NULL;", db="citadel_unit").stdout.strip()
    assert exists == "t"  # a failed migration leaves nothing behind (one transaction)
