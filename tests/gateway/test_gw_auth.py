"""JWT verification through a running gateway (keys from the JWKS URL) and the PEM path."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path

import jwt
import pytest

from .conftest import AZP, Gw, Keys, Tokens, backend_state

CHAT = {"model": "llama-3-chat", "messages": [{"role": "user", "content": "hi"}]}


def _post(gw: Gw, headers: dict[str, str]) -> tuple[int, dict]:
    with gw.client() as c:
        r = c.get("/v1/models", headers=headers)
        return r.status_code, r.json()


def _assert_401(gw: Gw, headers: dict[str, str]) -> dict:
    status, body = _post(gw, headers)
    assert status == 401, body
    assert body["error"]["code"] == "INVALID_AUTH"
    assert body["error"]["type"] == "authentication_error"
    assert body["error"]["request_id"]
    return body


def test_valid_token_rs256(gw: Gw, token: Tokens) -> None:
    status, body = _post(gw, token.headers())
    assert status == 200
    assert {m["id"] for m in body["data"]} >= {"llama-3-chat", "llama-3-instruct"}


def test_valid_token_es256(gw: Gw, token: Tokens, keys: Keys) -> None:
    status, _ = _post(gw, token.headers(key=keys.ec1, kid="e1"))
    assert status == 200


def test_clerk_session_token_shape(gw: Gw, token: Tokens) -> None:
    # Clerk session tokens: RS256 with sub, sid, azp, iss, iat, nbf, exp (+ fva etc.)
    extra = {"fva": [0, -1], "v": 2}
    status, _ = _post(gw, token.headers("user_2abcClerk", extra=extra))
    assert status == 200


def test_missing_header(gw: Gw) -> None:
    body = _assert_401(gw, {})
    assert "Authorization" in body["error"]["message"]


def test_wrong_scheme(gw: Gw, token: Tokens) -> None:
    _assert_401(gw, {"Authorization": "Basic " + token()})


def test_expired(gw: Gw, token: Tokens) -> None:
    body = _assert_401(gw, token.headers(now=int(time.time()) - 3600, ttl=60))
    assert "expired" in body["error"]["message"].lower()


def test_not_yet_valid(gw: Gw, token: Tokens) -> None:
    body = _assert_401(gw, token.headers(now=int(time.time()) + 600))
    assert "not yet valid" in body["error"]["message"].lower()


def test_small_clock_skew_within_leeway(gw: Gw, token: Tokens) -> None:
    status, _ = _post(gw, token.headers(now=int(time.time()) + 1))
    assert status == 200


def test_wrong_issuer(gw: Gw, token: Tokens) -> None:
    _assert_401(gw, token.headers(iss="https://evil.example"))


def test_wrong_azp(gw: Gw, token: Tokens) -> None:
    _assert_401(gw, token.headers(azp="http://evil.example"))


def test_token_without_azp_is_fine(gw: Gw, token: Tokens) -> None:
    status, _ = _post(gw, token.headers(azp=None))
    assert status == 200


def test_alg_none(gw: Gw) -> None:
    now = int(time.time())
    claims = {"sub": "x", "iss": "https://clerk.test.local", "exp": now + 60, "azp": AZP}
    tok = jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]
    _assert_401(gw, {"Authorization": f"Bearer {tok}"})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_hs256_signed_with_public_key(gw: Gw, keys: Keys) -> None:
    import hashlib
    import hmac

    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT", "kid": "k1"}
    claims = {"sub": "x", "iss": "https://clerk.test.local", "exp": now + 60}
    signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    sig = hmac.new(keys.rsa1_pub.read_bytes(), signing.encode(), hashlib.sha256).digest()
    _assert_401(gw, {"Authorization": f"Bearer {signing}.{_b64(sig)}"})


def test_tampered_payload(gw: Gw, token: Tokens) -> None:
    tok = token("user_honest")
    h, p, s = tok.split(".")
    claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    claims["sub"] = "user_admin"
    _assert_401(gw, {"Authorization": f"Bearer {h}.{_b64(json.dumps(claims).encode())}.{s}"})


def test_garbage_token(gw: Gw) -> None:
    _assert_401(gw, {"Authorization": "Bearer not.a.jwt"})
    _assert_401(gw, {"Authorization": "Bearer x"})


def test_missing_required_claim(gw: Gw, keys: Keys) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    now = int(time.time())
    tok = jwt.encode(
        {"iss": "https://clerk.test.local", "exp": now + 60},  # no sub
        load_pem_private_key(keys.rsa1, None),  # type: ignore[arg-type]
        algorithm="RS256",
        headers={"kid": "k1"},
    )
    _assert_401(gw, {"Authorization": f"Bearer {tok}"})


def test_unknown_kid_triggers_one_jwks_refetch(
    gw: Gw, gw2: Gw, token: Tokens, keys: Keys, backend: str
) -> None:
    # a key the gateway has never seen: the refetch finds nothing -> 401
    time.sleep(1.1)  # past jwks_min_refetch_s of any earlier miss
    before = backend_state(backend)["jwks_fetches"]
    _assert_401(gw, token.headers(key=keys.rsa2, kid="k2"))
    after_first = backend_state(backend)["jwks_fetches"]
    assert after_first == before + 1
    # a second miss within jwks_min_refetch_s does not refetch (throttled)
    _assert_401(gw, token.headers(key=keys.rsa2, kid="k2"))
    assert backend_state(backend)["jwks_fetches"] == after_first
    # key rotation: k2 published -> next miss (after the throttle) refetches and succeeds
    keys.write_jwks((keys.rsa1, "k1"), (keys.ec1, "e1"), (keys.rsa2, "k2"))
    time.sleep(1.1)
    status, _ = _post(gw, token.headers(key=keys.rsa2, kid="k2"))
    assert status == 200
    # old keys still work
    status, _ = _post(gw, token.headers())
    assert status == 200
    # the PEM-configured gateway (networkless) rejects k2-signed tokens
    _assert_401(gw2, token.headers(key=keys.rsa2, kid="k2"))


def test_pem_gateway_accepts_rs256(gw2: Gw, token: Tokens) -> None:
    status, _ = _post(gw2, token.headers())
    assert status == 200


def test_insufficient_perms(gw: Gw, token: Tokens) -> None:
    body = {"vector": [0.1, 0.2, 0.3], "limit": 1}
    with gw.client() as c:
        r = c.post("/collections/docs/points/search", json=body, headers=token.headers())
        assert r.status_code == 403
        err = r.json()["error"]
        assert err["code"] == "INSUFFICIENT_PERMS"
        assert err["details"]["missing"] == ["vector:search"]
        ok = c.post(
            "/collections/docs/points/search",
            json=body,
            headers=token.headers(perms=["vector:search"]),
        )
        assert ok.status_code == 200
        # OAuth-style space-separated scope works too
        scoped = c.post(
            "/collections/docs/points/search",
            json=body,
            headers=token.headers(extra={"scope": "openid vector:search"}),
        )
        assert scoped.status_code == 200


def test_detailed_health_needs_token(gw: Gw, token: Tokens) -> None:
    with gw.client() as c:
        r = c.get("/health", params={"detailed": "true"})
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "INVALID_AUTH"
        r = c.get(
            "/health", params={"detailed": "true"}, headers=token.headers(perms=["health:detailed"])
        )
        assert r.status_code == 200
        d = r.json()["details"]
        assert "llama-3-chat" in d["backends"]
        assert "api_key" not in json.dumps(d)


# ----------------------------------------------------------------------------- unit level
@pytest.mark.parametrize("kid", [None, "k1"])
def test_authenticator_pem_unit(keys: Keys, kid: str | None) -> None:
    import asyncio

    from citadel_gateway.auth import Authenticator
    from citadel_gateway.config import Auth, _set_private
    from citadel_gateway.devtoken import mint

    cfg = Auth(public_key_file=str(keys.rsa1_pub), issuers=["https://i"])
    _set_private(cfg, "_public_key_pem", keys.rsa1_pub.read_text())
    auth = Authenticator(cfg)
    sub = uuid.uuid4().hex
    claims = asyncio.run(auth.verify(mint(keys.rsa1, sub, "https://i", kid=kid)))
    assert claims["sub"] == sub and claims["sid"].startswith("sess_")


def test_devtoken_cli(keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from citadel_gateway import devtoken

    key = tmp_path / "k.pem"
    key.write_bytes(keys.ec1)
    assert (
        devtoken.main(["--key", str(key), "--sub", "alice", "--iss", "https://i", "--perm", "a:b"])
        == 0
    )
    tok = capsys.readouterr().out.strip()
    header = jwt.get_unverified_header(tok)
    assert header["alg"] == "ES256"
    claims = jwt.decode(tok, options={"verify_signature": False})
    assert claims["sub"] == "alice" and claims["permissions"] == ["a:b"]
    assert devtoken.main(["--key", str(tmp_path / "nope.pem"), "--sub", "a", "--iss", "i"]) == 2
