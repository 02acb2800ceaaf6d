"""Finding 1 of the hardening issue: a pooled upstream connection must never hand one request's
answer to the next. Hostile backends (tests/gateway/hostile.py) send interim responses nobody
asked for, extra responses and garbage; every second request must get its own answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from citadel_gateway.upstream import Disconnected, UpstreamClient
from citadel_gateway.upstream import response as upstream_response

from .hostile import HostileBackend, Req, Script, response

pytestmark = pytest.mark.gateway

JSON = [(b"Content-Type", b"application/json")]


def answer(req: Req) -> bytes:
    return response(b"answer for " + req.body)


def client() -> UpstreamClient:
    return UpstreamClient(max_connections=10, connect_timeout_s=1.0, keepalive_s=4.0)


async def ask(c: UpstreamClient, url: str, body: bytes) -> tuple[int, bytes]:
    resp = await c.post(url, JSON, body)
    try:
        return resp.status, await resp.read()
    finally:
        resp.release()


@pytest.fixture
def hostile() -> Iterator[list[HostileBackend]]:
    started: list[HostileBackend] = []
    yield started
    for b in started:
        b.stop()


def run(hostile: list[HostileBackend], script: Script) -> str:
    b = HostileBackend(script).start()
    hostile.append(b)
    return b.url + "/v1/chat/completions"


@pytest.mark.asyncio
async def test_an_unsolicited_100_continue_is_interim_the_real_answer_goes_to_its_own_request(
    hostile: list[HostileBackend],
) -> None:
    async def script(req: Req, w: asyncio.StreamWriter) -> None:
        if req.index == 1:
            w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await w.drain()
            await asyncio.sleep(0.6)  # the real answer comes later
        w.write(answer(req))

    url = run(hostile, script)
    c = client()
    assert await ask(c, url, b"alice") == (200, b"answer for alice")
    assert await ask(c, url, b"bob") == (200, b"answer for bob")
    c.close()


@pytest.mark.asyncio
async def test_103_early_hints_and_several_interims_are_skipped_with_their_headers(
    hostile: list[HostileBackend],
) -> None:
    async def script(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n")
        w.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n")
        w.write(answer(req))

    url = run(hostile, script)
    c = client()
    resp = await c.post(url, JSON, b"alice")
    assert resp.status == 200 and "link" not in resp.headers
    assert await resp.read() == b"answer for alice"
    resp.release()
    assert await ask(c, url, b"bob") == (200, b"answer for bob")
    c.close()


@pytest.mark.asyncio
async def test_101_switching_protocols_is_refused(hostile: list[HostileBackend]) -> None:
    async def script(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n")
        w.write(answer(req))

    url = run(hostile, script)
    with pytest.raises(Disconnected):
        await ask(client(), url, b"alice")


@pytest.mark.asyncio
async def test_endless_interim_responses_are_a_broken_backend(
    hostile: list[HostileBackend],
) -> None:
    async def script(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 100 Continue\r\n\r\n" * (upstream_response.MAX_INTERIM + 1))
        w.write(answer(req))

    url = run(hostile, script)
    with pytest.raises(Disconnected, match="interim"):
        await ask(client(), url, b"alice")


@pytest.mark.asyncio
async def test_an_extra_response_in_the_same_write_is_not_read_by_the_next_request(
    hostile: list[HostileBackend],
) -> None:
    async def script(req: Req, w: asyncio.StreamWriter) -> None:
        extra = response(b"stray answer for " + req.body) if req.index == 1 else b""
        w.write(answer(req) + extra)

    url = run(hostile, script)
    c = client()
    assert await ask(c, url, b"alice") == (200, b"answer for alice")
    assert await ask(c, url, b"bob") == (200, b"answer for bob")
    assert hostile[0].connections == 2  # the out-of-step one was closed, not reused
    c.close()


@pytest.mark.asyncio
async def test_an_extra_response_arriving_on_an_idle_connection_closes_it(
    hostile: list[HostileBackend],
) -> None:
    async def script(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(answer(req))
        if req.index == 1:
            await w.drain()
            await asyncio.sleep(0.1)
            w.write(response(b"stray answer for " + req.body))

    url = run(hostile, script)
    c = client()
    assert await ask(c, url, b"alice") == (200, b"answer for alice")
    await asyncio.sleep(1.0)  # the stray response comes 0.1 s after the answer
    assert await ask(c, url, b"bob") == (200, b"answer for bob")
    assert hostile[0].connections == 2
    c.close()


@pytest.mark.asyncio
async def test_bytes_the_event_loop_has_not_delivered_yet_stop_the_reuse(
    hostile: list[HostileBackend],
) -> None:
    async def script(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(answer(req))
        if req.index == 1:
            await w.drain()
            await asyncio.sleep(0.1)
            w.write(response(b"stray answer for " + req.body))

    url = run(hostile, script)
    c = client()
    assert await ask(c, url, b"alice") == (200, b"answer for alice")
    time.sleep(1.0)  # the loop is blocked: the stray bytes (0.1 s after) sit unread
    assert await ask(c, url, b"bob") == (200, b"answer for bob")
    assert hostile[0].connections == 2
    c.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "garbage", [b"garbage", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 100 Continue\r\n\r\n", b"\0"]
)
async def test_anything_after_the_body_closes_the_connection(
    hostile: list[HostileBackend], garbage: bytes
) -> None:
    async def script(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(answer(req) + (garbage if req.index == 1 else b""))

    url = run(hostile, script)
    c = client()
    assert await ask(c, url, b"alice") == (200, b"answer for alice")
    assert await ask(c, url, b"bob") == (200, b"answer for bob")
    assert hostile[0].connections == 2
    c.close()


@pytest.mark.asyncio
async def test_an_interim_response_then_close_is_a_disconnect(
    hostile: list[HostileBackend],
) -> None:
    async def script(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await w.drain()
        w.close()

    url = run(hostile, script)
    with pytest.raises(Disconnected):
        await ask(client(), url, b"alice")


@pytest.mark.asyncio
async def test_a_well_behaved_backend_still_gets_one_kept_alive_connection(
    hostile: list[HostileBackend],
) -> None:
    async def script(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(answer(req))

    url = run(hostile, script)
    c = client()
    for name in (b"alice", b"bob", b"carol"):
        assert await ask(c, url, name) == (200, b"answer for " + name)
    assert hostile[0].connections == 1
    c.close()
