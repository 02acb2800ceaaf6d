"""Finding 5 of the hardening issue: no client input makes the gateway answer 500 (or show a
traceback). Bodies nested 100,000 deep and lone surrogates are refused with 400 INVALID_PARAMS
and the documented error body; what is valid (surrogate pairs, moderate nesting) still passes."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Gw, Tokens, documented_error

pytestmark = pytest.mark.gateway

DEEP = 100_000


def post(gw: Gw, token: Tokens, path: str, raw: bytes) -> Any:
    headers = dict(token.headers(), **{"Content-Type": "application/json"})
    with gw.client() as c:
        return c.post(path, content=raw, headers=headers)


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * DEEP + b"]" * DEEP,
        b'{"model":"llama-3-chat","messages":[{"role":"user","content":'
        + b"[" * DEEP
        + b"]" * DEEP
        + b"}]}",
        b'{"model":"llama-3-chat","messages":[{"role":"user","content":"hi"}],"x":'
        + b'{"a":' * DEEP
        + b"1"
        + b"}" * DEEP
        + b"}",
    ],
    ids=["top-level", "in-content", "objects"],
)
def test_json_nested_100000_deep_is_400_not_500(gw: Gw, token: Tokens, raw: bytes) -> None:
    err = documented_error(post(gw, token, "/v1/chat/completions", raw), 400, "INVALID_PARAMS")
    assert err["details"]["field"] == "body"
    assert "deeper" in err["details"]["issue"]


def test_nesting_beyond_the_limit_but_parseable_is_400(gw: Gw, token: Tokens) -> None:
    # deep enough for orjson's and the stdlib encoder's limits, shallow enough for the parser
    raw = (
        b'{"model":"llama-3-chat","temperature":0,"messages":[{"role":"user","content":"hi"}],'
        b'"x":' + b"[" * 300 + b"]" * 300 + b"}"
    )
    documented_error(post(gw, token, "/v1/chat/completions", raw), 400, "INVALID_PARAMS")


def test_a_lone_surrogate_in_cached_chat_content_is_400(gw: Gw, token: Tokens) -> None:
    raw = (
        b'{"model":"llama-3-chat","temperature":0,'
        b'"messages":[{"role":"user","content":"hi \\ud800 there"}]}'
    )
    err = documented_error(post(gw, token, "/v1/chat/completions", raw), 400, "INVALID_PARAMS")
    assert "surrogate" in err["details"]["issue"]


@pytest.mark.parametrize(
    "inp", [b'"\\ud800"', b'["ok", "\\uDC00 low"]', b'"\\ud83d"'], ids=["high", "low", "half"]
)
def test_a_lone_surrogate_in_embeddings_input_is_400(gw: Gw, token: Tokens, inp: bytes) -> None:
    raw = b'{"model":"llama-3-embeddings","input":' + inp + b"}"
    documented_error(post(gw, token, "/v1/embeddings", raw), 400, "INVALID_PARAMS")


def test_a_lone_surrogate_in_a_key_is_400(gw: Gw, token: Tokens) -> None:
    raw = b'{"model":"llama-3-embeddings","input":"x","\\ud800":1}'
    documented_error(post(gw, token, "/v1/embeddings", raw), 400, "INVALID_PARAMS")


def test_raw_utf8_encoded_surrogates_are_400(gw: Gw, token: Tokens) -> None:
    raw = b'{"model":"llama-3-embeddings","input":"\xed\xa0\x80"}'
    documented_error(post(gw, token, "/v1/embeddings", raw), 400, "INVALID_PARAMS")


def test_surrogate_pairs_and_moderate_nesting_still_pass(gw: Gw, token: Tokens) -> None:
    raw = (
        b'{"model":"llama-3-chat","temperature":0,'
        b'"messages":[{"role":"user","content":"smile \\ud83d\\ude00"}],'
        b'"x":' + b"[" * 40 + b"]" * 40 + b"}"
    )
    r = post(gw, token, "/v1/chat/completions", raw)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "echo: smile \U0001f600"
    emb = post(
        gw, token, "/v1/embeddings", b'{"model":"llama-3-embeddings","input":"\\ud83d\\ude00"}'
    )
    assert emb.status_code == 200, emb.text
