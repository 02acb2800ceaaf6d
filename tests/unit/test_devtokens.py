"""Dev tokens carry every claim the lab's gateway checks, from the same inventory values."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest

from citadel.devtokens import DEV_PERMISSIONS, mint_dev_token
from citadel.errors import CitadelError
from citadel.labsecrets import ensure_jwt_keypair
from citadel.loader import load_cluster


def test_lab_dev_token_carries_issuer_party_audience_and_permissions(tmp_path: Path) -> None:
    auth = load_cluster("inventory/lab.yml").cluster.host("gateway").gateway.auth  # type: ignore[union-attr]
    assert auth.audiences, "the lab configures an audience (hardening, finding 10)"
    public = tmp_path / "jwt" / "public.pem"
    ensure_jwt_keypair(public)
    token = mint_dev_token(auth.model_copy(update={"public_key_file": str(public)}), "someone")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == auth.issuers[0]
    assert claims["azp"] == auth.authorized_parties[0]
    assert claims["aud"] == auth.audiences[0]
    assert set(DEV_PERMISSIONS) <= set(claims["permissions"])


def test_a_jwks_gateway_has_no_dev_tokens() -> None:
    auth = load_cluster("inventory/production.yml").cluster.host("gateway").gateway.auth  # type: ignore[union-attr]
    with pytest.raises(CitadelError, match="JWKS"):
        mint_dev_token(auth, "someone")
