"""Fixtures for the gateway tests: a real redis-server, a fake OpenAI backend, gateways.

Everything listens on 127.0.0.1 and every key is generated at test time.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ROOT = Path(__file__).resolve().parents[2]
GW_SRC = ROOT / "services" / "gateway"
if str(GW_SRC) not in sys.path:
    sys.path.insert(0, str(GW_SRC))

from citadel_gateway.devtoken import mint  # noqa: E402

ISS = "https://clerk.test.local"
AZP = "http://webui.test.local"
HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.gateway


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(fn: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# ----------------------------------------------------------------------------- keys & tokens
@dataclass
class Keys:
    dir: Path
    rsa1: bytes
    rsa2: bytes
    ec1: bytes
    rsa1_pub: Path
    jwks_file: Path

    def jwk(self, pem: bytes, kid: str) -> dict[str, Any]:
        key = serialization.load_pem_private_key(pem, password=None)
        pub = key.public_key()
        if isinstance(pub, rsa.RSAPublicKey):
            d = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(pub))
            d["alg"] = "RS256"
        else:
            assert isinstance(pub, ec.EllipticCurvePublicKey)
            d = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(pub))
            d["alg"] = "ES256"
        d["kid"] = kid
        d["use"] = "sig"
        return d

    def write_jwks(self, *pairs: tuple[bytes, str]) -> None:
        doc = {"keys": [self.jwk(pem, kid) for pem, kid in pairs]}
        tmp = self.jwks_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.jwks_file)


def _pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gw")


@pytest.fixture(scope="session")
def keys(workdir: Path) -> Keys:
    r1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    r2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    e1 = ec.generate_private_key(ec.SECP256R1())
    pub = workdir / "rsa1.pub.pem"
    pub.write_bytes(
        r1.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    k = Keys(workdir, _pem(r1), _pem(r2), _pem(e1), pub, workdir / "jwks.json")
    k.write_jwks((k.rsa1, "k1"), (k.ec1, "e1"))
    return k


class Tokens:
    def __init__(self, keys: Keys):
        self.keys = keys

    def __call__(
        self,
        sub: str | None = None,
        *,
        key: bytes | None = None,
        kid: str | None = "k1",
        iss: str = ISS,
        azp: str | None = AZP,
        ttl: int = 600,
        now: int | None = None,
        perms: list[str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        return mint(
            key or self.keys.rsa1,
            sub or "user_" + uuid.uuid4().hex[:12],
            iss,
            azp=azp,
            kid=kid,
            ttl_s=ttl,
            permissions=perms,
            extra=extra,
            now=now,
        )

    def headers(self, sub: str | None = None, **kw: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self(sub, **kw)}"}


@pytest.fixture(scope="session")
def token(keys: Keys) -> Tokens:
    return Tokens(keys)


# ----------------------------------------------------------------------------- redis & backend
@contextmanager
def running_redis(d: Path, *extra: str) -> Iterator[int]:
    """A redis-server on 127.0.0.1 (no persistence) for the block; yields its port. It counts as
    up when it answers PING at all (``+PONG``, or ``-NOAUTH`` when ``extra`` sets a password)."""
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    d.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(d),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def answers() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))

    try:
        wait_until(answers, 10, "redis-server")
        yield port
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def redis_server(workdir: Path) -> Iterator[str]:
    with running_redis(workdir / "redis") as port:
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture(scope="session")
def backend(keys: Keys, workdir: Path) -> Iterator[str]:
    port = free_port()
    log = open(workdir / "backend.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "fakebackend.py"), str(port), str(keys.jwks_file)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(url + "/v1/models").status_code == 200, 20, "fake backend")
        yield url
    finally:
        _stop(proc)
        log.close()


def backend_state(backend: str) -> dict[str, Any]:
    return dict(httpx.get(backend + "/_state").json())


# ----------------------------------------------------------------------------- gateways
@dataclass
class Gw:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    config_path: Path
    cfg: dict[str, Any]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kw.pop("timeout", 15), **kw)

    def stop(self) -> None:
        _stop(self.proc)


def base_config(backend: str, redis_url: str, keys: Keys, **over: Any) -> dict[str, Any]:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    cfg: dict[str, Any] = {
        "models": {
            "llama-3-chat": {"kind": "chat", "backends": [backend + "/v1"], "timeout_s": 10},
            "llama-3-instruct": {"kind": "completions", "backends": [backend + "/v1"]},
            "llama-3-embeddings": {"kind": "embeddings", "backends": [backend + "/v1"]},
            "slow-chat": {"kind": "chat", "backends": [backend + "/v1"], "timeout_s": 0.5},
            "slow-instruct": {"kind": "completions", "backends": [backend + "/v1"]},
            "dead-chat": {"kind": "chat", "backends": [dead]},
            "fail-chat": {"kind": "chat", "backends": [backend + "/v1"]},
            "mixed-chat": {"kind": "chat", "backends": [dead, backend + "/v1"]},
        },
        "upstream": {"breaker_failures": 3, "breaker_open_s": 30, "retries": 1},
        "qdrant": {"url": backend, "api_key_file": str(keys.dir / "qdrant.key")},
        "postgres": {"host": "127.0.0.1", "port": free_port()},
        "redis": {"url": redis_url, "socket_timeout_ms": 200},
        "auth": {
            "jwks_url": backend + "/jwks.json",
            "jwks_min_refetch_s": 1,
            "issuers": [ISS],
            "authorized_parties": [AZP],
            "leeway_s": 2,
            "route_permissions": {"/collections/*": "vector:search"},
        },
        "metrics": {"allow": ["127.0.0.1/32"]},
        "health": {
            "interval_s": 1,
            "timeout_s": 1,
            "services": {
                "llama_chat": {"probe": "model", "model": "llama-3-chat"},
                "llama_instruct": {"probe": "model", "model": "llama-3-instruct"},
                "embeddings": {"probe": "model", "model": "llama-3-embeddings"},
                "vector_db": {"probe": "qdrant"},
                "database": {"probe": "postgres"},
            },
        },
    }
    (keys.dir / "qdrant.key").write_text("qdrant-secret-key\n")
    for k, v in over.items():
        cfg[k] = v
    return cfg


class GatewayFactory:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.started: list[Gw] = []

    def write(self, cfg: dict[str, Any], name: str) -> Path:
        path = self.workdir / f"{name}.yml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def __call__(self, cfg: dict[str, Any], name: str, wait: bool = True) -> Gw:
        cfg = copy.deepcopy(cfg)
        port = free_port()
        cfg.setdefault("listen", {})
        cfg["listen"].update({"host": "127.0.0.1", "port": port})
        path = self.write(cfg, name)
        log_path = self.workdir / f"{name}.log"
        env = dict(os.environ, PYTHONPATH=str(GW_SRC))
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "citadel_gateway", "--config", str(path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        gw = Gw(f"http://127.0.0.1:{port}", proc, log_path, path, cfg)
        self.started.append(gw)
        if wait:

            def up() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError(f"gateway exited {proc.returncode}: {gw.log()[-2000:]}")
                return httpx.get(gw.url + "/health", timeout=2).status_code == 200

            deadline = time.monotonic() + 30
            while True:
                try:
                    if up():
                        break
                except RuntimeError:
                    raise
                except Exception:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"gateway {name} did not start: {gw.log()[-2000:]}")
                time.sleep(0.1)
        return gw

    def stop_all(self) -> None:
        for gw in self.started:
            gw.stop()


@pytest.fixture(scope="session")
def gateways(workdir: Path) -> Iterator[GatewayFactory]:
    f = GatewayFactory(workdir)
    try:
        yield f
    finally:
        f.stop_all()


@pytest.fixture(scope="session")
def cfg(backend: str, redis_server: str, keys: Keys) -> dict[str, Any]:
    c = base_config(backend, redis_server, keys)
    # 'completions' gets a 60 s emission interval so the two-process exactness test cannot be
    # disturbed by timing; every other route keeps the document's defaults
    c["rate_limits"] = {"completions": {"per_minute": 1, "burst": 10}}
    return c


@pytest.fixture(scope="session")
def gw(gateways: GatewayFactory, cfg: dict[str, Any]) -> Gw:
    """The main gateway: keys from the JWKS URL."""
    return gateways(cfg, "gw1")


@pytest.fixture(scope="session")
def gw2(gateways: GatewayFactory, cfg: dict[str, Any], keys: Keys) -> Gw:
    """A second process on the same Redis, verifying with the PEM public key file."""
    c = copy.deepcopy(cfg)
    c["auth"] = {k: v for k, v in c["auth"].items() if not k.startswith("jwks")}
    c["auth"]["public_key_file"] = str(keys.rsa1_pub)
    return gateways(c, "gw2")


def documented_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The API document's error body, with ``status`` and ``code``: never a traceback, never
    text the gateway did not write."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json", r.headers
    body = r.json()
    assert set(body) == {"error"}, body
    err: dict[str, Any] = body["error"]
    assert set(err) == {"type", "message", "code", "details", "request_id"}, err
    assert err["code"] == code, err
    assert "Traceback" not in r.text
    return err
