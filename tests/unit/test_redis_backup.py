"""redis backups: the settings, the rendered files, and the snapshot + restore drill against a REAL
local redis-server (loopback, a temp port and directory, run as `nobody`).

The drill uses the files citadel renders for the lab's data host: redis.conf (its ACL user, its
persistence; only bind, port, dir, pidfile and logfile pointed at the temp directory),
citadel-redis-backup, citadel-redis-restore and backup.env (only the host-specific keys pointed
here: port, no systemd unit, OS user, data directory, password file, target, textfile directory).
It writes keys A, takes a snapshot with the backup script (as the unit runs it: unprivileged, the
password in $CREDENTIALS_DIRECTORY), writes keys B and changes A, restores the snapshot with the
restore script and checks that exactly A is there, also after a restart; then retention. A
redis-cli on PATH that records its arguments proves the password never is one. Skips only when
not root or redis-server is not installed (tests/gateway needs it too).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import deploy_harness as h
import pytest
from backup_drill import free_port, write_pointed
from pydantic import ValidationError

from citadel.components import redis
from citadel.loader import load_cluster
from citadel.model import backup
from citadel.model.cluster import Cluster
from citadel.render import HostView, RenderedFile, component_files, render_host
from citadel.secrets import SecretStore
from deploys import redis as deploy

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "drill-Pass-1 with spaces & $igns"
SECRETS = SecretStore({"redis_password": PASSWORD, "redis_exporter_password": "exp-Pass-2"})
OS_USER = "nobody"
REAL_CLI = shutil.which("redis-cli")
needs_redis = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("redis-server") is None or REAL_CLI is None,
    reason="needs root (the server runs as nobody) and redis-server + redis-tools "
    "(scripts/bootstrap.sh installs them for tests/gateway)",
)


@pytest.fixture(scope="module")
def lab() -> Cluster:
    return load_cluster(ROOT / "inventory" / "lab.yml").cluster


def data_cfg(cluster: Cluster, persistence: str = "rdb", **settings: object) -> redis.Config:
    cfg = cluster.host("data").redis
    assert cfg is not None
    b = cfg.backup.model_copy(update=settings)
    return cfg.model_copy(update={"persistence": persistence, "backup": b})


def rendered(cluster: Cluster, cfg: redis.Config) -> dict[str, RenderedFile]:
    view = HostView(cluster, cluster.host("data"), SECRETS)
    return {f.spec.dest: f for f in component_files("redis", view, cfg)}


# -- settings and files -----------------------------------------------------------------------


def test_backup_defaults() -> None:
    b = redis.Backup()
    assert b.enabled and b.target == "/var/backups/citadel/redis"
    assert (b.schedule, b.keep_snapshots, b.stale_after_hours) == ("*-*-* *:15:00", 48, 6)
    assert (b.KIND, b.ALERT) == ("redis_rdb", "RedisBackupStale")


@pytest.mark.parametrize(
    "field,value",
    [
        ("target", "relative/dir"),
        ("target", "/var/lib/redis/backups"),
        ("target", "/var/lib/redis"),
        ("target", "/backups"),
        ("target", "/etc/redis/backups"),
        ("target", "/var/backups/../etc"),
        ("schedule", "hourly; rm -rf /"),
        ("keep_snapshots", 0),
        ("stale_after_hours", 0),
    ],
)
def test_backup_settings_are_validated(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        redis.Backup.model_validate({field: value})


def test_backup_files_render(lab: Cluster) -> None:
    cfg = data_cfg(lab, target="/srv/backup/redis", keep_snapshots=5)
    f = rendered(lab, cfg)
    env = f[redis.BACKUP_ENV].content
    for line in (
        "REDIS_HOST=127.0.0.1",
        f"REDIS_PORT={cfg.port}",
        "REDIS_PERSISTENCE=rdb",
        "REDIS_SERVICE=redis-server",
        "REDIS_DIR=/var/lib/redis",
        "REDIS_DBFILENAME=dump.rdb",
        f"REDIS_PASSWORD_FILE={redis.PASSWORD_FILE}",
        "BACKUP_TARGET=/srv/backup/redis",
        "KEEP_SNAPSHOTS=5",
        "TEXTFILE_DIR=/var/lib/prometheus/node-exporter",
    ):
        assert f"\n{line}\n" in env, line
    # The data directory and file names are the ones redis.conf sets.
    conf = f[redis.CONF].content
    assert "\ndir /var/lib/redis\n" in conf and "\ndbfilename dump.rdb\n" in conf
    password = f[redis.PASSWORD_FILE]
    assert password.spec.secret and password.spec.mode == "0600" and password.spec.user == "root"
    assert password.content == PASSWORD + "\n"
    for dest, other in f.items():
        if dest != redis.PASSWORD_FILE:
            assert PASSWORD not in other.content, dest
    for script in (redis.BACKUP_SCRIPT, redis.RESTORE_SCRIPT):
        assert f[script].spec.mode == "0755" and f[script].spec.validate == "bash -n {path}"
        check = subprocess.run(["bash", "-n"], input=f[script].content, text=True)
        assert check.returncode == 0, script
        assert " -a " not in f[script].content and "--pass" not in f[script].content
    unit = f[redis.BACKUP.service_file].content
    for line in (
        "User=redis",
        "Requisite=redis-server.service",
        "After=redis-server.service",
        f"LoadCredential=redis_password:{redis.PASSWORD_FILE}",
        f"ExecStart={redis.BACKUP_SCRIPT}",
        f"ExecStartPost=+{redis.BACKUP_SCRIPT} --publish-metric",
        "ReadWritePaths=/srv/backup/redis",
        "RestrictAddressFamilies=AF_UNIX AF_INET",
    ):
        assert f"\n{line}\n" in unit, line
    assert "\nRemoveIPC=" not in unit and "\nRequires=" not in unit
    timer = f[redis.BACKUP.timer_file]
    assert "\nOnCalendar=*-*-* *:15:00\n" in timer.content
    assert "\nPersistent=true\n" in timer.content
    assert timer.spec.validate and timer.spec.validate.startswith("systemd-analyze calendar")


def test_only_redis_conf_restarts_the_server(lab: Cluster) -> None:
    """The backup's files are read by no running server: a change to them restarts nothing."""
    f = rendered(lab, data_cfg(lab))
    restart = {d for d, r in f.items() if r.spec.on_change == "restart"}
    assert restart == {redis.CHECKCONF, redis.CONF}
    assert {d for d, r in f.items() if r.spec.on_change == "reload"} == {redis.ACLFILE}


def test_disabled_backups_render_nothing(lab: Cluster) -> None:
    """Only the server's files, and the password file the deploy's ACL LOAD authenticates with."""
    f = rendered(lab, data_cfg(lab, enabled=False))
    assert set(f) == {redis.CHECKCONF, redis.ACLFILE, redis.CONF, redis.PASSWORD_FILE}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze absent")
def test_timer_validation_refuses_a_bad_calendar(lab: Cluster) -> None:
    def check(schedule: str) -> int:
        spec = rendered(lab, data_cfg(lab, schedule=schedule))[redis.BACKUP.timer_file].spec
        assert spec.validate
        return subprocess.run(spec.validate.format(path="/dev/null"), shell=True).returncode

    assert check("*-*-* *:15:00") == 0
    assert check("every tuesday-ish") != 0


def test_the_stale_alert_covers_every_redis_that_backs_up() -> None:
    for inventory in ("lab", "production"):
        cluster = load_cluster(ROOT / "inventory" / f"{inventory}.yml").cluster
        [alerts] = [
            f.content
            for f in render_host(cluster, cluster.host("monitoring"))
            if f.spec.dest.endswith("citadel-alerts.yml")
        ]
        assert "- alert: RedisBackupStale" in alerts
        assert f'time() - {backup.METRIC}{{kind="redis_rdb", host="data"}} > {6 * 3600}\n' in alerts
        assert f'or absent({backup.METRIC}{{kind="redis_rdb", host="data"}})' in alerts
        assert "- alert: PostgresBackupStale" in alerts


# -- the drill against a real redis-server -----------------------------------------------------


class Drill:
    """A private redis-server in `root` on `port`, citadel's scripts pointed at it."""

    def __init__(self, root: Path, port: int, persistence: str, lab: Cluster) -> None:
        self.root, self.port = root, port
        self.data = root / "data"
        self.target = root / "backups"
        self.textfile = root / "textfile"
        self.argv_log = root / "redis-cli-argv.log"
        cfg = data_cfg(lab, persistence, target=str(self.target), keep_snapshots=2)
        f = rendered(lab, cfg)
        for d in (self.data, self.target):
            d.mkdir(mode=0o700)
            shutil.chown(d, OS_USER)
        bin_dir = root / "bin"
        bin_dir.mkdir(mode=0o755)
        self.scripts = {}
        for name, dest in (("backup", redis.BACKUP_SCRIPT), ("restore", redis.RESTORE_SCRIPT)):
            p = bin_dir / Path(dest).name
            p.write_text(f[dest].content)
            p.chmod(0o755)
            self.scripts[name] = p
        # redis-cli on PATH that records its arguments (the password must never be one).
        shim = bin_dir / "redis-cli"
        shim.write_text(f'#!/bin/sh\necho "$*" >>{self.argv_log}\nexec {REAL_CLI} "$@"\n')
        shim.chmod(0o755)
        self.argv_log.touch(mode=0o666)
        self.argv_log.chmod(0o666)
        # redis.conf as rendered, with where it listens and writes pointed here.
        local = {
            "bind": "127.0.0.1",
            "port": str(port),
            "dir": str(self.data),
            "pidfile": str(self.data / "redis.pid"),  # the server's own directory
            "logfile": str(root / "redis.log"),
            "aclfile": str(root / "users.acl"),
        }
        (root / "users.acl").write_text(f[redis.ACLFILE].content)
        (root / "users.acl").chmod(0o644)
        lines = []
        for line in f[redis.CONF].content.splitlines():
            key = line.split(" ", 1)[0]
            lines.append(f"{key} {local[key]}" if key in local else line)
        # No replica waits for this server: start streaming a snapshot at once (default 5 s).
        lines.append("repl-diskless-sync-delay 0")
        self.conf = root / "redis.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.conf.chmod(0o644)
        (root / "redis.log").touch()
        shutil.chown(root / "redis.log", OS_USER)
        # The root-only password file, and the credential the unit would give the backup.
        self.password_file = root / "password"
        self.password_file.write_text(f[redis.PASSWORD_FILE].content)
        self.password_file.chmod(0o600)
        self.creds = root / "credentials"
        self.creds.mkdir(mode=0o700)
        (self.creds / "redis_password").write_text(f[redis.PASSWORD_FILE].content)
        shutil.chown(self.creds, OS_USER)
        shutil.chown(self.creds / "redis_password", OS_USER)
        env = {
            "REDIS_PORT": str(port),
            "REDIS_SERVICE": "",
            "REDIS_CONF": str(self.conf),
            "REDIS_OS_USER": OS_USER,
            "REDIS_DIR": str(self.data),
            "REDIS_PASSWORD_FILE": str(self.password_file),
            "TEXTFILE_DIR": str(self.textfile),
            "RESTORE_TIMEOUT_S": "60",
        }
        self.env = write_pointed(f[redis.BACKUP_ENV].content, env, root / "backup.env")
        self.env.chmod(0o644)

    def start(self) -> None:
        subprocess.run(
            ["runuser", "-u", OS_USER, "--", "redis-server", str(self.conf), "--daemonize", "yes"],
            check=True,
            timeout=30,
        )
        deadline = time.monotonic() + 20
        while self.cli("PING", check=False) != "PONG":
            assert time.monotonic() < deadline, (self.root / "redis.log").read_text()[-2000:]
            time.sleep(0.1)

    def cli(self, *args: str, check: bool = True) -> str:
        assert REAL_CLI is not None
        proc = subprocess.run(
            [REAL_CLI, "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "REDISCLI_AUTH": PASSWORD},
        )
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    def pipe(self, commands: str) -> None:
        assert REAL_CLI is not None
        subprocess.run(
            [REAL_CLI, "-h", "127.0.0.1", "-p", str(self.port)],
            input=commands,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env={**os.environ, "REDISCLI_AUTH": PASSWORD},
        )

    def run(self, name: str, *args: str, unit: bool = False) -> subprocess.CompletedProcess[str]:
        """A script as root, or (unit=True) as the unit runs the backup: as the server's user,
        the password only in $CREDENTIALS_DIRECTORY."""
        env = {
            "PATH": f"{self.root / 'bin'}:{os.environ['PATH']}",
            "CITADEL_BACKUP_ENV": str(self.env),
        }
        command = [str(self.scripts[name]), *args]
        if unit:
            env["CREDENTIALS_DIRECTORY"] = str(self.creds)
            command = ["runuser", "-u", OS_USER, "--", "env", *(f"{k}={v}" for k, v in env.items())]
            command += [str(self.scripts[name]), *args]
            env = {}
        return subprocess.run(
            command, capture_output=True, text=True, timeout=120, env={**os.environ, **env}
        )

    def snapshots(self) -> list[str]:
        return sorted(p.name for p in self.target.iterdir() if p.name.endswith(".rdb"))

    def keys(self) -> dict[str, str]:
        """What the drill wrote: every drill:N string (nil where absent), the hash, the TTL key
        and how many keys there are (four calls, not one a key)."""
        names = [f"drill:{i}" for i in range(1, 151)]
        values = self.cli("--no-raw", "MGET", *names).splitlines()
        out = {n: v for n, v in zip(names, values, strict=True) if "(nil)" not in v}
        out["drill:session"] = self.cli("HGETALL", "drill:session")
        out["drill:ttl"] = self.cli("GET", "drill:ttl")
        out["dbsize"] = self.cli("DBSIZE")
        return out


@pytest.fixture
def drill_root() -> Iterator[Path]:
    # Not pytest's tmp_path: its parents are 0700 root, and the server runs as nobody.
    root = Path(tempfile.mkdtemp(prefix="citadel-redis-drill-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        pid = root / "data" / "redis.pid"
        if pid.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid.read_text().strip()), 9)
        shutil.rmtree(root, ignore_errors=True)


def batch(name: str, first: int, last: int) -> str:
    return "".join(f"SET drill:{i} {name}{i}\n" for i in range(first, last + 1))


@needs_redis
@pytest.mark.parametrize("persistence", ["rdb", "aof"])
def test_snapshot_and_restore_drill_exact_to_the_key(
    lab: Cluster, drill_root: Path, persistence: str
) -> None:
    t0 = time.monotonic()
    d = Drill(drill_root, free_port(), persistence, lab)
    d.start()
    assert d.cli("CONFIG", "GET", "appendonly").split()[-1] == (
        "yes" if persistence == "aof" else "no"
    )
    d.pipe(batch("A", 1, 100) + "HSET drill:session last_seen A\nSET drill:ttl A EX 3600\n")
    a = d.keys()
    assert a["dbsize"] == "102" and len(a) == 103

    first = d.run("backup", unit=True)
    assert first.returncode == 0, first.stdout + first.stderr
    [snap] = d.snapshots()
    assert re.fullmatch(r"\d{8}T\d{6}Z\.rdb", snap)
    assert "102 keys" in first.stdout
    assert not [p for p in d.target.iterdir() if p.name.startswith(".partial-")]
    end_epoch = int((d.target / backup.LAST_SUCCESS).read_text())
    assert not (d.textfile / redis.METRIC_FILE).exists()  # unprivileged: no metric ...
    publish = d.run("backup", "--publish-metric")  # ... the unit's ExecStartPost=+ writes it
    assert publish.returncode == 0, publish.stderr
    metric = (d.textfile / redis.METRIC_FILE).read_text()
    assert f'{backup.METRIC}{{kind="redis_rdb"}} {end_epoch}\n' in metric
    t_backup = time.monotonic() - t0

    # After the snapshot: more keys, a changed one, a deleted one.
    d.pipe(batch("B", 101, 150) + "SET drill:1 changed\nDEL drill:2\nHSET drill:session x B\n")
    assert d.keys()["dbsize"] == "151"

    t1 = time.monotonic()
    restore = d.run("restore", str(d.target / snap))
    assert restore.returncode == 0, restore.stdout + restore.stderr
    t_restore = time.monotonic() - t1
    assert "restored 102 keys" in restore.stdout, restore.stdout
    assert d.keys() == a
    assert 0 < int(d.cli("TTL", "drill:ttl")) <= 3600
    aside = "appendonlydir" if persistence == "aof" else "dump.rdb"
    moved = [p.name for p in d.data.iterdir() if ".before-restore-" in p.name]
    assert len(moved) == 1 and moved[0].startswith(f"{aside}.before-restore-"), moved
    for p in d.data.rglob("*"):
        if ".before-restore-" not in str(p):
            assert p.owner() == OS_USER, p

    # It stays restored across a restart (the server persists it as its own data).
    d.cli("SHUTDOWN", check=False)
    time.sleep(0.3)
    d.start()
    assert d.keys() == a

    # The password was never an argument (redis-cli read REDISCLI_AUTH).
    calls = d.argv_log.read_text()
    assert "--rdb" in calls and "PING" in calls
    assert PASSWORD not in calls and hashlib.sha256(PASSWORD.encode()).hexdigest() not in calls
    if persistence == "rdb":
        # Retention: two more snapshots with keep=2 leave the newest two.
        for _ in range(2):
            time.sleep(1.05)  # stamps have second resolution
            again = d.run("backup", unit=True)
            assert again.returncode == 0, again.stdout + again.stderr
        kept = d.snapshots()
        assert len(kept) == 2 and snap not in kept
    print(f"\nredis drill ({persistence}): backup {t_backup:.1f}s, restore {t_restore:.1f}s")


@needs_redis
def test_restore_refuses_a_damaged_snapshot_and_changes_nothing(
    lab: Cluster, drill_root: Path
) -> None:
    d = Drill(drill_root, free_port(), "rdb", lab)
    d.start()
    d.pipe(batch("A", 1, 20))
    done = d.run("backup", unit=True)
    assert done.returncode == 0, done.stderr
    [snap] = d.snapshots()
    damaged = d.root / "damaged.rdb"
    data = bytearray((d.target / snap).read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    d.pipe("SET drill:after yes\n")
    proc = d.run("restore", str(damaged))
    assert proc.returncode != 0 and "failed redis-check-rdb; nothing changed" in proc.stderr
    assert d.cli("GET", "drill:after") == "yes"  # still running, untouched
    assert not [p for p in d.data.iterdir() if ".before-restore-" in p.name]
    usage = d.run("restore")
    assert usage.returncode == 2 and "usage: citadel-redis-restore FILE" in usage.stderr
    assert snap in usage.stderr  # it lists the newest snapshots
    assert d.run("restore", str(d.root / "nope.rdb")).returncode != 0


@needs_redis
def test_backup_fails_loudly_with_a_wrong_password(lab: Cluster, drill_root: Path) -> None:
    d = Drill(drill_root, free_port(), "rdb", lab)
    d.start()
    (d.creds / "redis_password").write_text("not-the-password\n")
    proc = d.run("backup", unit=True)
    assert proc.returncode != 0 and "redis-cli --rdb failed" in proc.stderr
    assert d.snapshots() == [] and not (d.target / backup.LAST_SUCCESS).exists()
    assert "not-the-password" not in proc.stdout + proc.stderr


def test_the_first_snapshot_runs_once() -> None:
    """The converge takes the first snapshot when none has succeeded; then the timer alone."""
    ctx = h.context("inventory/lab.yml", "data")
    cfg = ctx.host.redis
    assert cfg is not None
    facts = {"LinuxDistribution": h.DISTROS["debian13"]}
    assert h.run(deploy.apply, facts, ctx, cfg).has("first Redis snapshot")
    done = {**facts, ("File", f"{cfg.backup.target}/{backup.LAST_SUCCESS}"): {"mode": 644}}
    again = h.run(deploy.apply, done, ctx, cfg)
    assert not again.has("first Redis snapshot") and again.has("citadel-redis-backup.timer")
    off = cfg.model_copy(update={"backup": cfg.backup.model_copy(update={"enabled": False})})
    run = h.run(deploy.apply, facts, ctx, off)
    assert not run.has("Run citadel-redis-backup.timer") and not run.has("first Redis snapshot")
    assert run.has("Restart redis-server")


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
@pytest.mark.parametrize(
    ("inventory", "alert", "kind", "host", "hours", "what"),
    [
        ("lab", "RedisBackupStale", "redis_rdb", "data", 6, "Redis snapshot"),
        ("lab", "PostgresBackupStale", "postgres_base", "data", 36, "PostgreSQL base backup"),
        ("production", "QdrantBackupStale", "qdrant_snapshot", "vector-db", 36, "Qdrant snapshot"),
    ],
)
def test_stale_alerts_fire_when_old_or_absent_and_not_when_fresh(
    tmp_path: Path, inventory: str, alert: str, kind: str, host: str, hours: int, what: str
) -> None:
    """promtool runs the rendered rule: a backup at t=0 is fine until `hours`, then (after the
    30 m `for`) fires; no metric at all fires after 30 m."""
    cluster = load_cluster(ROOT / "inventory" / f"{inventory}.yml").cluster
    [rules] = [
        f.content
        for f in render_host(cluster, cluster.host("monitoring"))
        if f.spec.dest.endswith("citadel-alerts.yml")
    ]
    (tmp_path / "alerts.yml").write_text(rules)
    labels = {"severity": "warning", "kind": kind, "host": host}
    summary = {"summary": f"no {what} on {host} for over {hours} h"}
    minutes = hours * 60
    series = f'{backup.METRIC}{{kind="{kind}", host="{host}"}}'
    test = {
        "rule_files": ["alerts.yml"],
        "evaluation_interval": "5m",
        "tests": [
            {
                "interval": "5m",
                "input_series": [{"series": series, "values": f"0+0x{minutes // 5 + 24}"}],
                "alert_rule_test": [
                    {"eval_time": f"{minutes - 5}m", "alertname": alert, "exp_alerts": []},
                    {"eval_time": f"{minutes + 20}m", "alertname": alert, "exp_alerts": []},
                    {
                        "eval_time": f"{minutes + 40}m",
                        "alertname": alert,
                        "exp_alerts": [{"exp_labels": labels, "exp_annotations": summary}],
                    },
                ],
            },
            {
                "interval": "5m",
                "input_series": [],
                "alert_rule_test": [
                    {"eval_time": "20m", "alertname": alert, "exp_alerts": []},
                    {
                        "eval_time": "40m",
                        "alertname": alert,
                        "exp_alerts": [{"exp_labels": labels, "exp_annotations": summary}],
                    },
                ],
            },
        ],
    }
    (tmp_path / "test.yml").write_text(json.dumps(test))
    r = subprocess.run(
        ["promtool", "test", "rules", str(tmp_path / "test.yml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
