"""Point-in-time restore drill on the lab's data host (issue 20): exact to the row.

Writes rows A, takes a base backup (citadel-pg-backup), writes rows B, notes a time T, writes rows
C, archives the WAL, destroys the data directory, restores to T with citadel-pg-restore and checks
that exactly A and B are there; then PostgreSQL writes again and verify passes.

Standalone: its own module fixture brings the lab up (`citadel lab up`, idempotent) and
converges it, so it runs before or after tests/e2e/test_cluster.py (which starts from a cold lab
unless CITADEL_E2E_REUSE=1). It leaves the lab up. Run by the lab owner:

    CITADEL_E2E_REUSE=1 .venv/bin/python -m pytest tests/e2e/test_backup_restore.py
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from citadel.components import postgres
from citadel.converge import run_pyinfra
from citadel.loader import load_cluster

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
    pytest.mark.skipif(
        shutil.which("systemd-nspawn") is None, reason="systemd-nspawn is not installed"
    ),
]

INVENTORY = "inventory/lab.yml"


def citadel(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "citadel.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def on_data(command: str, timeout: float = 900) -> str:
    proc = citadel("lab", "ssh", "data", "--", command, timeout=timeout)
    assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc.stdout.strip()


def sql(query: str) -> str:
    return on_data(f"runuser -u postgres -- psql -X -At -d citadel_db -c {shlex.quote(query)}")


@pytest.fixture(scope="module", autouse=True)
def converged_lab() -> Iterator[None]:
    up = citadel("lab", "up")
    assert up.returncode == 0, up.stdout + up.stderr[-4000:]
    report = run_pyinfra(INVENTORY, dry=False, stream=False, timeout=1200)
    assert report["results"]["failed_hosts"] == [], report["results"]
    yield


def test_point_in_time_restore_on_the_data_host_is_exact_to_the_row() -> None:
    cfg = load_cluster(INVENTORY).cluster.host("data").postgres
    assert cfg is not None and cfg.backup.enabled
    major = on_data("ls /etc/postgresql | sort -n | tail -n 1")
    data_dir = f"/var/lib/postgresql/{major}/main"
    service = f"postgresql@{major}-main"

    sql("DROP TABLE IF EXISTS monitoring.e2e_restore_drill")
    sql("CREATE TABLE monitoring.e2e_restore_drill (id int PRIMARY KEY, batch text NOT NULL)")
    sql("INSERT INTO monitoring.e2e_restore_drill SELECT g, 'A' FROM generate_series(1, 100) g")
    t0 = time.monotonic()
    on_data(postgres.BACKUP_SCRIPT)
    backup_s = time.monotonic() - t0
    sql("INSERT INTO monitoring.e2e_restore_drill SELECT g, 'B' FROM generate_series(101, 150) g")
    time.sleep(1.1)
    target = sql("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || '+00'")
    time.sleep(1.1)
    sql("INSERT INTO monitoring.e2e_restore_drill SELECT g, 'C' FROM generate_series(151, 200) g")
    segment = sql("SELECT pg_walfile_name(pg_switch_wal())")
    wal = postgres.wal_archive(cfg)
    on_data(f"for i in $(seq 60); do [ -f {wal}/{segment} ] && exit 0; sleep 1; done; exit 1")
    assert sql("SELECT failed_count FROM pg_stat_archiver") == "0"

    # The data is lost: the cluster stops and its data directory is gone.
    on_data(f"systemctl stop {service} && rm -rf {data_dir}")
    t1 = time.monotonic()
    out = on_data(f"{postgres.RESTORE_SCRIPT} --target-time {shlex.quote(target)}")
    restore_s = time.monotonic() - t1
    assert "restored to" in out, out

    got = sql(
        "SELECT batch || ':' || count(*) || ':' || min(id) || '-' || max(id) "
        "FROM monitoring.e2e_restore_drill GROUP BY batch ORDER BY batch"
    ).split()
    assert got == ["A:100:1-100", "B:50:101-150"], got
    assert sql("SELECT pg_is_in_recovery()") == "f"
    sql("INSERT INTO monitoring.e2e_restore_drill VALUES (201, 'after-restore')")
    sql("DROP TABLE monitoring.e2e_restore_drill")
    on_data(postgres.BACKUP_SCRIPT)  # a base backup on the new timeline
    on_data(f"rm -rf {data_dir}.before-restore-*")
    print(f"\nlab drill: backup {backup_s:.1f}s, restore {restore_s:.1f}s")

    report = run_pyinfra(INVENTORY, dry=False, stream=False, limit=["data"], timeout=1200)
    assert report["results"]["failed_hosts"] == []
    proc = citadel("verify", "--junit", "reports/e2e-verify-after-restore.xml")
    assert proc.returncode == 0, proc.stdout[-6000:]
