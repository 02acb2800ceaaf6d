"""Findings 6 and 10 (first half) of the hardening issue: ambiguous credentials are refused,
and every 401 carries an RFC 6750 ``WWW-Authenticate: Bearer`` challenge (403 for a missing
permission: ``insufficient_scope``)."""

from __future__ import annotations

import httpx
import pytest

from .conftest import Gw, Tokens, documented_error

pytestmark = pytest.mark.gateway


def models(gw: Gw, headers: list[tuple[str, str]]) -> httpx.Response:
    with gw.client() as c:
        return c.get("/v1/models", headers=headers)


@pytest.mark.parametrize("order", ["bad-then-good", "good-then-bad", "good-twice"])
def test_two_authorization_headers_are_refused(gw: Gw, token: Tokens, order: str) -> None:
    good = "Bearer " + token()
    bad = "Bearer not-a-token"
    pair = {"bad-then-good": (bad, good), "good-then-bad": (good, bad), "good-twice": (good, good)}
    first, second = pair[order]
    r = models(gw, [("Authorization", first), ("Authorization", second)])
    err = documented_error(r, 401, "INVALID_AUTH")
    assert "More than one" in err["message"]
    assert r.headers["www-authenticate"].startswith("Bearer ")


def test_one_good_authorization_header_still_passes(gw: Gw, token: Tokens) -> None:
    r = models(gw, [("Authorization", "Bearer " + token())])
    assert r.status_code == 200


def test_a_401_without_credentials_has_the_bare_bearer_challenge(gw: Gw) -> None:
    r = models(gw, [])
    documented_error(r, 401, "INVALID_AUTH")
    assert r.headers["www-authenticate"] == 'Bearer realm="citadel"'


def test_a_401_for_a_bad_token_says_invalid_token(gw: Gw, token: Tokens) -> None:
    expired = token(ttl=-3600)
    for value in ("Bearer not-a-token", "Bearer " + expired):
        r = models(gw, [("Authorization", value)])
        documented_error(r, 401, "INVALID_AUTH")
        challenge = r.headers["www-authenticate"]
        assert challenge == 'Bearer realm="citadel", error="invalid_token"'


def test_a_403_for_a_missing_permission_says_insufficient_scope(gw: Gw, token: Tokens) -> None:
    with gw.client() as c:
        r = c.post(
            "/collections/docs/points/search",
            json={"vector": [0.1], "limit": 1},
            headers=token.headers(perms=[]),
        )
    documented_error(r, 403, "INSUFFICIENT_PERMS")
    challenge = r.headers["www-authenticate"]
    assert challenge == 'Bearer realm="citadel", error="insufficient_scope", scope="vector:search"'
