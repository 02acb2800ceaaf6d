"""Dev JWTs signed with an inventory's local key (the lab's): `citadel token`, verify, acceptance.

One place mints them, so every claim the gateway checks (issuer, authorized party, audience,
permissions) comes from the same inventory values the gateway's config is rendered from.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from citadel.errors import CitadelError
from citadel.labsecrets import KeyRing

if TYPE_CHECKING:
    from citadel.components.gateway import Auth

# What the gateway's routes ask a token for (docs/gateway-auth.md): collection search, detailed
# health. Chat, completions and embeddings need none.
DEV_PERMISSIONS = ("vector:search", "health:detailed")


def mint_dev_token(
    auth: Auth, sub: str, *, ttl_s: int = 900, permissions: list[str] | None = None
) -> str:
    """A token for ``sub`` the gateway configured by ``auth`` accepts; needs its private key."""
    if not auth.public_key_file:
        raise CitadelError("this inventory's gateway has no local signing key (it uses a JWKS)")
    # during a key rotation's accept stage, still the previous key (citadel rotate)
    private = KeyRing(Path(auth.public_key_file)).signing_key()
    if not private.exists():
        raise CitadelError(f"{private}: no dev signing key (run `citadel lab up` first)")
    try:
        from citadel_gateway.devtoken import mint
    except ImportError:
        raise CitadelError("citadel-gateway is not installed here (make install)") from None
    return mint(
        private.read_bytes(),
        sub,
        auth.issuers[0],
        azp=auth.authorized_parties[0] if auth.authorized_parties else None,
        ttl_s=ttl_s,
        permissions=list(DEV_PERMISSIONS) if permissions is None else permissions,
        extra={"aud": auth.audiences[0]} if auth.audiences else None,
    )
