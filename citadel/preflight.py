"""Controller-side preflight of ``plan``/``apply`` outside the lab: the identity provider the
gateway will trust answers, checked before any host is touched.

A gateway whose JWKS URL is wrong still converges and starts, then refuses every real token
(401) while apply reports success. So here, on the controller, with a bounded timeout: the
JWKS URL answers 200 with a JSON key set holding at least one signing key the gateway can use,
and each issuer is an https URL (Clerk's ``iss`` is its Frontend API URL). The lab trusts a
local key file (no JWKS) and is not checked: it needs no network for this. (Host-side
preflight, run by pyinfra per component, is ``deploys.preflight``.)
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import jwt

from citadel.errors import CitadelError
from citadel.model.cluster import Cluster

TIMEOUT_S = 5.0
FIX_JWKS = (
    "set it to your Clerk instance's Frontend API URL + /.well-known/jwks.json "
    "(docs/gateway-auth.md)"
)
FIX_ISSUER = "use the Frontend API URL exactly as the tokens' iss carries it: https://..."


def check_identity_provider(cluster: Cluster, timeout_s: float = TIMEOUT_S) -> None:
    """Raise CitadelError (one line per problem) when a gateway's JWKS or issuers are unusable."""
    if cluster.cluster.environment == "lab":
        return
    problems: list[str] = []
    for host in cluster.with_role("gateway"):
        auth = host.gateway.auth if host.gateway else None
        if auth is None or auth.jwks_url is None:
            continue
        where = f"host {host.name}: gateway.auth"
        for issuer in auth.issuers:
            parts = urlsplit(issuer)
            if parts.scheme != "https" or not parts.hostname:
                problems.append(f"{where}.issuers: {issuer!r} is not an https URL; {FIX_ISSUER}")
        why = jwks_problem(auth.jwks_url, timeout_s)
        if why:
            problems.append(f"{where}.jwks_url: {auth.jwks_url}: {why}; {FIX_JWKS}")
    if problems:
        raise CitadelError("\n".join(problems))


def jwks_problem(url: str, timeout_s: float = TIMEOUT_S) -> str | None:
    """Why ``url`` is not a usable JWKS (None: it is): unreachable, not 200, not JSON, or no
    signing key the gateway would load."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body = resp.read(1 << 20)
    except urllib.error.HTTPError as exc:
        return f"answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"no answer within {timeout_s:g} s ({reason})"
    try:
        doc: Any = json.loads(body)
    except ValueError:
        return "did not answer JSON (not a JWKS)"
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list):
        return "answered JSON without a 'keys' list (not a JWKS)"
    usable = [k for k in keys if _signing_key(k)]
    if not usable:
        return f"holds no usable signing key ({len(keys)} keys)"
    return None


def _signing_key(jwk: Any) -> bool:
    """A key the gateway would load (citadel_gateway.auth: PyJWK, use sig or unset)."""
    if not isinstance(jwk, dict) or jwk.get("use") not in (None, "sig"):
        return False
    try:
        jwt.PyJWK(jwk)
    except Exception:  # any key PyJWT refuses, the gateway skips too
        return False
    return True
