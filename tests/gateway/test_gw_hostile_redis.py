"""Finding 9 of the hardening issue: a malformed ``EVALSHA`` reply (an integer, nil, a short
array, strings) is a Redis failure: the configured ``redis.failure_mode`` answers (open: the
request is served; closed: 503 MODEL_UNAVAILABLE), on the direct path and on the overlapped one
(the decision sent together with the upstream request), never a 500."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest import GatewayFactory, Gw, Tokens, documented_error
from .hostile_redis import VALID, HostileRedis

pytestmark = pytest.mark.gateway

MALFORMED = {
    "integer": b":1\r\n",
    "nil": b"$-1\r\n",
    "nil-array": b"*-1\r\n",
    "short-array": b"*2\r\n:1\r\n:9\r\n",
    "strings": b"*4\r\n$1\r\n1\r\n$1\r\n9\r\n$1\r\n0\r\n$1\r\nx\r\n",
    "nested": b"*4\r\n*1\r\n:1\r\n:9\r\n:0\r\n:1\r\n",
    "simple-string": b"+OK\r\n",
}
CHAT = {"model": "llama-3-chat", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def hostile_redis() -> Iterator[HostileRedis]:
    r = HostileRedis().start()
    yield r
    r.stop()


def _gateway(gateways: GatewayFactory, cfg: dict[str, Any], redis: HostileRedis, mode: str) -> Gw:
    c = copy.deepcopy(cfg)
    c["redis"] = {"url": redis.url, "failure_mode": mode, "retry_after_failure_s": 0}
    c["cache"] = {"enabled": False}
    c["rate_limits"] = {"overlap_upstream": True}
    c["health"] = {"interval_s": 5, "timeout_s": 1, "services": {}}
    return gateways(c, f"hostile-redis-{mode}")


@pytest.fixture(scope="module")
def open_gw(gateways: GatewayFactory, cfg: dict[str, Any], hostile_redis: HostileRedis) -> Gw:
    return _gateway(gateways, cfg, hostile_redis, "open")


@pytest.fixture(scope="module")
def closed_gw(gateways: GatewayFactory, cfg: dict[str, Any], hostile_redis: HostileRedis) -> Gw:
    return _gateway(gateways, cfg, hostile_redis, "closed")


def chat(gw: Gw, headers: dict[str, str]) -> httpx.Response:
    with gw.client() as c:
        return c.post("/v1/chat/completions", json=CHAT, headers=headers)


@pytest.mark.parametrize("reply", list(MALFORMED.values()), ids=list(MALFORMED))
def test_gcra_reply_refuses_what_the_script_cannot_return(reply: bytes) -> None:
    from citadel_gateway.ratelimit import MalformedReply, gcra_reply
    from citadel_gateway.resp import parse

    value, _ = parse(reply)
    with pytest.raises(MalformedReply):
        gcra_reply(value)


def test_gcra_reply_reads_the_scripts_answer() -> None:
    from citadel_gateway.ratelimit import gcra_reply

    assert gcra_reply([1, 9, 0, 1000]) == (1, 9, 0, 1000)


@pytest.mark.parametrize("mode", ["open", "closed"])
@pytest.mark.parametrize("path", ["direct", "overlapped"])
@pytest.mark.parametrize("kind", list(MALFORMED))
def test_a_malformed_evalsha_reply_is_the_configured_failure_mode(
    open_gw: Gw,
    closed_gw: Gw,
    hostile_redis: HostileRedis,
    token: Tokens,
    mode: str,
    path: str,
    kind: str,
) -> None:
    gw = open_gw if mode == "open" else closed_gw
    headers = token.headers()  # a fresh subject: its first decision is always a direct one
    if path == "overlapped":
        # a valid first decision with room left: the next one goes out with the request
        hostile_redis.evalshas, hostile_redis.evalsha = 0, [VALID, MALFORMED[kind]]
        assert chat(gw, headers).status_code == 200
    else:
        hostile_redis.evalshas, hostile_redis.evalsha = 0, [MALFORMED[kind]]
    r = chat(gw, headers)
    assert hostile_redis.evalshas == (2 if path == "overlapped" else 1)
    if mode == "open":
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "echo: hi"
    else:
        err = documented_error(r, 503, "MODEL_UNAVAILABLE")
        assert err["details"] == {"reason": "redis_unavailable"}
    hostile_redis.evalsha = [VALID]


def test_arrays_nested_without_end_are_a_broken_connection() -> None:
    from citadel_gateway.resp import RespConnectionError, parse

    with pytest.raises(RespConnectionError, match="nested"):
        parse(b"*1\r\n" * 100_000 + b":1\r\n")
