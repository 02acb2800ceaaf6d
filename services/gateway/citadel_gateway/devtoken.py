"""Mint a development JWT the gateway accepts (RS256 or ES256, picked from the private key).

    python -m citadel_gateway.devtoken --key PRIVATE.pem --sub alice --iss https://dev.local \\
        [--azp http://localhost] [--kid k1] [--ttl 3600] [--perm vector:search ...]

The token goes to stdout and nowhere else.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key


def mint(
    private_key_pem: bytes | str,
    sub: str,
    iss: str,
    *,
    azp: str | None = None,
    sid: str | None = None,
    kid: str | None = None,
    ttl_s: int = 3600,
    permissions: list[str] | None = None,
    extra: dict[str, Any] | None = None,
    now: int | None = None,
) -> str:
    """Return a signed token: ``sub``, ``iss``, ``iat``, ``nbf``, ``exp`` (+ optional claims).
    Its ``kid`` is the key's id (``auth.key_id``, the gateway's) unless one is given."""
    pem = private_key_pem.encode() if isinstance(private_key_pem, str) else private_key_pem
    key = load_pem_private_key(pem, password=None)
    if isinstance(key, rsa.RSAPrivateKey):
        alg = "RS256"
    elif isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        alg = "ES256"
    else:
        raise ValueError("key must be RSA or EC P-256")
    t = int(time.time()) if now is None else now
    claims: dict[str, Any] = {"sub": sub, "iss": iss, "iat": t, "nbf": t, "exp": t + ttl_s}
    claims["sid"] = sid or "sess_" + uuid.uuid4().hex[:24]
    if azp:
        claims["azp"] = azp
    if permissions:
        claims["permissions"] = permissions
    if extra:
        claims.update(extra)
    from .auth import key_id

    headers = {"kid": kid or key_id(key.public_key())}
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m citadel_gateway.devtoken", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--key", required=True, help="PEM private key (RSA or EC P-256)")
    ap.add_argument("--sub", required=True)
    ap.add_argument("--iss", required=True)
    ap.add_argument("--azp")
    ap.add_argument("--sid")
    ap.add_argument("--kid")
    ap.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    ap.add_argument("--perm", action="append", default=[], help="permission (repeatable)")
    args = ap.parse_args(argv)
    try:
        pem = Path(args.key).read_bytes()
        token = mint(
            pem,
            args.sub,
            args.iss,
            azp=args.azp,
            sid=args.sid,
            kid=args.kid,
            ttl_s=args.ttl,
            permissions=args.perm or None,
        )
    except (OSError, ValueError, TypeError) as exc:
        print(f"devtoken: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
