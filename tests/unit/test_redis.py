"""redis: redis.conf rendered from the model and checked by redis-server itself (the same checker
the deploy runs before the file goes live); the exporter's least-privilege credentials."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from citadel.components import redis
from citadel.loader import load_cluster
from citadel.model.cluster import Cluster
from citadel.render import HostView, component_files
from citadel.rotation_state import Entry
from citadel.secrets import MaskedSecrets, SecretStore

ROOT = Path(__file__).resolve().parents[2]
SECRETS = SecretStore({"redis_password": "doc-Pass-1", "redis_exporter_password": "exp-Pass-2"})


@pytest.fixture(scope="module", params=["inventory/production.yml", "inventory/lab.yml"])
def cluster(request: pytest.FixtureRequest) -> Cluster:
    return load_cluster(ROOT / request.param).cluster


def rendered(cluster: Cluster, cfg: redis.Config | None = None, section: str = "redis"):
    host = cluster.host("data")
    view = HostView(cluster, host, SECRETS)
    config = cfg or getattr(host, section)
    return {f.spec.dest: f for f in component_files(section, view, config)}


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out.setdefault(key, []).append(value)
    return out


def test_bind_memory_and_policy_from_model(cluster: Cluster) -> None:
    host = cluster.host("data")
    cfg = host.redis
    assert cfg is not None
    conf = directives(rendered(cluster)[redis.CONF].content)
    assert conf["bind"] == [f"{host.address} 127.0.0.1 -::1"]
    assert conf["port"] == [str(cfg.port)]
    assert conf["maxmemory"] == [cfg.maxmemory]
    assert conf["maxmemory-policy"] == ["allkeys-lru"]
    assert conf["protected-mode"] == ["yes"]


@pytest.mark.parametrize(
    ("persistence", "save", "aof"),
    [("rdb", "3600 1 300 100 60 10000", "no"), ("aof", '""', "yes"), ("none", '""', "no")],
)
def test_persistence_from_model(cluster: Cluster, persistence: str, save: str, aof: str) -> None:
    cfg = redis.Config(persistence=persistence)
    conf = directives(rendered(cluster, cfg)[redis.CONF].content)
    assert conf["save"] == [save]
    assert conf["appendonly"] == [aof]


def digest(password: str) -> str:
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def acl(text: str) -> dict[str, list[str]]:
    """user name -> its rules, from an ACL file (which holds nothing but `user` lines)."""
    lines = text.splitlines()
    assert all(line.startswith("user ") for line in lines), lines
    return {line.split()[1]: line.split()[2:] for line in lines}


def test_acl_users_hold_hashes_not_passwords(cluster: Cluster) -> None:
    files = rendered(cluster)
    f = files[redis.ACLFILE]
    assert f.spec.secret and f.spec.mode == "0640" and f.spec.group == "redis"
    assert f.spec.on_change == "reload"  # ACL LOAD: a changed password restarts nothing
    assert f.spec.validate == f"{redis.CHECKCONF} --acl {{path}}"
    for other in files.values():
        assert "doc-Pass-1" not in other.content or other.spec.dest == redis.PASSWORD_FILE
        assert "exp-Pass-2" not in other.content
    conf = directives(files[redis.CONF].content)
    assert conf["aclfile"] == [redis.ACLFILE] and "user" not in conf and "requirepass" not in conf
    users = acl(f.content)
    assert users["default"] == ["reset", "on", digest("doc-Pass-1"), "~*", "&*", "+@all"]
    exporter = users[redis.EXPORTER_USER]
    assert exporter[:3] == ["reset", "on", digest("exp-Pass-2")]
    assert "-@all" in exporter and "resetkeys" in exporter and "+@all" not in exporter
    # the ACL file before redis.conf, which names it (its check and a start read it)
    order = list(files)
    assert order.index(redis.ACLFILE) < order.index(redis.CONF)


def _rotating(stage: str) -> SecretStore:
    """redis_password rotated from doc-Pass-1 to new-Pass-3, at ``stage``."""
    return SecretStore(
        {"redis_password": "new-Pass-3", "redis_exporter_password": "exp-Pass-2"},
        rotations={"redis_password": Entry(stage, previous="doc-Pass-1")},  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("stage", "accepted", "presented"),
    [
        ("accept", ["new-Pass-3", "doc-Pass-1"], "doc-Pass-1"),
        ("switch", ["new-Pass-3", "doc-Pass-1"], "new-Pass-3"),
        ("retire", ["new-Pass-3"], "new-Pass-3"),
    ],
)
def test_a_rotation_renders_both_digests_until_retired(
    cluster: Cluster, stage: str, accepted: list[str], presented: str
) -> None:
    host = cluster.host("data")
    view = HostView(cluster, host, _rotating(stage))
    files = {f.spec.dest: f for f in component_files("redis", view, host.redis)}  # type: ignore[arg-type]
    default = acl(files[redis.ACLFILE].content)["default"]
    assert [r for r in default if r.startswith("#")] == [digest(p) for p in accepted]
    # the exporter's user is not rotated: one digest
    exporter = acl(files[redis.ACLFILE].content)[redis.EXPORTER_USER]
    assert [r for r in exporter if r.startswith("#")] == [digest("exp-Pass-2")]
    # the host's own client credential (ACL LOAD, the backup) moves at switch
    assert files[redis.PASSWORD_FILE].content == presented + "\n"
    for f in files.values():
        assert "doc-Pass-1" not in f.content or f.spec.dest == redis.PASSWORD_FILE


def test_config_is_validated_before_going_live(cluster: Cluster) -> None:
    f = rendered(cluster)[redis.CONF]
    assert f.spec.validate == f"{redis.CHECKCONF} {{path}}"


def test_exporter_env_file(cluster: Cluster) -> None:
    host = cluster.host("data")
    f = next(iter(rendered(cluster, section="redis_exporter").values()))
    assert f.spec.secret and f.spec.mode == "0600"
    assert f'REDIS_USER="{redis.EXPORTER_USER}"' in f.content
    assert 'REDIS_PASSWORD="exp-Pass-2"' in f.content
    assert f"--web.listen-address={host.address}:9121" in f.content


def test_masked_preview_has_no_secret(cluster: Cluster) -> None:
    host = cluster.host("data")
    view = HostView(cluster, host, MaskedSecrets())
    for f in component_files("redis_exporter", view, host.redis_exporter):  # type: ignore[arg-type]
        assert "exp-Pass-2" not in f.content


@pytest.fixture
def checker(cluster: Cluster) -> Iterator[Path]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed here")
    d = Path(tempfile.mkdtemp(prefix="citadel-redis-"))
    script = d / "redis-checkconf"
    script.write_text(rendered(cluster)[redis.CHECKCONF].content)
    script.chmod(0o755)
    yield script
    shutil.rmtree(d, ignore_errors=True)


def _candidate(cluster: Cluster, checker: Path, text: str | None = None) -> Path:
    content = text if text is not None else rendered(cluster)[redis.CONF].content
    # `dir` must exist where the check runs (the host has /var/lib/redis), and the ACL file the
    # deploy writes first; the rest is verbatim.
    content = content.replace("dir /var/lib/redis", f"dir {checker.parent}")
    users = checker.parent / "users.acl"
    users.write_text(rendered(cluster)[redis.ACLFILE].content)
    content = content.replace(f"aclfile {redis.ACLFILE}", f"aclfile {users}")
    path = checker.parent / "candidate.conf"
    path.write_text(content)
    return path


def test_rendered_config_passes_redis_server(cluster: Cluster, checker: Path) -> None:
    r = subprocess.run(
        [str(checker), str(_candidate(cluster, checker))],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    "breakage",
    ["maxmemory 12parsecs\n", "no-such-directive yes\n", "requirepass x\nuser x on\n"],
)
def test_broken_config_fails_without_printing_the_line(
    cluster: Cluster, checker: Path, breakage: str
) -> None:
    text = rendered(cluster)[redis.CONF].content + breakage
    r = subprocess.run(
        [str(checker), str(_candidate(cluster, checker, text))],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode != 0
    assert ">>>" not in r.stderr
    assert hashlib.sha256(b"doc-Pass-1").hexdigest() not in r.stderr
    assert os.path.exists(checker)


def _check_acl(checker: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = checker.parent / "candidate.acl"
    path.write_text(text)
    return subprocess.run(
        [str(checker), "--acl", str(path)], capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize("stage", ["accept", "retire"])
def test_rendered_acl_file_passes_redis_server(cluster: Cluster, checker: Path, stage: str) -> None:
    host = cluster.host("data")
    view = HostView(cluster, host, _rotating(stage))
    [f] = [f for f in component_files("redis", view, host.redis) if f.spec.dest == redis.ACLFILE]  # type: ignore[arg-type]
    r = _check_acl(checker, f.content)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    "breakage",
    ["user broken on #abc ~* +@all\n", "# a comment: not in an ACL file\n", "requirepass x\n"],
)
def test_broken_acl_file_fails_without_printing_the_line(
    cluster: Cluster, checker: Path, breakage: str
) -> None:
    """redis-server loads an ACL file after it listens: the check waits for it to serve."""
    r = _check_acl(checker, rendered(cluster)[redis.ACLFILE].content + breakage)
    assert r.returncode != 0
    assert hashlib.sha256(b"doc-Pass-1").hexdigest() not in r.stderr
