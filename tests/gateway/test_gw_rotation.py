"""Rotations as the gateway sees them (`citadel rotate`): each step a SIGHUP reload, never a
restart. The JWT key: a PEM file with the new and the previous key accepts tokens of both; once
the previous is dropped its tokens are refused. The Redis password: a reload onto the new
password re-authenticates (the rate limiter keeps deciding) without a failed Redis command."""

from __future__ import annotations

import base64
import copy
import hashlib
import signal
import socket
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from citadel_gateway.auth import key_id, load_public_keys
from citadel_gateway.devtoken import mint
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .conftest import AZP, ISS, GatewayFactory, Gw, running_redis, wait_until


def _pair() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def _token(private: bytes, **kw: Any) -> str:
    return mint(private, "rotation-user", ISS, azp=AZP, ttl_s=600, **kw)


def _status(g: Gw, token: str) -> int:
    with g.client() as c:
        return c.get("/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code


def _reload(g: Gw) -> None:
    before = g.log().count("config reloaded")
    g.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: g.log().count("config reloaded") > before, 10, "reload")


def _static(cfg: dict[str, Any], pem: Path) -> dict[str, Any]:
    c = copy.deepcopy(cfg)
    c["auth"] = {k: v for k, v in c["auth"].items() if not k.startswith("jwks")}
    c["auth"]["public_key_file"] = str(pem)
    return c


def test_key_ids_are_rfc7638_thumbprints_and_minted_tokens_carry_them() -> None:
    private, public = _pair()
    [(kid, _)] = load_public_keys(public.decode()).items()
    # RFC 7638, computed independently: the required members, sorted, no whitespace
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(serialization.load_pem_public_key(public), as_dict=True)
    members = f'{{"crv":"{jwk["crv"]}","kty":"EC","x":"{jwk["x"]}","y":"{jwk["y"]}"}}'
    expected = base64.urlsafe_b64encode(hashlib.sha256(members.encode()).digest())
    assert kid == expected.rstrip(b"=").decode()
    assert jwt.get_unverified_header(_token(private))["kid"] == kid
    assert key_id(serialization.load_pem_public_key(public)) == kid


def test_a_bundle_with_a_broken_key_is_refused_before_it_goes_live(tmp_path: Path) -> None:
    _, public = _pair()
    broken = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    with pytest.raises(ValueError, match="public key 2"):
        load_public_keys(public.decode() + broken)
    with pytest.raises(ValueError, match="no PEM public key"):
        load_public_keys("not a key\n")


def test_reload_with_two_keys_accepts_both_then_retire_refuses_the_old(
    gateways: GatewayFactory, cfg: dict[str, Any], tmp_path: Path
) -> None:
    old_private, old_public = _pair()
    new_private, new_public = _pair()
    pem = tmp_path / "jwt-public.pem"
    pem.write_bytes(old_public)
    g = gateways(_static(cfg, pem), "rotate-key")
    pid = g.proc.pid
    old_token, new_token = _token(old_private), _token(new_private)
    assert _status(g, old_token) == 200
    assert _status(g, new_token) == 401

    # accept: the new key and the previous one, in one file
    pem.write_bytes(new_public + old_public)
    _reload(g)
    assert _status(g, old_token) == 200  # a token minted before the rotation began
    assert _status(g, new_token) == 200
    assert _status(g, _token(old_private)) == 200  # tokens minted during accept
    no_kid = jwt.encode(
        jwt.decode(new_token, options={"verify_signature": False}),
        serialization.load_pem_private_key(new_private, password=None),  # type: ignore[arg-type]
        algorithm="ES256",
    )
    assert "kid" not in jwt.get_unverified_header(no_kid)
    assert _status(g, no_kid) == 200  # no kid: tried against each key
    assert _status(g, _token(old_private, kid="not-a-key-id")) == 401  # a kid names one key

    # retire: the new key only
    pem.write_bytes(new_public)
    _reload(g)
    assert _status(g, new_token) == 200
    assert _status(g, old_token) == 401  # cached before, refused now: a reload forgets it
    assert _status(g, _token(old_private)) == 401
    assert g.proc.pid == pid and g.proc.poll() is None  # reloads, never a restart


def _acl(port: int, password: str, *accepted: str) -> None:
    """What citadel's users file holds at a stage, loaded live as the deploy does."""
    digests = " ".join(f"#{hashlib.sha256(p.encode()).hexdigest()}" for p in accepted)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        rules = f"reset on {digests} ~* &* +@all".split()
        args = ["AUTH", password, "ACL", "SETUSER", "default", *rules]
        # AUTH, then ACL SETUSER: the same rules ACL LOAD would load
        auth, setuser = args[:2], args[2:]
        for cmd in (auth, setuser):
            s.sendall((f"*{len(cmd)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in cmd)).encode())
            assert s.recv(256).startswith(b"+OK"), cmd[0]


def _remaining(g: Gw, token: str) -> str | None:
    """x-ratelimit-remaining: present only when the limiter reached Redis (else it is bypassed);
    /health is limited per client address."""
    with g.client() as c:
        r = c.get("/health", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        return r.headers.get("x-ratelimit-remaining")


def _redis_errors(g: Gw) -> float:
    with g.client() as c:
        text = c.get("/metrics").text
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("gateway_redis_errors_total{")
    )


def test_a_rotated_redis_password_is_taken_by_a_reload_without_a_failed_command(
    gateways: GatewayFactory, cfg: dict[str, Any], tmp_path: Path
) -> None:
    old, new = "old-redis-Pass-1", "new-redis-Pass-2"
    private, public = _pair()
    pem = tmp_path / "pub.pem"
    pem.write_bytes(public)
    digest = hashlib.sha256(old.encode()).hexdigest()
    user = ["--user", "default", "on", f"#{digest}", "~*", "&*", "+@all"]
    with running_redis(tmp_path / "redis", *user) as port:
        password = tmp_path / "redis.password"
        password.write_text(old + "\n")
        c = _static(cfg, pem)
        c["redis"] = {"url": f"redis://127.0.0.1:{port}/0", "password_file": str(password)}
        g = gateways(c, "rotate-redis")
        token = _token(private)
        assert _remaining(g, token) is not None

        _acl(port, old, new, old)  # accept: Redis takes both
        assert _remaining(g, token) is not None
        password.write_text(new + "\n")  # switch: the gateway's file, then a reload
        _reload(g)
        _acl(port, new, new)  # retire: the old one is refused from now on
        for _ in range(5):
            assert _remaining(g, token) is not None
        assert _redis_errors(g) == 0  # no command failed across the reload
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(f"*2\r\n$4\r\nAUTH\r\n${len(old)}\r\n{old}\r\n".encode())
            assert s.recv(256).startswith(b"-WRONGPASS")
            # Redis never re-checks a live connection: drop them all, so the gateway's next
            # ones must authenticate, and can only with the new password
            kill = ["AUTH", new, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]
            for cmd in (kill[:2], kill[2:]):
                s.sendall(
                    (f"*{len(cmd)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in cmd)).encode()
                )
                assert s.recv(256)[:1] in (b"+", b":"), cmd[0]
        time.sleep(1.5)  # past the outage breaker (redis.retry_after_failure_s) if it tripped
        wait_until(lambda: _remaining(g, token) is not None, 10, "the limiter on the new password")
