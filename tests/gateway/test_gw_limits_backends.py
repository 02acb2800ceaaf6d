"""Rate limits across two processes, Redis outages, backend failures, breaker, timeouts."""

from __future__ import annotations

import copy
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from .conftest import GatewayFactory, Gw, Tokens, wait_until

CHAT = {"model": "llama-3-chat", "messages": [{"role": "user", "content": "hi"}]}
COMP = {"model": "llama-3-instruct", "prompt": "x", "max_tokens": 5}


def _fire(
    urls: list[str], path: str, body: dict[str, Any], headers: dict[str, str]
) -> list[httpx.Response]:
    def one(url: str) -> httpx.Response:
        with httpx.Client(timeout=20) as c:
            return c.post(url + path, json=body, headers=headers)

    with ThreadPoolExecutor(max_workers=len(urls)) as ex:
        return list(ex.map(one, urls))


def test_two_processes_share_limits_exactly(gw: Gw, gw2: Gw, token: Tokens) -> None:
    # completions: burst 10, 1/min in the test config -> 11 concurrent requests split over two
    # gateway processes: exactly 10 allowed, whatever the timing
    headers = token.headers("rl_" + uuid.uuid4().hex[:8])
    urls = [gw.url, gw2.url] * 5 + [gw.url]
    results = _fire(urls, "/v1/completions", COMP, headers)
    codes = sorted(r.status_code for r in results)
    assert codes == [200] * 10 + [429], codes
    ok = [r for r in results if r.status_code == 200]
    assert sorted(int(r.headers["x-ratelimit-remaining"]) for r in ok) == list(range(10))
    for r in results:
        assert r.headers["x-ratelimit-limit"] == "1"
        assert int(r.headers["x-ratelimit-reset"]) > time.time()
    limited = next(r for r in results if r.status_code == 429)
    err = limited.json()["error"]
    assert err["code"] == "RATE_LIMITED" and err["type"] == "rate_limit_error"
    assert limited.headers["retry-after"] == limited.headers["x-ratelimit-retry-after"]
    assert 50 <= int(limited.headers["retry-after"]) <= 60
    assert limited.headers["x-ratelimit-remaining"] == "0"


def _overlapped(gw: Gw) -> float:
    with gw.client() as c:
        for line in c.get("/metrics").text.splitlines():
            if line.startswith("gateway_ratelimit_overlapped_total "):
                return float(line.split()[-1])
    return 0.0


def test_overlapped_checks_still_decide_every_request_exactly(gw: Gw, token: Tokens) -> None:
    # completions: burst 10, 1/min. After the first (waited-for) decision the next ones go to
    # Redis together with the request, while the subject's last decision leaves room.
    headers = token.headers("ov_" + uuid.uuid4().hex[:8])
    before = _overlapped(gw)
    with gw.client() as c:
        results = [c.post("/v1/completions", json=COMP, headers=headers) for _ in range(12)]
    assert [r.status_code for r in results] == [200] * 10 + [429] * 2
    assert [int(r.headers["x-ratelimit-remaining"]) for r in results] == [*range(9, -1, -1), 0, 0]
    assert results[-1].json()["error"]["code"] == "RATE_LIMITED"
    assert _overlapped(gw) - before == 8  # requests 2..9: room of at least 2 left


def test_a_refusal_that_arrives_while_the_backend_works_cancels_the_request(
    gw: Gw, gw2: Gw, token: Tokens
) -> None:
    sub = "ovc_" + uuid.uuid4().hex[:8]
    headers = token.headers(sub)
    with gw.client() as c:
        assert c.post("/v1/completions", json=COMP, headers=headers).status_code == 200
    # another gateway process uses up the room this one last saw (9 left)
    used = _fire([gw2.url] * 9, "/v1/completions", COMP, headers)
    assert sorted(r.status_code for r in used) == [200] * 9
    before = _overlapped(gw)
    t0 = time.monotonic()
    with gw.client() as c:
        r = c.post("/v1/completions", json=dict(COMP, model="slow-instruct"), headers=headers)
    elapsed = time.monotonic() - t0
    assert _overlapped(gw) - before == 1  # it went out together with its check
    assert r.status_code == 429 and r.json()["error"]["code"] == "RATE_LIMITED"
    assert r.headers["x-ratelimit-remaining"] == "0"
    assert elapsed < 1.5, "the backend takes 3 s: the refusal must not wait for it"


def test_chat_burst_default_table(gw: Gw, token: Tokens) -> None:
    headers = token.headers("rlchat_" + uuid.uuid4().hex[:8])
    results = _fire([gw.url] * 11, "/v1/chat/completions", CHAT, headers)
    codes = sorted(r.status_code for r in results)
    # 60/min burst 10: 10 pass at once; an 11th only if a full second passed meanwhile
    assert codes.count(429) <= 1 and codes.count(200) >= 10
    assert all(r.headers["x-ratelimit-limit"] == "60" for r in results)


def test_limits_are_per_subject(gw: Gw, token: Tokens) -> None:
    a = token.headers("rla_" + uuid.uuid4().hex[:8])
    _fire([gw.url] * 11, "/v1/completions", COMP, a)
    with gw.client() as c:
        assert c.post("/v1/completions", json=COMP, headers=a).status_code == 429
        assert c.post("/v1/completions", json=COMP, headers=token.headers()).status_code == 200


class _Blackhole:
    """A TCP port that accepts connections (kernel backlog) and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def blackhole() -> Any:
    b = _Blackhole()
    yield b
    b.close()


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_redis_down(
    gateways: GatewayFactory, cfg: dict[str, Any], token: Tokens, blackhole: Any, mode: str
) -> None:
    c = copy.deepcopy(cfg)
    c["redis"] = {
        "url": f"redis://127.0.0.1:{blackhole.port}/0",
        "socket_timeout_ms": 200,
        "failure_mode": mode,
    }
    g = gateways(c, f"redis-{mode}")
    with g.client(timeout=10) as cl:
        for _ in range(3):
            t0 = time.monotonic()
            r = cl.post("/v1/chat/completions", json=CHAT, headers=token.headers())
            elapsed = time.monotonic() - t0
            assert elapsed < 3, elapsed  # bounded by socket_timeout_ms, never a hang
            if mode == "open":
                assert r.status_code == 200
                assert r.headers["x-ratelimit-limit"] == "60"
                assert "x-ratelimit-remaining" not in r.headers
            else:
                assert r.status_code == 503
                assert r.json()["error"]["code"] == "MODEL_UNAVAILABLE"
                assert r.json()["error"]["details"]["reason"] == "redis_unavailable"
        metrics = cl.get("/metrics").text
    assert 'gateway_redis_errors_total{op="ratelimit"}' in metrics
    if mode == "open":
        line = next(
            x for x in metrics.splitlines() if x.startswith("gateway_ratelimit_failopen_total")
        )
        assert float(line.split()[-1]) >= 3


def test_slow_backend_504(gw: Gw, token: Tokens) -> None:
    with gw.client() as c:
        t0 = time.monotonic()
        r = c.post(
            "/v1/chat/completions", json=dict(CHAT, model="slow-chat"), headers=token.headers()
        )
        elapsed = time.monotonic() - t0
    assert r.status_code == 504, r.text
    assert r.json()["error"]["code"] == "TIMEOUT"
    assert elapsed < 2.5  # timeout_s 0.5, backend sleeps 3


def test_failing_backend_503(gw: Gw, token: Tokens) -> None:
    with gw.client() as c:
        r = c.post(
            "/v1/chat/completions", json=dict(CHAT, model="fail-chat"), headers=token.headers()
        )
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["code"] == "MODEL_UNAVAILABLE" and err["details"]["upstream_status"] == 500
    assert "Traceback" not in r.text


def test_backend_down_breaker_opens_then_fast_503(gw: Gw, token: Tokens) -> None:
    req = dict(CHAT, model="dead-chat")
    with gw.client() as c:
        codes = []
        for _ in range(6):
            r = c.post("/v1/chat/completions", json=req, headers=token.headers())
            codes.append(r.status_code)
            assert r.json()["error"]["code"] == "MODEL_UNAVAILABLE"
        assert set(codes) == {503}
        # breaker (or the active health check) has ejected it: answered without any upstream try
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            r = c.post("/v1/chat/completions", json=req, headers=token.headers())
            times.append(time.perf_counter() - t0)
            assert r.status_code == 503
            assert "no healthy backend" in r.json()["error"]["message"]
    assert min(times) < 0.1, times
    with gw.client() as c:
        ops = token.headers(perms=["health:detailed"])
        st = c.get("/health", params={"detailed": "true"}, headers=ops).json()
    dead = st["details"]["backends"]["dead-chat"][0]
    assert dead["breaker"] == "open" or dead["healthy"] is False


def test_retry_on_other_backend_before_first_byte(gw: Gw, token: Tokens) -> None:
    # mixed-chat: one dead backend, one live one; every request succeeds
    with gw.client() as c:
        for _ in range(4):
            r = c.post(
                "/v1/chat/completions", json=dict(CHAT, model="mixed-chat"), headers=token.headers()
            )
            assert r.status_code == 200, r.text


# ----------------------------------------------------------------------------- unit level
def test_pool_least_outstanding_and_breaker() -> None:
    from citadel_gateway.backends import CLOSED, HALF_OPEN, OPEN, BackendState, Pool
    from citadel_gateway.config import Upstream

    cfg = Upstream(breaker_failures=2, breaker_open_s=0.2)
    a, b = BackendState("http://a", None, cfg), BackendState("http://b", None, cfg)
    pool = Pool("m", [a, b])
    first = pool.pick(set())
    second = pool.pick(set())
    assert {first, second} == {a, b}  # least outstanding spreads the load
    assert first is not None and second is not None
    first.release(True)
    assert pool.pick(set()) is first  # 0 outstanding beats 1
    first.release(True)
    second.release(True)
    for _ in range(2):
        x = pool.pick({b})
        assert x is a
        a.release(False, "boom")
    assert a.breaker == OPEN
    assert pool.pick({b}) is None  # open: no traffic
    time.sleep(0.25)
    probe = pool.pick({b})
    assert probe is a and a.breaker == HALF_OPEN
    assert pool.pick({b}) is None  # only one half-open probe at a time
    a.release(True)
    assert a.breaker == CLOSED


def test_gcra_script_unit(redis_server: str) -> None:
    import asyncio

    from citadel_gateway.config import Limit, Redis
    from citadel_gateway.ratelimit import RateLimiter
    from citadel_gateway.redisconn import RedisConn

    async def run() -> list[bool]:
        conn = RedisConn(Redis(url=redis_server))
        await conn.client.call(b"SCRIPT", b"FLUSH")  # forces the NOSCRIPT fallback path
        rl = RateLimiter(conn, prefix="unit:" + uuid.uuid4().hex + ":")
        out = [(await rl.check("b", "s", Limit(per_minute=600, burst=3))).allowed for _ in range(4)]
        ttl = await conn.client.call(b"PTTL", rl.prefix + "b:s")
        await conn.close()
        assert 0 < ttl <= 2000
        return out

    assert asyncio.run(run()) == [True, True, True, False]


def test_behind_a_trusted_proxy_per_ip_limits_use_the_real_client(
    gateways: GatewayFactory, cfg: dict[str, Any]
) -> None:
    c = copy.deepcopy(cfg)
    c["listen"] = {"trusted_proxies": ["127.0.0.1/32"]}
    c["rate_limits"] = {"health": {"per_minute": 1, "burst": 2}}
    # its own Redis database: this tiny health limit must not spend other gateways' buckets
    c["redis"] = dict(c["redis"], url=c["redis"]["url"].rsplit("/", 1)[0] + "/5")
    g = gateways(c, "edge")
    a = {"X-Real-IP": "203.0.113." + str(uuid.uuid4().int % 200 + 1)}
    b = {"X-Real-IP": "198.51.100." + str(uuid.uuid4().int % 200 + 1)}
    with g.client() as client:
        codes_a = [client.get("/health", headers=a).status_code for _ in range(3)]
        codes_b = [client.get("/health", headers=b).status_code for _ in range(2)]
        bogus = client.get("/health", headers={"X-Real-IP": "not-an-ip"})
    assert codes_a == [200, 200, 429]  # the edge's own address is not the bucket
    assert codes_b == [200, 200]
    assert bogus.status_code in (200, 429)  # falls back to the peer (the proxy) itself
    wait_until(lambda: f'"client":"{a["X-Real-IP"]}"' in g.log(), 5, "access log line")


def test_x_real_ip_from_an_untrusted_peer_is_ignored(gw: Gw) -> None:
    spoof = "192.0.2." + str(uuid.uuid4().int % 200 + 1)
    with gw.client() as c:
        # (the shared test gateway's 127.0.0.1 health bucket may be spent by earlier tests)
        assert c.get("/health", headers={"X-Real-IP": spoof}).status_code in (200, 429)
    time.sleep(0.3)
    assert f'"client":"{spoof}"' not in gw.log()
