"""What the API document's SDK clients send: OpenAI routes without /v1, browser CORS."""

from __future__ import annotations

import copy
from typing import Any

import openai
import pytest

from .conftest import GatewayFactory, Gw, Tokens

ORIGIN = "http://webui.example:8080"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


@pytest.fixture(scope="module")
def cors_gw(gateways: GatewayFactory, cfg: dict[str, Any]) -> Gw:
    c = copy.deepcopy(cfg)
    c["cors"] = {"allowed_origins": [ORIGIN]}
    return gateways(c, "cors")


@pytest.mark.parametrize("suffix", ["", "/v1"], ids=["base-url-as-documented", "with-v1"])
def test_openai_python_client_with_the_documents_base_url(
    gw: Gw, token: Tokens, suffix: str
) -> None:
    """The document's Python SDK: ``openai.OpenAI(base_url="http://<gateway>:8000")``."""
    client = openai.OpenAI(api_key=token(), base_url=gw.url + suffix, max_retries=0)
    chat = client.chat.completions.create(
        model="llama-3-chat", messages=[{"role": "user", "content": "hi"}]
    )
    assert chat.choices[0].message.content == "echo: hi"
    text = client.completions.create(model="llama-3-instruct", prompt="def fibonacci(n):")
    assert isinstance(text.choices[0].text, str)
    vectors = client.embeddings.create(model="llama-3-embeddings", input=["a", "b"])
    assert [d.index for d in vectors.data] == [0, 1]
    assert [m.id for m in client.models.list().data]


def test_the_alias_is_the_same_route_with_the_same_limits(gw: Gw, token: Tokens) -> None:
    body = {"model": "llama-3-chat", "messages": [{"role": "user", "content": "hi"}]}
    with gw.client() as c:
        plain = c.post("/chat/completions", json=body, headers=token.headers())
        unauth = c.post("/chat/completions", json=body)
        other = c.post("/nope/chat/completions", json=body, headers=token.headers())
    assert plain.status_code == 200
    assert plain.headers["x-ratelimit-limit"] == "60"  # the chat bucket, as on /v1
    assert unauth.status_code == 401
    assert other.status_code == 404


def test_preflight_from_an_allowed_origin(cors_gw: Gw) -> None:
    with cors_gw.client() as c:
        r = c.options("/v1/chat/completions", headers={"Origin": ORIGIN, **PREFLIGHT})
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in r.headers["access-control-allow-methods"]
    assert r.headers["access-control-allow-headers"] == "authorization, content-type"
    assert r.headers["vary"] == "Origin"


def test_preflight_from_another_origin_is_refused(cors_gw: Gw) -> None:
    with cors_gw.client() as c:
        r = c.options(
            "/v1/chat/completions", headers={"Origin": "http://evil.example", **PREFLIGHT}
        )
    assert r.status_code == 403
    assert "access-control-allow-origin" not in r.headers
    assert r.json()["error"]["code"] == "INSUFFICIENT_PERMS"


def test_preflight_asking_for_other_headers_is_refused(cors_gw: Gw) -> None:
    headers = {**PREFLIGHT, "Access-Control-Request-Headers": "authorization, x-evil"}
    with cors_gw.client() as c:
        r = c.options("/v1/chat/completions", headers={"Origin": ORIGIN, **headers})
    assert r.status_code == 403


def test_allowed_origin_reads_the_answer_and_its_rate_limit_headers(
    cors_gw: Gw, token: Tokens
) -> None:
    body = {"model": "llama-3-chat", "messages": [{"role": "user", "content": "hi"}]}
    with cors_gw.client() as c:
        ok = c.post(
            "/v1/chat/completions", json=body, headers={"Origin": ORIGIN, **token.headers()}
        )
        other = c.post(
            "/v1/chat/completions",
            json=body,
            headers={"Origin": "http://evil.example", **token.headers()},
        )
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == ORIGIN
    assert "X-RateLimit-Remaining" in ok.headers["access-control-expose-headers"]
    assert "access-control-allow-origin" not in other.headers


def test_without_configured_origins_no_cors_headers(gw: Gw, token: Tokens) -> None:
    with gw.client() as c:
        r = c.options("/v1/chat/completions", headers={"Origin": ORIGIN, **PREFLIGHT})
    assert r.status_code == 403
    assert "access-control-allow-origin" not in r.headers
