"""Migrations: file ordering, checksums, planning against the recorded history, the psql script."""

from __future__ import annotations

from pathlib import Path

import pytest

from citadel import migrations
from citadel.components import postgres
from citadel.loader import load_cluster
from citadel.migrations import Applied, Migration, MigrationError
from citadel.render import HostView
from citadel.secrets import MaskedSecrets

ROOT = Path(__file__).resolve().parents[2]


def m(version: int, sql: str = "SELECT 1;", name: str = "x") -> Migration:
    return Migration(version, name, sql)


def applied(*ms: Migration) -> dict[int, Applied]:
    return {x.version: Applied(x.version, x.name, x.checksum) for x in ms}


def test_discover_orders_by_version_not_name(tmp_path: Path) -> None:
    for name in ("0010_later.sql.j2", "0002_second.sql", "0001_first.sql.j2", ".hidden"):
        (tmp_path / name).write_text("SELECT 1;\n")
    assert [v for v, _, _ in migrations.discover(tmp_path)] == [1, 2, 10]


@pytest.mark.parametrize("bad", ["1_short.sql", "0001-dash.sql", "0001_Upper.sql", "0000_z.sql"])
def test_discover_rejects_bad_names(tmp_path: Path, bad: str) -> None:
    (tmp_path / bad).write_text("")
    with pytest.raises(MigrationError):
        migrations.discover(tmp_path)


def test_discover_rejects_duplicate_versions(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("")
    (tmp_path / "0001_b.sql.j2").write_text("")
    with pytest.raises(MigrationError, match="0001"):
        migrations.discover(tmp_path)


def test_checksum_is_sha256_of_rendered_sql() -> None:
    assert m(1, "a").checksum != m(1, "b").checksum
    assert m(1, "a").checksum == m(1, "a", name="other").checksum
    assert len(m(1).checksum) == 64


def test_plan_fresh_database_applies_all_in_order() -> None:
    available = [m(1), m(2), m(3)]
    assert migrations.plan(available, {}) == available


def test_plan_rerun_applies_nothing() -> None:
    available = [m(1), m(2)]
    assert migrations.plan(available, applied(*available)) == []


def test_plan_only_new_migrations() -> None:
    available = [m(1), m(2), m(3, "CREATE TABLE t ();")]
    assert migrations.plan(available, applied(m(1), m(2))) == [available[2]]


def test_plan_changed_applied_migration_is_an_error() -> None:
    with pytest.raises(MigrationError, match="0001_x changed after it was applied"):
        migrations.plan([m(1, "SELECT 2;")], applied(m(1, "SELECT 1;")))


def test_plan_applied_migration_without_file_is_an_error() -> None:
    with pytest.raises(MigrationError, match="file is gone"):
        migrations.plan([m(1)], applied(m(1), m(2)))


def test_plan_pending_below_newest_applied_is_an_error() -> None:
    with pytest.raises(MigrationError, match="renumber"):
        migrations.plan([m(1), m(2), m(3)], applied(m(1), m(3)))


def test_parse_applied_rows() -> None:
    rows = ["1|first|" + "a" * 64, "", "2|second|" + "b" * 64]
    got = migrations.parse_applied(rows)
    assert got[2] == Applied(2, "second", "b" * 64)
    with pytest.raises(MigrationError):
        migrations.parse_applied(["garbage"])


def test_script_records_and_guards() -> None:
    s = migrations.script(m(7, "CREATE TABLE t ();", "make_t"))
    assert (
        s.index("BEGIN;")
        < s.index("CREATE TABLE t ();")
        < s.index("INSERT INTO")
        < s.index("COMMIT;")
    )
    assert "\\set ON_ERROR_STOP on" in s
    assert "changed after it was applied" in s
    assert m(7, "CREATE TABLE t ();", "make_t").checksum in s


def _view(dim: int | None = None):
    cluster = load_cluster(ROOT / "inventory/production.yml").cluster
    host = cluster.host("data")
    cfg = host.postgres
    assert cfg is not None
    if dim is not None:
        cfg = cfg.model_copy(update={"embedding_dimension": dim})
    return HostView(cluster, host, MaskedSecrets()), cfg


def test_project_migrations_render_in_order_and_stably() -> None:
    view, cfg = _view()
    first = migrations.for_host(view, cfg)
    assert [x.version for x in first] == sorted(x.version for x in first)
    assert first[0].version == 1
    assert [x.checksum for x in migrations.for_host(view, cfg)] == [x.checksum for x in first]
    sql = "\n".join(x.sql for x in first)
    assert "CREATE EXTENSION IF NOT EXISTS vector" in sql
    for schema in postgres.DOCUMENT_SCHEMAS:
        assert f"CREATE SCHEMA IF NOT EXISTS {schema}" in sql
    for column in ("model_name", "avg_inference_time_ms", "total_requests", "success_rate"):
        assert column in sql
    assert "similarity_score real" in sql


def test_high_dimension_uses_binary_quantized_hnsw() -> None:
    view, cfg = _view(4096)
    sql = "\n".join(x.sql for x in migrations.for_host(view, cfg))
    assert "vector(4096) NOT NULL" in sql
    assert "USING hnsw ((binary_quantize(vector)::bit(4096)) bit_hamming_ops)" in sql
    assert "hnsw (vector vector_l2_ops)" not in sql


def test_low_dimension_uses_plain_hnsw() -> None:
    view, cfg = _view(1536)
    sql = "\n".join(x.sql for x in migrations.for_host(view, cfg))
    assert "USING hnsw (vector vector_l2_ops)" in sql
    assert "binary_quantize" not in sql


def test_changing_the_dimension_changes_the_checksum() -> None:
    a = migrations.for_host(*_view(4096))
    b = migrations.for_host(*_view(1024))
    assert a[1].checksum != b[1].checksum
    with pytest.raises(MigrationError):
        migrations.plan(b, applied(*a))
