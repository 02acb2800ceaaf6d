"""JWT verification: RS256/ES256 only, keys from a PEM file or a JWKS URL.

The algorithm comes from the *key* (RSA -> RS256, EC P-256 -> ES256), never from the token
header, so ``alg: none`` and HS256-signed-with-the-public-key tokens are rejected.

A PEM file may hold several public keys (a key rotation: the new one and the previous one).
Each key's id is its RFC 7638 thumbprint (:func:`key_id`), which ``devtoken`` puts in the
tokens it mints as ``kid``: a token with a ``kid`` is checked with that key only (no such key:
401); one without is tried against each.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .config import Auth, Forwarder
from .errors import GatewayError, invalid

log = logging.getLogger("citadel_gateway.auth")

_CACHE_MAX = 10_000


REALM = b'Bearer realm="citadel"'


def _fail(message: str, error: str | None = "invalid_token") -> GatewayError:
    """401 with the RFC 6750 challenge: ``error="invalid_token"`` when a token was presented
    (``error`` None: none was, or not as a bearer token: the bare challenge)."""
    challenge = REALM
    if error is not None:
        challenge += b', error="%s"' % error.encode()
    return GatewayError("INVALID_AUTH", message, headers=[(b"www-authenticate", challenge)])


def auth_failed(message: str) -> GatewayError:
    """401 ``invalid_token``: a credential was presented and is not accepted."""
    return _fail(message)


def insufficient_scope(needed: list[str], missing: list[str]) -> GatewayError:
    """403 for a valid token without the route's permission (RFC 6750 ``insufficient_scope``)."""
    challenge = REALM + b', error="insufficient_scope", scope="%s"' % " ".join(needed).encode()
    return GatewayError(
        "INSUFFICIENT_PERMS",
        "Insufficient permissions",
        {"required": needed, "missing": missing},
        [(b"www-authenticate", challenge)],
    )


def alg_for_key(key: Any) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ValueError("RSA keys must be at least 2048 bits")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise ValueError("only RSA (RS256) and EC P-256 (ES256) public keys are supported")


_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z ]*)PUBLIC KEY-----.+?-----END \1PUBLIC KEY-----", re.S)


def key_id(key: Any) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of an RSA or EC public key: the ``kid``."""
    if isinstance(key, rsa.RSAPublicKey):
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
        members = {k: jwk[k] for k in ("e", "kty", "n")}
    elif isinstance(key, ec.EllipticCurvePublicKey):
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
        members = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
    else:
        raise ValueError("only RSA and EC public keys have a key id here")
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode())
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def load_public_keys(pem: str) -> dict[str, tuple[Any, str]]:
    """Every ``PUBLIC KEY`` block of a PEM text: key id -> (key, algorithm). ValueError when
    there is none, or one is not a key the gateway accepts."""
    blocks = [m.group(0) for m in _PEM_BLOCK.finditer(pem)]
    if not blocks:
        raise ValueError("no PEM public key")
    keys: dict[str, tuple[Any, str]] = {}
    for i, block in enumerate(blocks, 1):
        try:
            key = load_pem_public_key(block.encode())
        except Exception as exc:  # ValueError, UnsupportedAlgorithm
            raise ValueError(f"public key {i}: {exc}") from None
        keys[key_id(key)] = (key, alg_for_key(key))
    return keys


def claim_permissions(claims: dict[str, Any]) -> set[str]:
    """Permissions granted by a token: ``permissions``, ``scp``, ``org_permissions`` (lists or
    space-separated strings) and ``scope`` (OAuth2 space-separated string)."""
    perms: set[str] = set()
    for name in ("permissions", "scp", "org_permissions", "scope"):
        value = claims.get(name)
        if isinstance(value, str):
            perms.update(value.split())
        elif isinstance(value, list):
            perms.update(v for v in value if isinstance(v, str))
    return perms


# A forwarded user id: what lands in the subject, the access log and a Redis key. OpenWebUI's
# are UUIDs; nothing here can split a key (":"), match a pattern ("*"), or end a log line.
USER_ID = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
USER_ID_MAX = 128


@dataclass(frozen=True, slots=True)
class ServiceClient:
    """A forwarder (config ``auth.forwarders``) as the request path reads it."""

    name: str
    user_header: bytes
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    claims: dict[str, Any]  # what the credential authenticates as: never mutated

    @classmethod
    def of(cls, name: str, fwd: Forwarder) -> ServiceClient:
        nets = tuple(ipaddress.ip_network(c, strict=False) for c in fwd.addresses)
        claims = {"sub": name, "permissions": list(fwd.permissions)}
        return cls(name, fwd.user_header.encode(), nets, claims)

    def allows(self, address: str | None) -> bool:
        if not address:
            return False
        try:
            addr = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(addr in net for net in self.networks)

    def user(self, raw_headers: list[tuple[bytes, bytes]]) -> str | None:
        """The user the request names (``None``: it names none); 400 for a value that is not a
        user id, or for the header twice (ambiguous, like two Authorization headers)."""
        found: bytes | None = None
        for name, value in raw_headers:
            if name == self.user_header:
                if found is not None:
                    raise _bad_user(self, "given more than once")
                found = value
        if found is None:
            return None
        if len(found) > USER_ID_MAX or not USER_ID.fullmatch(found):
            raise _bad_user(self, f"not a user id (1-{USER_ID_MAX} of A-Z a-z 0-9 . _ @ -)")
        return found.decode("ascii")


def _bad_user(client: ServiceClient, issue: str) -> GatewayError:
    # never the value itself: it may be anything, and it is not echoed back or logged
    return invalid(client.user_header.decode(), issue, "Invalid forwarded user")


class Authenticator:
    def __init__(self, cfg: Auth, session: aiohttp.ClientSession | None = None):
        self.cfg = cfg
        self.session = session
        # service token -> its forwarder; user header -> forwarder, for headers sent without it
        self.services: dict[str, ServiceClient] = {}
        self.user_headers: tuple[tuple[bytes, str], ...] = ()
        for name, fwd in cfg.forwarders.items():
            client = ServiceClient.of(name, fwd)
            if fwd.token:
                self.services[fwd.token] = client
            self.user_headers += ((client.user_header, name),)
        self._static: dict[str, tuple[Any, str]] = {}
        self._jwks: dict[str | None, tuple[Any, str]] = {}
        self._jwks_fetched_at = 0.0
        self._last_miss_fetch = -1e18
        self._lock = asyncio.Lock()
        self._cache: dict[str, tuple[dict[str, Any], float]] = {}
        self.jwks_fetches = 0
        if cfg.public_key_pem:
            self._static = load_public_keys(cfg.public_key_pem)

    # -- JWKS -------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.cfg.jwks_url:
            await self._fetch_jwks()

    async def _fetch_jwks(self) -> bool:
        assert self.cfg.jwks_url and self.session is not None
        self.jwks_fetches += 1
        try:
            timeout = aiohttp.ClientTimeout(total=5)
            async with self.session.get(self.cfg.jwks_url, timeout=timeout) as resp:
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}")
                doc = json.loads(await resp.read())
            keys: dict[str | None, tuple[Any, str]] = {}
            for jwk in doc.get("keys", []):
                try:
                    pk = jwt.PyJWK(jwk)
                    alg = alg_for_key(pk.key)
                except Exception as exc:  # skip keys we cannot or will not use
                    log.warning("jwks: skipping key %s: %s", jwk.get("kid"), exc)
                    continue
                if jwk.get("alg") not in (None, alg) or jwk.get("use") not in (None, "sig"):
                    continue
                keys[jwk.get("kid")] = (pk.key, alg)
        except Exception as exc:
            log.error(
                "jwks fetch from %s failed (keeping %d old keys): %s",
                self.cfg.jwks_url,
                len(self._jwks),
                exc,
            )
            return False
        self._jwks = keys
        self._jwks_fetched_at = time.monotonic()
        return True

    async def _keys_for(self, kid: str | None) -> list[tuple[Any, str]]:
        """The keys that may have signed a token with this ``kid``: the one it names, or with
        several local keys and no ``kid``, each of them."""
        if self._static:
            if kid is None:
                return list(self._static.values())
            if len(self._static) == 1:
                return list(self._static.values())  # one key: its id is not required
            found = self._static.get(kid)
            if found is None:
                raise _fail("Unknown signing key")
            return [found]
        return [await self._key_for(kid)]

    async def _key_for(self, kid: str | None) -> tuple[Any, str]:
        now = time.monotonic()
        if (
            self._jwks
            and now - self._jwks_fetched_at > self.cfg.jwks_cache_s
            and not self._lock.locked()
        ):
            async with self._lock:
                await self._fetch_jwks()
        found = self._lookup(kid)
        if found is not None:
            return found
        async with self._lock:
            found = self._lookup(kid)  # another request may have refetched meanwhile
            if (
                found is None
                and time.monotonic() - self._last_miss_fetch >= self.cfg.jwks_min_refetch_s
            ):
                self._last_miss_fetch = time.monotonic()
                await self._fetch_jwks()
                found = self._lookup(kid)
        if found is None:
            raise _fail("Unknown signing key")
        return found

    def _lookup(self, kid: str | None) -> tuple[Any, str] | None:
        if kid is None and len(self._jwks) == 1:
            return next(iter(self._jwks.values()))
        return self._jwks.get(kid)

    # -- verification -----------------------------------------------------------------------
    async def verify(self, token: str) -> dict[str, Any]:
        hit = self._cache.get(token)
        now = time.time()
        if hit is not None:
            claims, exp = hit
            if now <= exp + self.cfg.leeway_s:
                return claims
            self._cache.pop(token, None)
            raise _fail("Token expired")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _fail("Malformed token") from None
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise _fail("Malformed token")
        keys = await self._keys_for(kid)
        cfg = self.cfg
        try:
            claims = self._decode(token, keys)
        except jwt.ExpiredSignatureError:
            raise _fail("Token expired") from None
        except jwt.ImmatureSignatureError:
            raise _fail("Token not yet valid") from None
        except jwt.InvalidIssuerError:
            raise _fail("Token issuer not allowed") from None
        except jwt.InvalidAudienceError:
            raise _fail("Token audience not allowed") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _fail(f"Token lacks required claim {exc.claim!r}") from None
        except jwt.PyJWTError:
            raise _fail("Invalid token") from None
        azp = claims.get("azp")
        if azp is not None and cfg.authorized_parties and azp not in cfg.authorized_parties:
            raise _fail("Token authorized party not allowed")
        exp_claim = claims.get("exp")
        if isinstance(exp_claim, int | float):
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[token] = (claims, float(exp_claim))
        return claims

    def _decode(self, token: str, keys: list[tuple[Any, str]]) -> dict[str, Any]:
        """The claims, checked with the first of ``keys`` whose signature matches (the
        signature is checked before any claim, so a wrong key fails as a bad signature)."""
        cfg = self.cfg
        for i, (key, alg) in enumerate(keys):
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=[alg],
                    issuer=cfg.issuers,
                    audience=cfg.audience or None,
                    leeway=cfg.leeway_s,
                    options={
                        "require": list(cfg.required_claims),
                        "verify_aud": bool(cfg.audience),
                    },
                )
                return claims
            except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError):
                if i + 1 == len(keys):
                    raise
        raise jwt.InvalidSignatureError("no key")  # pragma: no cover - keys is never empty


def authorization(raw_headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The one ``Authorization`` header of a request (ASGI raw headers, names lower-case).

    Two are ambiguous credentials: a front proxy or WAF may judge the first while we would
    judge another, so they are refused rather than one of them chosen."""
    found: bytes | None = None
    for name, value in raw_headers:
        if name == b"authorization":
            if found is not None:
                raise _fail("More than one Authorization header", "invalid_request")
            found = value
    return found


def bearer_token(header: bytes | None) -> str:
    if not header:
        raise _fail("Missing Authorization header", None)
    try:
        text = header.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
        raise _fail("Malformed Authorization header", "invalid_request") from None
    scheme, _, token = text.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer":
        raise _fail("Authorization must be 'Bearer <token>'", None)
    if not token:
        raise _fail("Authorization must be 'Bearer <token>'", "invalid_request")
    return token
