"""The gateway against a hostile backend (tests/gateway/hostile.py), end to end: whatever the
backend sends, one user's answer never reaches another, and the client gets the documented
error body, never the backend's own text or a traceback."""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest import (
    GatewayFactory,
    Gw,
    Keys,
    Tokens,
    base_config,
    documented_error,
    wait_until,
)
from .hostile import HostileBackend, Req, Script, chat_answer, response

pytestmark = pytest.mark.gateway


async def _polite(req: Req, w: asyncio.StreamWriter) -> None:
    w.write(chat_answer(req))


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileBackend]:
    b = HostileBackend(_polite).start()
    yield b
    b.stop()


@pytest.fixture
def script(hostile: HostileBackend) -> Iterator[Any]:
    """``script(fn)`` makes the backend answer POSTs with ``fn``; the polite one after."""

    def use(fn: Script) -> None:
        hostile.script = fn

    yield use
    hostile.script = _polite


@pytest.fixture(scope="module")
def hgw(
    gateways: GatewayFactory, hostile: HostileBackend, backend: str, redis_server: str, keys: Keys
) -> Gw:
    c = base_config(backend, redis_server, keys)
    up = hostile.url + "/v1"
    c["models"] = {
        "alice-chat": {"kind": "chat", "backends": [up], "timeout_s": 5},
        "bob-chat": {"kind": "chat", "backends": [up], "timeout_s": 5},
        "alice-embed": {"kind": "embeddings", "backends": [up], "timeout_s": 5},
    }
    c["upstream"] = {"breaker_failures": 1000, "retries": 0}  # max_response_bytes: 16 MiB
    c["health"] = {"interval_s": 1, "timeout_s": 1, "services": {}}
    c["qdrant"] = {"url": hostile.url}
    big = {"per_minute": 100000, "burst": 100000}
    c["rate_limits"] = {"chat_completions": big, "embeddings": big}
    return gateways(copy.deepcopy(c), "hostile")


def chat(gw: Gw, token: Tokens, sub: str, model: str, text: str) -> httpx.Response:
    with gw.client() as cl:
        return cl.post(
            "/v1/chat/completions",
            headers=token.headers(sub),
            json={"model": model, "messages": [{"role": "user", "content": text}]},
        )


def content(resp: httpx.Response) -> str:
    assert resp.status_code == 200, resp.text
    return str(resp.json()["choices"][0]["message"]["content"])


def test_an_unsolicited_100_continue_never_gives_alices_answer_to_bob(
    hgw: Gw, token: Tokens, script: Any
) -> None:
    first = threading.Event()

    async def slow_after_continue(req: Req, w: asyncio.StreamWriter) -> None:
        if "alice" in req.body.decode() and not first.is_set():
            first.set()
            w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await w.drain()
            await asyncio.sleep(0.6)
        w.write(chat_answer(req))

    script(slow_after_continue)
    for trial in range(3):
        first.clear()
        alice = chat(hgw, token, "alice", "alice-chat", f"alice secret {trial}")
        bob = chat(hgw, token, "bob", "bob-chat", f"bob question {trial}")
        assert content(bob) == f"answer to bob question {trial}"
        assert bob.json()["model"] == "bob-chat"
        assert content(alice) == f"answer to alice secret {trial}"


def test_an_extra_response_after_alices_never_reaches_bob(
    hgw: Gw, token: Tokens, script: Any
) -> None:
    async def extra(req: Req, w: asyncio.StreamWriter) -> None:
        once_more = "alice" in req.body.decode()
        w.write(chat_answer(req) * (2 if once_more else 1))  # once more, unasked

    script(extra)
    for trial in range(3):
        alice = chat(hgw, token, "alice", "alice-chat", f"alice secret {trial}")
        bob = chat(hgw, token, "bob", "bob-chat", f"bob question {trial}")
        assert content(bob) == f"answer to bob question {trial}"
        assert content(alice) == f"answer to alice secret {trial}"


def test_garbage_after_alices_body_never_reaches_bob(hgw: Gw, token: Tokens, script: Any) -> None:
    async def garbage(req: Req, w: asyncio.StreamWriter) -> None:
        tail = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n" + b'{"x":1}'
        w.write(chat_answer(req) + (tail if "alice" in req.body.decode() else b""))

    script(garbage)
    alice = chat(hgw, token, "alice", "alice-chat", "alice secret")
    bob = chat(hgw, token, "bob", "bob-chat", "bob question")
    assert content(bob) == "answer to bob question"
    assert content(alice) == "answer to alice secret"


def test_a_101_from_the_backend_is_a_backend_failure(hgw: Gw, token: Tokens, script: Any) -> None:
    async def upgrade(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n")
        w.write(response(b"{}"))

    script(upgrade)
    resp = chat(hgw, token, "alice", "alice-chat", "alice secret")
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "MODEL_UNAVAILABLE"


def test_a_backend_body_nested_100000_deep_is_503_as_for_a_bad_backend(
    hgw: Gw, token: Tokens, script: Any
) -> None:
    async def deep(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(response(b"[" * 100_000 + b"]" * 100_000))

    script(deep)
    err = documented_error(chat(hgw, token, "alice", "alice-chat", "hi"), 503, "MODEL_UNAVAILABLE")
    assert err["details"] == {"model": "alice-chat"}


def test_a_lone_surrogate_from_the_backend_is_a_bad_backend_not_500(
    hgw: Gw, token: Tokens, script: Any
) -> None:
    async def surrogate(req: Req, w: asyncio.StreamWriter) -> None:
        body = b'{"id":"x","object":"chat.completion","choices":[{"index":0,'
        body += b'"message":{"role":"assistant","content":"odd \\ud800"}}]}'
        w.write(response(body))

    script(surrogate)
    documented_error(chat(hgw, token, "alice", "alice-chat", "hi"), 503, "MODEL_UNAVAILABLE")


SECRET = "hunter2-do-not-show"
LEAKY = (
    '{"error":{"message":"db query failed: SELECT * FROM users; password='
    + SECRET
    + ' host=10.1.2.3"}}'
).encode()


@pytest.mark.parametrize("status", [b"500 Internal Server Error", b"400 Bad Request", b"422 X"])
def test_backend_error_text_never_reaches_the_client_but_the_log_without_secrets(
    hgw: Gw, token: Tokens, script: Any, status: bytes
) -> None:
    async def leaky(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(response(LEAKY, status))

    script(leaky)
    r = chat(hgw, token, "alice", "alice-chat", "hi")
    assert r.status_code in (400, 503)
    documented_error(
        r, r.status_code, "INVALID_PARAMS" if r.status_code == 400 else "MODEL_UNAVAILABLE"
    )
    for text in (SECRET, "db query failed", "SELECT", "10.1.2.3", "password"):
        assert text not in r.text
    rid = r.json()["error"]["request_id"]

    def logged() -> str:
        return next(
            (line for line in hgw.log().splitlines() if rid in line and "db query" in line), ""
        )

    line = wait_until(logged, 5, "the backend's error in the gateway log")
    assert SECRET not in line and "[redacted]" in line
    assert SECRET not in hgw.log()


@pytest.mark.parametrize("status", [b"500 Internal Server Error", b"400 Bad Request"])
def test_vector_database_error_text_never_reaches_the_client(
    hgw: Gw, token: Tokens, script: Any, status: bytes
) -> None:
    async def leaky(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(response(LEAKY, status))

    script(leaky)
    with hgw.client() as c:
        r = c.post(
            "/collections/docs/points/search",
            json={"vector": [0.1], "limit": 1},
            headers=token.headers(perms=["vector:search"]),
        )
    assert r.status_code in (400, 503)
    documented_error(
        r, r.status_code, "INVALID_PARAMS" if r.status_code == 400 else "MODEL_UNAVAILABLE"
    )
    for text in (SECRET, "db query failed", "SELECT", "10.1.2.3", "password"):
        assert text not in r.text


@pytest.mark.parametrize(
    "status",
    [b"301 Moved Permanently", b"302 Found", b"304 Not Modified", b"307 Temporary Redirect"],
)
def test_a_backend_redirect_with_a_json_body_is_not_relayed_as_200(
    hgw: Gw, token: Tokens, script: Any, status: bytes
) -> None:
    async def redirect(req: Req, w: asyncio.StreamWriter) -> None:
        answer = chat_answer(req).split(b"\r\n\r\n", 1)[1]
        w.write(response(answer, status, b"Location: http://127.0.0.1:9/elsewhere\r\n"))

    script(redirect)
    r = chat(hgw, token, "alice", "alice-chat", "hi")
    err = documented_error(r, 503, "MODEL_UNAVAILABLE")
    assert err["details"]["upstream_status"] == int(status[:3])
    assert "location" not in r.headers


@pytest.mark.parametrize("status", [b"401 Unauthorized", b"403 Forbidden", b"429 Too Many"])
def test_a_backend_refusing_the_gateway_is_a_backend_failure(
    hgw: Gw, token: Tokens, script: Any, status: bytes
) -> None:
    async def refuse(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(response(b'{"error":{"message":"no"}}', status))

    script(refuse)
    err = documented_error(chat(hgw, token, "alice", "alice-chat", "hi"), 503, "MODEL_UNAVAILABLE")
    assert err["details"]["upstream_status"] == int(status[:3])


def test_a_vector_database_redirect_is_not_followed_nor_relayed(
    hgw: Gw, token: Tokens, script: Any
) -> None:
    async def redirect(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(response(b'{"result":[]}', b"302 Found", b"Location: /elsewhere\r\n"))

    script(redirect)
    with hgw.client() as c:
        r = c.post(
            "/collections/docs/points/search",
            json={"vector": [0.1], "limit": 1},
            headers=token.headers(perms=["vector:search"]),
        )
    documented_error(r, 503, "MODEL_UNAVAILABLE")


def test_a_300_mb_backend_answer_is_503_not_buffered(hgw: Gw, token: Tokens, script: Any) -> None:
    async def huge(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (300 * 1024 * 1024))
        for _ in range(300):
            w.write(b" " * 1024 * 1024)
            await w.drain()

    script(huge)
    err = documented_error(chat(hgw, token, "alice", "alice-chat", "hi"), 503, "MODEL_UNAVAILABLE")
    assert err["details"] == {"model": "alice-chat", "reason": "too_large"}


def test_a_backend_answer_with_200000_headers_is_503(hgw: Gw, token: Tokens, script: Any) -> None:
    async def many(req: Req, w: asyncio.StreamWriter) -> None:
        lines = b"".join(b"X-H%d: v\r\n" % i for i in range(200_000))
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + lines + b"\r\n{}")

    script(many)
    err = documented_error(chat(hgw, token, "alice", "alice-chat", "hi"), 503, "MODEL_UNAVAILABLE")
    assert err["details"]["reason"] == "too_large"


def test_a_large_streamed_answer_is_relayed_not_refused(
    hgw: Gw, token: Tokens, script: Any
) -> None:
    event = b"data: " + b"x" * 1000 + b"\n\n"

    async def long_stream(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
        for _ in range(20_000):  # ~20 MB, more than max_response_bytes
            w.write(event)
        w.write(b"data: [DONE]\n\n")
        await w.drain()
        w.close()

    script(long_stream)
    body = {"model": "alice-chat", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with hgw.client() as c:
        r = c.post("/v1/chat/completions", json=body, headers=token.headers("alice"))
    assert r.status_code == 200
    assert len(r.content) > 20_000_000 and r.content.endswith(b"data: [DONE]\n\n")


def test_a_vector_database_answer_over_max_response_bytes_is_503(
    hgw: Gw, token: Tokens, script: Any
) -> None:
    async def huge(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(response(b"[" + b"1," * (9 * 1024 * 1024) + b"1]"))  # 18 MiB

    script(huge)
    with hgw.client() as c:
        r = c.post(
            "/collections/docs/points/search",
            json={"vector": [0.1], "limit": 1},
            headers=token.headers(perms=["vector:search"]),
        )
    assert documented_error(r, 503, "MODEL_UNAVAILABLE")["details"] == {"reason": "too_large"}


def search(gw: Gw, token: Tokens) -> httpx.Response:
    with gw.client() as c:
        return c.post(
            "/collections/docs/points/search",
            json={"vector": [0.1], "limit": 1},
            headers=token.headers(perms=["vector:search"]),
        )


def test_a_vector_database_interim_response_is_skipped_and_the_answer_relayed(
    hgw: Gw, token: Tokens, script: Any
) -> None:
    async def interim(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")
        w.write(response(b'{"result":[{"id":%d}],"status":"ok"}' % req.index))

    script(interim)
    r = search(hgw, token)
    assert r.status_code == 200, r.text
    assert r.json()["result"][0]["id"] >= 1 and "link" not in r.headers


@pytest.mark.parametrize(
    "wire",
    [
        b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"result":',  # cut mid-body
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
    ],
    ids=["cut", "garbage", "101"],
)
def test_a_broken_vector_database_answer_is_503_disconnect(
    hgw: Gw, token: Tokens, script: Any, wire: bytes
) -> None:
    async def broken(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(wire)
        await w.drain()
        w.close()

    script(broken)
    err = documented_error(search(hgw, token), 503, "MODEL_UNAVAILABLE")
    assert err["details"] == {"reason": "disconnect"}


def test_an_extra_vector_database_response_never_answers_the_next_search(
    hgw: Gw, token: Tokens, script: Any
) -> None:
    async def extra(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(response(b'{"result":"for %d"}' % req.index) + response(b'{"result":"stray"}'))

    script(extra)
    first, second = search(hgw, token), search(hgw, token)
    assert first.status_code == second.status_code == 200
    assert first.json()["result"] != second.json()["result"]
    assert "stray" not in first.text + second.text
