"""Finding 10 of the hardening issue: ``/health?detailed=true`` names backend URLs and their
last errors, so it needs a permission (``auth.health_detailed_permission``, default
``health:detailed``) like the other guarded routes, not just any valid token."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from .conftest import GatewayFactory, Gw, Tokens, documented_error

pytestmark = pytest.mark.gateway


def detailed(gw: Gw, headers: dict[str, str]) -> Any:
    with gw.client() as c:
        return c.get("/health", params={"detailed": "true"}, headers=headers)


def test_any_valid_token_without_the_permission_gets_403_and_no_backend_urls(
    gw: Gw, token: Tokens
) -> None:
    r = detailed(gw, token.headers(perms=["vector:search"]))
    err = documented_error(r, 403, "INSUFFICIENT_PERMS")
    assert err["details"]["missing"] == ["health:detailed"]
    assert "127.0.0.1" not in r.text and "backends" not in r.text


def test_a_token_with_health_detailed_gets_the_details(gw: Gw, token: Tokens) -> None:
    r = detailed(gw, token.headers(perms=["health:detailed"]))
    assert r.status_code == 200
    assert "llama-3-chat" in r.json()["details"]["backends"]


def test_plain_health_needs_nothing(gw: Gw) -> None:
    with gw.client() as c:
        r = c.get("/health")
    assert r.status_code in (200, 429)
    if r.status_code == 200:
        assert "details" not in r.json()


def test_the_permission_is_a_setting(
    gateways: GatewayFactory, cfg: dict[str, Any], token: Tokens
) -> None:
    c = copy.deepcopy(cfg)
    c["auth"] = dict(c["auth"], health_detailed_permission="ops:health")
    c["health"] = {"interval_s": 5, "timeout_s": 1, "services": {}}
    g = gateways(c, "health-perm")
    assert detailed(g, token.headers(perms=["health:detailed"])).status_code == 403
    assert detailed(g, token.headers(perms=["ops:health"])).status_code == 200
