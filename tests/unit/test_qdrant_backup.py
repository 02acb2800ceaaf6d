"""qdrant backups: the settings, the rendered files (production renders them; the lab skips Qdrant
with its declared reason, so there is nothing to render there), and the snapshot + restore
scripts against a fake Qdrant HTTP API (the endpoints they call, the API key enforced): every
collection's snapshot downloaded and checked against the size and sha256 Qdrant reports, the
server's copy deleted, retention, the metric; a bad download or a damaged file never counts or
gets uploaded; the restore uploads each snapshot with priority `snapshot` and its checksum.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import deploy_harness as h
import pytest
from backup_drill import write_pointed
from pydantic import ValidationError

from citadel.components import qdrant
from citadel.loader import load_cluster
from citadel.model import backup
from citadel.model.cluster import Cluster
from citadel.render import HostView, RenderedFile, component_files, render_host
from citadel.secrets import SecretStore
from deploys import qdrant as deploy
from deploys._context import DeployContext

ROOT = Path(__file__).resolve().parents[2]
KEY = "qdrant-Key-1"
SECRETS = SecretStore({"qdrant_api_key": KEY})
# The hosts' interpreter (the scripts' shebang), where there is one here.
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


@pytest.fixture(scope="module")
def production() -> Cluster:
    return load_cluster(ROOT / "inventory" / "production.yml").cluster


def rendered(cluster: Cluster, **settings: object) -> dict[str, RenderedFile]:
    host = cluster.host("vector-db")
    cfg = host.qdrant
    assert cfg is not None
    cfg = cfg.model_copy(update={"backup": cfg.backup.model_copy(update=settings)})
    view = HostView(cluster, host, SECRETS)
    return {f.spec.dest: f for f in component_files("qdrant", view, cfg)}


# -- settings and files -----------------------------------------------------------------------


def test_backup_defaults() -> None:
    b = qdrant.Backup()
    assert b.enabled and b.target == "/var/backups/citadel/qdrant"
    assert (b.schedule, b.keep_snapshots, b.stale_after_hours) == ("*-*-* 03:00:00", 7, 36)
    assert (b.KIND, b.ALERT) == ("qdrant_snapshot", "QdrantBackupStale")


@pytest.mark.parametrize(
    "field,value",
    [
        ("target", "/var/lib/qdrant/snapshots"),
        ("target", "/var/lib/qdrant"),
        ("target", "/backups"),
        ("schedule", "daily && reboot"),
        ("keep_snapshots", 0),
    ],
)
def test_backup_settings_are_validated(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        qdrant.Backup.model_validate({field: value})


def test_production_renders_the_backup(production: Cluster) -> None:
    f = rendered(production, target="/srv/backup/qdrant", keep_snapshots=3)
    env = f[qdrant.BACKUP_ENV].content
    for line in (
        "QDRANT_URL=http://192.168.10.30:6333",
        f"API_KEY_HEADER={qdrant.API_KEY_HEADER}",
        "BACKUP_TARGET=/srv/backup/qdrant",
        "KEEP_SNAPSHOTS=3",
        "TEXTFILE_DIR=/var/lib/prometheus/node-exporter",
    ):
        assert f"\n{line}\n" in env, line
    unit = f[qdrant.BACKUP.service_file].content
    for line in (
        "User=qdrant",
        "Requisite=qdrant.service",
        f"LoadCredential={qdrant.KEY_CREDENTIAL}:{qdrant.API_KEY_HEADER}",
        f"ExecStart={qdrant.BACKUP_SCRIPT}",
        f"ExecStartPost=+{qdrant.BACKUP_SCRIPT} --publish-metric",
        "ReadWritePaths=/srv/backup/qdrant",
    ):
        assert f"\n{line}\n" in unit, line
    assert "\nRemoveIPC=" not in unit and "\nRequires=" not in unit
    assert "\nOnCalendar=*-*-* 03:00:00\n" in f[qdrant.BACKUP.timer_file].content
    for script in (qdrant.BACKUP_SCRIPT, qdrant.RESTORE_SCRIPT):
        spec = f[script].spec
        assert spec.mode == "0755" and spec.validate == qdrant.PYTHON_SYNTAX
        assert spec.on_change == "none"
    assert f[qdrant.BACKUP_SCRIPT].content.replace("-backup", "-restore") == (
        f[qdrant.RESTORE_SCRIPT].content.replace("-backup", "-restore")
    )  # one program, two names
    for dest, other in f.items():
        if dest not in (qdrant.CONFIG, qdrant.API_KEY_HEADER):
            assert KEY not in other.content, dest
    # Only Qdrant's own files restart it.
    assert {d for d, r in f.items() if r.spec.on_change == "restart"} == {
        qdrant.CONFIG,
        qdrant.API_KEY_HEADER,
        qdrant.UNIT,
    }


def test_scripts_pass_the_syntax_check_the_host_runs(production: Cluster, tmp_path: Path) -> None:
    f = rendered(production)
    for script in (qdrant.BACKUP_SCRIPT, qdrant.RESTORE_SCRIPT):
        path = tmp_path / Path(script).name
        path.write_text(f[script].content)
        check = qdrant.PYTHON_SYNTAX.format(path=path)
        assert subprocess.run(check, shell=True).returncode == 0
    path.write_text(f[script].content + "\ndef broken(:\n")
    assert subprocess.run(qdrant.PYTHON_SYNTAX.format(path=path), shell=True).returncode != 0


def test_the_lab_skips_it_with_its_declared_reason() -> None:
    lab = load_cluster(ROOT / "inventory" / "lab.yml").cluster
    host = lab.host("vector-db")
    assert host.qdrant is not None and host.qdrant.skip
    assert "unreachable from the lab" in host.qdrant.skip
    assert not [f for f in render_host(lab, host) if f.component == "qdrant"]
    [alerts] = [
        f.content
        for f in render_host(lab, lab.host("monitoring"))
        if f.spec.dest.endswith("citadel-alerts.yml")
    ]
    assert "QdrantBackupStale" not in alerts


def test_production_alerts_when_the_snapshots_are_stale(production: Cluster) -> None:
    [alerts] = [
        f.content
        for f in render_host(production, production.host("monitoring"))
        if f.spec.dest.endswith("citadel-alerts.yml")
    ]
    assert "- alert: QdrantBackupStale" in alerts
    selector = f'{backup.METRIC}{{kind="qdrant_snapshot", host="vector-db"}}'
    assert f"time() - {selector} > {36 * 3600}\n" in alerts
    assert f"or absent({selector})" in alerts


# -- the scripts against a fake Qdrant ---------------------------------------------------------


class FakeQdrant(ThreadingHTTPServer):
    """The endpoints the scripts call, each behind the API key, in memory."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.collections: dict[str, bytes] = {
            "documents": os.urandom(300_000),
            "my_collection": os.urandom(1234),
        }
        self.snapshots: dict[tuple[str, str], bytes] = {}
        self.uploads: list[tuple[str, dict[str, list[str]], bytes]] = []
        self.deleted: list[str] = []
        self.lie = ""  # "size" or "checksum": what the next snapshot's description gets wrong
        self.keys_seen: set[str] = set()
        self.count = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: FakeQdrant

    def log_message(self, *args: object) -> None:
        pass

    def reply(self, status: int, result: object = None, raw: bytes | None = None) -> None:
        body = raw if raw is not None else json.dumps({"result": result, "status": "ok"}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def route(self, method: str) -> None:
        s = self.server
        s.keys_seen.add(self.headers.get("api-key", ""))
        if self.headers.get("api-key") != KEY:
            return self.reply(401, raw=b"Must provide an API key or an Authorization bearer token")
        url = urllib.parse.urlsplit(self.path)
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
        query = urllib.parse.parse_qs(url.query)
        if method == "GET" and parts == ["collections"]:
            return self.reply(200, {"collections": [{"name": n} for n in s.collections]})
        if len(parts) < 2 or parts[0] != "collections" or parts[1] not in s.collections:
            return self.reply(404, raw=b'{"status": {"error": "Not found"}}')
        name = parts[1]
        if method == "GET" and len(parts) == 2:
            return self.reply(200, {"points_count": len(s.collections[name])})
        if method == "POST" and parts[2:] == ["snapshots"]:
            assert query.get("wait") == ["true"]
            s.count += 1
            snap = f"{name}-{s.count}-2026-01-01-00-00-00.snapshot"
            data = s.collections[name]
            s.snapshots[(name, snap)] = data
            desc = {"name": snap, "size": len(data), "checksum": hashlib.sha256(data).hexdigest()}
            if s.lie == "size":
                desc["size"] += 1
            elif s.lie == "checksum":
                desc["checksum"] = "0" * 64
            return self.reply(200, desc)
        if parts[2:3] == ["snapshots"] and len(parts) == 4 and parts[3] != "upload":
            key = (name, parts[3])
            if key not in s.snapshots:
                return self.reply(404, raw=b"{}")
            if method == "GET":
                return self.reply(200, raw=s.snapshots[key])
            if method == "DELETE":
                del s.snapshots[key]
                s.deleted.append(parts[3])
                return self.reply(200, True)
        if method == "POST" and parts[2:] == ["snapshots", "upload"]:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            boundary = self.headers["Content-Type"].split("boundary=")[1].encode()
            part = body.split(b"--" + boundary)[1]
            head, _, content = part.partition(b"\r\n\r\n")
            assert b'name="snapshot"' in head
            content = content[: -len(b"\r\n")]
            if query.get("checksum") != [hashlib.sha256(content).hexdigest()]:
                return self.reply(400, raw=b'{"status": {"error": "checksum mismatch"}}')
            s.uploads.append((name, query, content))
            s.collections[name] = content
            return self.reply(200, True)
        return self.reply(405, raw=b"{}")

    def do_GET(self) -> None:
        self.route("GET")

    def do_POST(self) -> None:
        self.route("POST")

    def do_DELETE(self) -> None:
        self.route("DELETE")


@pytest.fixture
def fake() -> Iterator[FakeQdrant]:
    server = FakeQdrant()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class Scripts:
    def __init__(self, production: Cluster, root: Path, url: str) -> None:
        self.root = root
        self.target = root / "backups"
        self.textfile = root / "textfile"
        f = rendered(production, target=str(self.target), keep_snapshots=2)
        self.paths = {}
        for name, dest in (("backup", qdrant.BACKUP_SCRIPT), ("restore", qdrant.RESTORE_SCRIPT)):
            p = root / Path(dest).name
            p.write_text(f[dest].content)
            p.chmod(0o755)
            self.paths[name] = p
        self.header = root / "api-key.header"
        self.header.write_text(f[qdrant.API_KEY_HEADER].content)
        self.header.chmod(0o600)
        local = {
            "QDRANT_URL": url,
            "API_KEY_HEADER": str(self.header),
            "TEXTFILE_DIR": str(self.textfile),
        }
        self.env = write_pointed(f[qdrant.BACKUP_ENV].content, local, root / "backup.env")

    def run(self, name: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, str(self.paths[name]), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "CITADEL_BACKUP_ENV": str(self.env), **env},
        )

    def backups(self) -> list[str]:
        if not self.target.exists():
            return []
        return sorted(
            p.name for p in self.target.iterdir() if re.fullmatch(r"\d{8}T\d{6}Z", p.name)
        )


def test_backup_downloads_checks_and_keeps_every_collection(
    production: Cluster, tmp_path: Path, fake: FakeQdrant
) -> None:
    s = Scripts(production, tmp_path, fake.url)
    proc = s.run("backup")
    assert proc.returncode == 0, proc.stderr
    [stamp] = s.backups()
    d = s.target / stamp
    assert sorted(p.name for p in d.iterdir()) == [
        "citadel-backup.info",
        "documents.snapshot",
        "documents.snapshot.sha256",
        "my_collection.snapshot",
        "my_collection.snapshot.sha256",
    ]
    for name, data in fake.collections.items():
        assert (d / f"{name}.snapshot").read_bytes() == data
        digest = hashlib.sha256(data).hexdigest()
        assert (d / f"{name}.snapshot.sha256").read_text() == f"{digest}  {name}.snapshot\n"
        assert (
            f"collection={name} size={len(data)} sha256={digest}"
            in (d / "citadel-backup.info").read_text()
        )
    assert fake.snapshots == {} and len(fake.deleted) == 2  # the server's copies are gone
    assert fake.keys_seen == {KEY}
    assert "2 collections (documents, my_collection)" in proc.stdout
    end = int((s.target / backup.LAST_SUCCESS).read_text())
    metric = (s.textfile / qdrant.METRIC_FILE).read_text()
    assert f'{backup.METRIC}{{kind="qdrant_snapshot"}} {end}\n' in metric
    assert KEY not in proc.stdout + proc.stderr

    # Retention: two more with keep=2 leave the newest two.
    for _ in range(2):
        time.sleep(1.05)  # stamps have second resolution
        assert s.run("backup").returncode == 0
    kept = s.backups()
    assert len(kept) == 2 and stamp not in kept
    assert not [p for p in s.target.iterdir() if p.name.startswith(".partial-")]


def test_the_key_comes_from_the_units_credential(
    production: Cluster, tmp_path: Path, fake: FakeQdrant
) -> None:
    s = Scripts(production, tmp_path, fake.url)
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / qdrant.KEY_CREDENTIAL).write_text(s.header.read_text())
    s.header.unlink()  # the unit's user could not read the root-only file anyway
    proc = s.run("backup", CREDENTIALS_DIRECTORY=str(creds))
    assert proc.returncode == 0, proc.stderr
    assert len(s.backups()) == 1


@pytest.mark.parametrize("lie", ["size", "checksum"])
def test_a_download_that_does_not_match_never_counts(
    production: Cluster, tmp_path: Path, fake: FakeQdrant, lie: str
) -> None:
    s = Scripts(production, tmp_path, fake.url)
    fake.lie = lie
    proc = s.run("backup")
    assert proc.returncode == 1
    expected = "bytes, Qdrant reported" if lie == "size" else "sha256 "
    assert "Qdrant reported" in proc.stderr and expected in proc.stderr, proc.stderr
    assert s.backups() == [] and not (s.target / backup.LAST_SUCCESS).exists()
    assert [p.name for p in s.target.iterdir()] == []  # no partial left either
    assert fake.snapshots == {}  # the server's copy is deleted all the same


def test_a_wrong_key_fails_without_showing_it(
    production: Cluster, tmp_path: Path, fake: FakeQdrant
) -> None:
    s = Scripts(production, tmp_path, fake.url)
    s.header.write_text("api-key: not-the-key\n")
    proc = s.run("backup")
    assert proc.returncode == 1 and "HTTP 401" in proc.stderr
    assert "not-the-key" not in proc.stdout + proc.stderr
    assert s.backups() == []


def test_restore_uploads_each_snapshot_with_its_checksum(
    production: Cluster, tmp_path: Path, fake: FakeQdrant
) -> None:
    s = Scripts(production, tmp_path, fake.url)
    assert s.run("backup").returncode == 0
    [stamp] = s.backups()
    before = dict(fake.collections)
    fake.collections = {n: b"lost" for n in before}  # the data is gone

    proc = s.run("restore", str(s.target / stamp))
    assert proc.returncode == 0, proc.stderr
    assert fake.collections == before
    assert [u[0] for u in fake.uploads] == ["documents", "my_collection"]
    for _name, query, content in fake.uploads:
        assert query["priority"] == ["snapshot"] and query["wait"] == ["true"]
        assert query["checksum"] == [hashlib.sha256(content).hexdigest()]
    assert f"documents: recovered from {s.target / stamp / 'documents.snapshot'}" in proc.stdout

    # One file into another collection (--collection).
    one = s.target / stamp / "my_collection.snapshot"
    fake.collections["copy"] = b""
    proc = s.run("restore", str(one), "--collection", "copy")
    assert proc.returncode == 0, proc.stderr
    assert fake.collections["copy"] == before["my_collection"]


def test_restore_refuses_a_damaged_file_and_uploads_nothing(
    production: Cluster, tmp_path: Path, fake: FakeQdrant
) -> None:
    s = Scripts(production, tmp_path, fake.url)
    assert s.run("backup").returncode == 0
    [stamp] = s.backups()
    snap = s.target / stamp / "documents.snapshot"
    data = bytearray(snap.read_bytes())
    data[100] ^= 0xFF
    snap.write_bytes(bytes(data))
    proc = s.run("restore", str(s.target / stamp))
    assert proc.returncode == 1 and "documents.snapshot.sha256 says" in proc.stderr
    assert fake.uploads == []
    usage = s.run("restore")
    assert usage.returncode == 1 and "usage: citadel-qdrant-restore PATH" in usage.stderr
    assert s.run("restore", str(tmp_path / "nothing-here")).returncode == 1


# -- the deploy --------------------------------------------------------------------------------


def _configure_and_back_up(ctx: DeployContext, cfg: qdrant.Config) -> None:
    deploy.backup_timer(ctx, cfg, deploy.configure(ctx, cfg))


def test_the_deploy_runs_the_timer_and_the_first_backup_once() -> None:
    ctx = h.context("inventory/production.yml", "vector-db")
    cfg = ctx.host.qdrant
    assert cfg is not None
    facts: dict[object, object] = {}
    run = h.run(_configure_and_back_up, facts, ctx, cfg)
    names = [op.name for op in run.ops if op.name.startswith("qdrant: backup |")]
    assert names == [
        "qdrant: backup | qdrant: backup directory /var/backups/citadel/qdrant",
        "qdrant: backup | Reload systemd units (citadel-qdrant-backup)",
        "qdrant: backup | Run citadel-qdrant-backup.timer (qdrant.backup.schedule)",
        "qdrant: backup | qdrant: first Qdrant snapshot (none yet; the timer takes over)",
    ]
    assert run.op("Reload systemd units (citadel-qdrant-backup)").conditional
    assert "chown qdrant:qdrant" in run.op("backup directory").text()
    # Once a snapshot has succeeded, the timer alone takes them.
    done = {("File", f"{cfg.backup.target}/{backup.LAST_SUCCESS}"): {"mode": 644}}
    again = h.run(_configure_and_back_up, done, ctx, cfg)
    assert not again.has("first Qdrant snapshot")
    off = cfg.model_copy(update={"backup": cfg.backup.model_copy(update={"enabled": False})})
    assert not h.run(_configure_and_back_up, facts, ctx, off).has("qdrant: backup |")
