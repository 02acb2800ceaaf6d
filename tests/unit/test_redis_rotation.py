"""redis_password rotated against a real redis-server: the users file citadel renders at each
stage, loaded with the deploy's own ACL LOAD command (its password from the root-only file,
never an argument). The server never restarts; a connection that authenticated before keeps
working; both passwords authenticate from accept to retire, the new one only after."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from citadel.components import redis
from citadel.loader import load_cluster
from citadel.model.cluster import Cluster
from citadel.render import HostView, component_files
from citadel.rotation_state import Entry
from citadel.secrets import SecretStore
from deploys.redis import acl_load_command
from tests.unit.backup_drill import free_port

ROOT = Path(__file__).resolve().parents[2]
OLD, NEW = "old-Pass-1 with $pace", "new-Pass-2"

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("redis-cli") is None,
    reason="redis-server and redis-cli (scripts/bootstrap.sh installs them for tests/gateway)",
)


def store(stage: str | None) -> SecretStore:
    if stage is None:
        return SecretStore({"redis_password": OLD, "redis_exporter_password": "exp-Pass-3"})
    return SecretStore(
        {"redis_password": NEW, "redis_exporter_password": "exp-Pass-3"},
        rotations={"redis_password": Entry(stage, converged=True, previous=OLD)},  # type: ignore[arg-type]
    )


def files(cluster: Cluster, stage: str | None) -> dict[str, str]:
    host = cluster.host("data")
    view = HostView(cluster, host, store(stage))
    return {f.spec.dest: f.content for f in component_files("redis", view, host.redis)}  # type: ignore[arg-type]


class Conn:
    """One RESP connection, as the gateway keeps one."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)

    def call(self, *args: str) -> bytes:
        wire = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        self.sock.sendall(wire.encode())
        return self.sock.recv(4096)

    def close(self) -> None:
        self.sock.close()


def auth(port: int, password: str) -> bytes:
    c = Conn(port)
    try:
        return c.call("AUTH", password)
    finally:
        c.close()


class Server:
    def __init__(self, root: Path, cluster: Cluster):
        self.root, self.port = root, free_port()
        self.acl = root / "users.acl"
        self.password = root / "password"
        self.cluster = cluster
        cfg = cluster.host("data").redis
        assert cfg is not None
        self.cfg = cfg.model_copy(update={"port": self.port})

    def write(self, stage: str | None) -> None:
        f = files(self.cluster, stage)
        self.acl.write_text(f[redis.ACLFILE])
        self.password.write_text(f[redis.PASSWORD_FILE])
        self.password.chmod(0o600)

    def start(self) -> None:
        (self.root / "empty.conf").write_text("")
        self.proc = subprocess.Popen(
            [
                "redis-server",
                str(self.root / "empty.conf"),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--aclfile",
                str(self.acl),
                "--dir",
                str(self.root),
                "--save",
                "",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                if auth(self.port, OLD) == b"+OK\r\n":
                    return
            except OSError:
                pass
            assert time.monotonic() < deadline and self.proc.poll() is None
            time.sleep(0.05)

    def acl_load(self) -> subprocess.CompletedProcess[str]:
        command = acl_load_command(self.cfg).replace(redis.PASSWORD_FILE, str(self.password))
        assert OLD not in command and NEW not in command  # the password is never an argument
        return subprocess.run(
            ["sh", "-c", command], capture_output=True, text=True, timeout=30, check=False
        )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    cluster = load_cluster(ROOT / "inventory" / "lab.yml").cluster
    s = Server(tmp_path, cluster)
    s.write(None)
    s.start()
    yield s
    s.proc.terminate()
    s.proc.wait(timeout=10)


def test_rotation_stages_live_without_a_restart(server: Server) -> None:
    pid = server.proc.pid
    before = Conn(server.port)  # a client that authenticated with the old password
    assert before.call("AUTH", OLD) == b"+OK\r\n"

    server.write("accept")
    r = server.acl_load()
    assert r.returncode == 0, r.stderr
    assert auth(server.port, OLD) == b"+OK\r\n"
    assert auth(server.port, NEW) == b"+OK\r\n"
    assert before.call("PING") == b"+PONG\r\n"

    accept_acl = server.acl.read_text()
    server.write("switch")  # the clients move; the server's file does not change
    assert server.acl.read_text() == accept_acl
    assert server.password.read_text() == NEW + "\n"

    server.write("retire")
    r = server.acl_load()  # authenticated with the new password, from the switched file
    assert r.returncode == 0, r.stderr
    assert auth(server.port, NEW) == b"+OK\r\n"
    assert auth(server.port, OLD).startswith(b"-WRONGPASS")
    assert before.call("PING") == b"+PONG\r\n"  # Redis does not re-check a live connection
    assert server.proc.pid == pid and server.proc.poll() is None
    before.close()


def test_a_refused_acl_load_keeps_the_users_and_says_so(server: Server) -> None:
    server.acl.write_text("user default on #nothex ~* +@all\n")
    r = server.acl_load()
    assert r.returncode != 0 and "ACL LOAD refused" in r.stderr
    assert OLD not in r.stderr
    assert auth(server.port, OLD) == b"+OK\r\n"  # all or nothing: the old users stay


def test_the_password_file_is_root_only() -> None:
    cluster = load_cluster(ROOT / "inventory" / "lab.yml").cluster
    host = cluster.host("data")
    view = HostView(cluster, host, store(None))
    [spec] = [
        f.spec
        for f in component_files("redis", view, host.redis)  # type: ignore[arg-type]
        if f.spec.dest == redis.PASSWORD_FILE
    ]
    assert spec.mode == "0600" and spec.user == "root" and spec.secret
