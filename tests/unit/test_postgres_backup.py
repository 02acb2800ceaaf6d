"""postgres backups: the settings, the rendered files, and the restore drill against a REAL local
PostgreSQL (loopback socket only, a throw-away cluster in a temp dir, run as `nobody`).

The drill uses the files citadel renders for the lab's data host: the archive_command line of
20-citadel.conf, archive_mode of 10-citadel-restart.conf, pg-archive-wal, citadel-pg-backup,
citadel-pg-restore and backup.env (only the host-specific keys are pointed at the temp cluster:
binaries, port, data directory, OS user, socket, no systemd unit). It writes rows A, takes a base
backup with the backup script, writes rows B, notes a time T, writes rows C, destroys the data
directory, restores to T with the restore script and checks that exactly A and B are there. It
skips only when not root or no PostgreSQL server binaries are installed (scripts/bootstrap.sh
installs Debian's `postgresql`).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from backup_drill import free_port, write_pointed
from pydantic import ValidationError

from citadel.components import postgres
from citadel.loader import load_cluster
from citadel.model.cluster import Cluster
from citadel.render import HostView, RenderedFile, component_files, render_template
from citadel.secrets import MaskedSecrets

ROOT = Path(__file__).resolve().parents[2]
OS_USER = "nobody"


def _bindir() -> str | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    return os.path.dirname(found[-1]) if found else None


BINDIR = _bindir()
needs_postgres = pytest.mark.skipif(
    os.geteuid() != 0 or BINDIR is None,
    reason="needs root (the cluster runs as nobody) and PostgreSQL's server binaries "
    "(apt-get install postgresql; scripts/bootstrap.sh does)",
)


@pytest.fixture(scope="module")
def lab() -> Cluster:
    return load_cluster(ROOT / "inventory" / "lab.yml").cluster


def rendered(cluster: Cluster, cfg: postgres.Config) -> dict[str, RenderedFile]:
    host = cluster.host("data")
    view = HostView(cluster, host, MaskedSecrets())
    return {f.spec.dest: f for f in component_files("postgres", view, cfg)}


def data_cfg(cluster: Cluster, **backup: object) -> postgres.Config:
    cfg = cluster.host("data").postgres
    assert cfg is not None
    cfg = postgres.resolved(cfg, 17)
    return cfg.model_copy(update={"backup": cfg.backup.model_copy(update=backup)})


# -- settings and files -----------------------------------------------------------------------


def test_backup_defaults() -> None:
    b = postgres.Backup()
    assert b.enabled and b.target == "/var/backups/citadel/postgres"
    assert (b.schedule, b.keep_base_backups, b.stale_after_hours) == ("*-*-* 02:30:00", 7, 36)


@pytest.mark.parametrize(
    "field,value",
    [
        ("target", "relative/dir"),
        ("target", "/var/lib/postgresql/17/backups"),
        ("target", "/backups"),
        ("target", "/var/backups/../etc"),
        ("target", "/var/backups/it's"),
        ("schedule", "daily; rm -rf /"),
        ("schedule", ""),
        ("keep_base_backups", 0),
        ("archive_timeout", "5 minutes"),
    ],
)
def test_backup_settings_are_validated(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        postgres.Backup.model_validate({field: value})


def test_archiving_and_backup_files_render(lab: Cluster) -> None:
    cfg = data_cfg(lab, target="/srv/backup/pg", keep_base_backups=3)
    f = rendered(lab, cfg)
    restart = f["/etc/postgresql/17/main/conf.d/10-citadel-restart.conf"].content
    reload_ = f["/etc/postgresql/17/main/conf.d/20-citadel.conf"].content
    assert "archive_mode = on" in restart and "archive_mode" not in reload_
    assert f'archive_command = \'{postgres.ARCHIVE_WAL} "%p" "/srv/backup/pg/wal/%f"\'' in reload_
    env = f[postgres.BACKUP_ENV].content
    assert "BACKUP_TARGET=/srv/backup/pg\n" in env and "KEEP_BASE_BACKUPS=3\n" in env
    assert "TEXTFILE_DIR=/var/lib/prometheus/node-exporter\n" in env
    assert "PG_SERVICE=postgresql@17-main\n" in env
    units = {s.dest: s for s in postgres.backup_unit_files(cfg)}
    timer = units[postgres.BACKUP_TIMER_FILE]
    assert "OnCalendar=*-*-* 02:30:00" in render_template(timer.template, cfg=cfg, **timer.extra)
    assert timer.validate and timer.validate.startswith("systemd-analyze calendar")
    service = units[postgres.BACKUP_SERVICE_FILE]
    unit = render_template(service.template, cfg=cfg, **service.extra)
    assert "User=postgres" in unit and "ReadWritePaths=/srv/backup/pg" in unit
    assert f"ExecStartPost=+{postgres.BACKUP_SCRIPT} --publish-metric" in unit
    # Never starts the cluster itself: a restore stops it and a timer run must not start it.
    assert "Requisite=postgresql@17-main.service" in unit and "Requires=" not in unit
    for script in (postgres.ARCHIVE_WAL, postgres.BACKUP_SCRIPT, postgres.RESTORE_SCRIPT):
        assert f[script].spec.mode == "0755" and f[script].spec.validate == "bash -n {path}"
        check = subprocess.run(["bash", "-n"], input=f[script].content, text=True)
        assert check.returncode == 0, script
    hba = f["/etc/postgresql/17/main/pg_hba.conf"].content
    assert re.search(r"^local\s+replication\s+postgres\s+peer$", hba, re.M)


def test_disabled_backups_render_nothing(lab: Cluster) -> None:
    f = rendered(lab, data_cfg(lab, enabled=False))
    assert postgres.BACKUP_SCRIPT not in f and postgres.BACKUP_TIMER_FILE not in f
    assert "archive" not in f["/etc/postgresql/17/main/conf.d/10-citadel-restart.conf"].content
    assert "archive" not in f["/etc/postgresql/17/main/conf.d/20-citadel.conf"].content
    assert "replication" not in f["/etc/postgresql/17/main/pg_hba.conf"].content


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze absent")
def test_timer_validation_refuses_a_bad_calendar(lab: Cluster) -> None:
    [good] = [u.validate for u in postgres.backup_unit_files(data_cfg(lab)) if u.validate]
    [bad] = [
        u.validate
        for u in postgres.backup_unit_files(data_cfg(lab, schedule="every tuesday-ish"))
        if u.validate
    ]
    assert subprocess.run(good.format(path="/dev/null"), shell=True).returncode == 0
    assert subprocess.run(bad.format(path="/dev/null"), shell=True).returncode != 0


def test_archive_wal_copies_atomically_and_never_overwrites(lab: Cluster, tmp_path: Path) -> None:
    script = tmp_path / "pg-archive-wal"
    script.write_text(rendered(lab, data_cfg(lab))[postgres.ARCHIVE_WAL].content)
    script.chmod(0o755)
    (tmp_path / "wal").mkdir()
    seg = tmp_path / "000000010000000000000001"
    seg.write_bytes(b"x" * 4096)
    dest = tmp_path / "wal" / seg.name

    def archive() -> int:
        return subprocess.run([str(script), str(seg), str(dest)]).returncode

    assert archive() == 0 and dest.read_bytes() == seg.read_bytes()
    assert archive() == 0  # the same segment again (a retry): success
    seg.write_bytes(b"y" * 4096)
    assert archive() != 0  # different content under the same name: refused
    assert dest.read_bytes() == b"x" * 4096
    assert sorted(p.name for p in (tmp_path / "wal").iterdir()) == [seg.name]  # no temp left


# -- the drill against a real PostgreSQL -------------------------------------------------------


class Cluster15:
    """A throw-away PostgreSQL cluster in `root`, socket only, owned by OS_USER."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.data = root / "cluster" / "data"
        self.sock = root / "sock"

    def pg(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        proc = subprocess.run(
            ["runuser", "-u", OS_USER, "--", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{args[0]} failed: {proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def sql(self, query: str) -> str:
        args = ["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", str(self.sock)]
        args += ["-p", str(self.port), "-d", "postgres", "-c", query]
        return self.pg(f"{BINDIR}/psql", *args).strip()

    def start(self) -> None:
        log = str(self.root / "cluster" / "server.log")
        self.pg(f"{BINDIR}/pg_ctl", "-D", str(self.data), "-l", log, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self.pg(f"{BINDIR}/pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")


@pytest.fixture
def drill_root() -> Iterator[Path]:
    # Not pytest's tmp_path: its parents are 0700 root, and the server runs as nobody.
    root = Path(tempfile.mkdtemp(prefix="citadel-pg-drill-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        data = root / "cluster" / "data"
        if (data / "postmaster.pid").exists():
            stop = ["-D", str(data), "-m", "immediate", "-w", "stop"]
            subprocess.run(
                ["runuser", "-u", OS_USER, "--", f"{BINDIR}/pg_ctl", *stop],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(root, ignore_errors=True)


def install_rendered(lab: Cluster, root: Path, port: int, keep: int) -> dict[str, Path]:
    """Write citadel's rendered backup files for the data host under `root`, pointed at the
    throw-away cluster; returns where the scripts and the env file are."""
    target = root / "backups"
    cfg = data_cfg(lab, target=str(target), keep_base_backups=keep)
    f = rendered(lab, cfg)
    bin_dir = root / "bin"
    bin_dir.mkdir(mode=0o755)
    paths: dict[str, Path] = {}
    for name, dest in (
        ("archive", postgres.ARCHIVE_WAL),
        ("backup", postgres.BACKUP_SCRIPT),
        ("restore", postgres.RESTORE_SCRIPT),
    ):
        p = bin_dir / Path(dest).name
        p.write_text(f[dest].content)
        p.chmod(0o755)
        paths[name] = p
    # backup.env as rendered, with the host-specific keys pointed here (every key must exist).
    local = {
        "PG_BINDIR": str(BINDIR),
        "PG_PORT": str(port),
        "PG_DATA": str(root / "cluster" / "data"),
        "PG_SERVICE": "",
        "PG_OS_USER": OS_USER,
        "PG_SOCKET_DIR": str(root / "sock"),
        "TEXTFILE_DIR": str(root / "textfile"),
        "RESTORE_TIMEOUT_S": "120",
    }
    paths["env"] = write_pointed(f[postgres.BACKUP_ENV].content, local, root / "backup.env")
    # The conf lines the host gets: archive_mode (restart file), the 20-citadel.conf fragment
    # with its archive_command, the archive script at its path here.
    restart = f[f"{postgres.conf_dir(cfg)}/conf.d/10-citadel-restart.conf"].content
    reload_ = f[f"{postgres.conf_dir(cfg)}/conf.d/20-citadel.conf"].content
    assert postgres.ARCHIVE_WAL in reload_
    paths["conf"] = root / "citadel.conf"
    paths["conf"].write_text(
        "\n".join(line for line in restart.splitlines() if line.startswith("archive_mode"))
        + "\n"
        + reload_.replace(postgres.ARCHIVE_WAL, str(paths["archive"]))
    )
    return paths


def run_script(paths: dict[str, Path], name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CITADEL_BACKUP_ENV": str(paths["env"])}
    return subprocess.run(
        [str(paths[name]), *args], capture_output=True, text=True, timeout=180, env=env
    )


def wait_archived(pg: Cluster15, segment: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = pg.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
        if last[:24] >= segment:
            return
        time.sleep(0.2)
    raise AssertionError(f"{segment} not archived within {timeout}s: {last!r}")


@needs_postgres
def test_point_in_time_restore_drill_exact_to_the_row(lab: Cluster, drill_root: Path) -> None:
    t0 = time.monotonic()
    root = drill_root
    port = free_port()
    paths = install_rendered(lab, root, port, keep=2)
    pg = Cluster15(root, port)
    # What the deploy makes: the backup target's directories, the cluster's OS user's, 0700.
    backups = root / "backups"
    for d in (root / "cluster", pg.sock, backups, backups / "base", backups / "wal"):
        d.mkdir(mode=0o700)
        shutil.chown(d, OS_USER)
    pg.pg(f"{BINDIR}/initdb", "-D", str(pg.data), "-A", "peer", "--no-sync", timeout=120)
    with (pg.data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"\nport = {port}\nlisten_addresses = ''\nunix_socket_directories = '{pg.sock}'\n"
            "fsync = off\n"
        )
        conf.write(paths["conf"].read_text())
    pg.start()
    assert pg.sql("SHOW archive_mode") == "on"
    pg.sql("CREATE TABLE drill (id int PRIMARY KEY, batch text NOT NULL)")
    pg.sql("INSERT INTO drill SELECT g, 'A' FROM generate_series(1, 100) g")

    backup = run_script(paths, "backup")
    assert backup.returncode == 0, backup.stdout + backup.stderr
    base = root / "backups" / "base"
    [first] = [p.name for p in base.iterdir()]
    assert re.fullmatch(r"\d{8}T\d{6}Z", first)
    assert (base / first / "data" / "backup_manifest").exists()
    end_epoch = int((root / "backups" / postgres.LAST_SUCCESS).read_text())
    metric = (root / "textfile" / postgres.METRIC_FILE).read_text()
    assert (
        f'citadel_backup_last_success_timestamp_seconds{{kind="postgres_base"}} {end_epoch}\n'
        in metric
    )
    t_backup = time.monotonic() - t0

    pg.sql("INSERT INTO drill SELECT g, 'B' FROM generate_series(101, 150) g")
    time.sleep(1.1)
    target = pg.sql("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || '+00'")
    time.sleep(1.1)
    pg.sql("INSERT INTO drill SELECT g, 'C' FROM generate_series(151, 200) g")
    segment = pg.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
    pg.sql("SELECT pg_switch_wal()")
    wait_archived(pg, segment)
    assert pg.sql("SELECT failed_count FROM pg_stat_archiver") == "0"

    pg.stop("immediate")  # the host dies ...
    shutil.rmtree(pg.data)  # ... and its data with it
    t1 = time.monotonic()
    restore = run_script(paths, "restore", "--target-time", target)
    assert restore.returncode == 0, restore.stdout + restore.stderr
    t_restore = time.monotonic() - t1
    assert f"from {first}" in restore.stdout
    assert pg.sql("SELECT pg_is_in_recovery()") == "f"
    assert pg.sql(
        "SELECT batch || ':' || count(*) || ':' || min(id) || '-' || max(id) "
        "FROM drill GROUP BY batch ORDER BY batch"
    ).split() == ["A:100:1-100", "B:50:101-150"]
    # The recovery settings are gone from the config again (they apply at the next start,
    # which then is a normal one); the promoted cluster writes.
    auto = (pg.data / "postgresql.auto.conf").read_text()
    assert "recovery_target" not in auto and "restore_command" not in auto
    assert not (pg.data / "recovery.signal").exists()
    pg.sql("INSERT INTO drill VALUES (201, 'after-restore')")

    # Retention: two more base backups with keep=2 leave the newest two, and the archive no
    # WAL older than the oldest kept backup's start.
    for _ in range(2):
        time.sleep(1.05)  # stamps have second resolution
        again = run_script(paths, "backup")
        assert again.returncode == 0, again.stdout + again.stderr
    kept = sorted(p.name for p in base.iterdir())
    assert len(kept) == 2 and first not in kept
    label = (base / kept[0] / "data" / "backup_label").read_text()
    start_wal = re.search(r"START WAL LOCATION: .* \(file ([0-9A-F]{24})\)", label)
    assert start_wal
    segments = [
        p.name
        for p in (root / "backups" / "wal").iterdir()
        if re.fullmatch(r"[0-9A-F]{24}", p.name)
    ]
    assert segments and all(s[8:] >= start_wal.group(1)[8:] for s in segments)
    pg.stop()
    print(
        f"\ndrill: backup {t_backup:.1f}s, restore {t_restore:.1f}s, "
        f"total {time.monotonic() - t0:.1f}s"
    )


@needs_postgres
def test_restore_refuses_bad_targets(lab: Cluster, drill_root: Path) -> None:
    paths = install_rendered(lab, drill_root, free_port(), keep=2)
    for bad, why in (
        ("2024-01-01 10:00:00", "with a zone"),
        ("yesterday", "with a zone"),
        ("2999-01-01 00:00:00+00", "in the future"),
        ("2024-01-01 10:00:00+00", "no base backup"),
    ):
        proc = run_script(paths, "restore", "--target-time", bad)
        assert proc.returncode != 0 and why in proc.stderr, (bad, proc.stderr)
    assert run_script(paths, "restore").returncode != 0
