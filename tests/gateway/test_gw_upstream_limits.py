"""Finding 4 of the hardening issue: what a backend sends back is bounded. Too many or too
large response headers and a body read whole beyond ``upstream.max_response_bytes`` are a
broken backend (TooLarge; the gateway answers 503), found before it is all buffered; a
streamed body is relayed as it comes, whatever its size."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from citadel_gateway.upstream import TooLarge, UpstreamClient

from .hostile import HostileBackend, Req, Script, response

pytestmark = pytest.mark.gateway

JSON = [(b"Content-Type", b"application/json")]
MiB = 1024 * 1024


def client(**kw: int) -> UpstreamClient:
    return UpstreamClient(
        max_connections=10, connect_timeout_s=1.0, keepalive_s=4.0, max_header_bytes=65536, **kw
    )


@pytest.fixture
def serve() -> Iterator[object]:
    started: list[HostileBackend] = []

    def start(script: Script) -> str:
        b = HostileBackend(script).start()
        started.append(b)
        return b.url + "/v1/chat/completions"

    yield start
    for b in started:
        b.stop()


def headers_response(n: int, size: int = 10) -> bytes:
    lines = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * size) for i in range(n))
    return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + lines + b"\r\n{}"


@pytest.mark.asyncio
@pytest.mark.parametrize("count", [101, 200_000])
async def test_too_many_response_headers_are_refused(serve: object, count: int) -> None:
    async def script(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(headers_response(count, 1))

    url = serve(script)  # type: ignore[operator]
    with pytest.raises(TooLarge, match="more than 100 response headers"):
        await client(max_headers=100).post(url, JSON, b"{}")


@pytest.mark.asyncio
@pytest.mark.parametrize("size", [70_000, 16 * MiB])
async def test_response_headers_larger_than_the_limit_are_refused_early(
    serve: object, size: int
) -> None:
    async def script(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 200 OK\r\nX-Big: " + b"v" * size + b"\r\nContent-Length: 2\r\n\r\n{}")

    url = serve(script)  # type: ignore[operator]
    t0 = time.monotonic()
    with pytest.raises(TooLarge, match="headers larger than 65536 bytes"):
        await client().post(url, JSON, b"{}")
    assert time.monotonic() - t0 < 2


@pytest.mark.asyncio
async def test_headers_within_the_limits_pass(serve: object) -> None:
    async def script(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(headers_response(90, 500))

    url = serve(script)  # type: ignore[operator]
    resp = await client(max_headers=100).post(url, JSON, b"{}")
    assert resp.status == 200 and len(resp.headers) == 91
    assert await resp.read(1024) == b"{}"
    resp.release()


@pytest.mark.asyncio
async def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(serve: object) -> None:
    async def script(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (300 * MiB))
        for _ in range(300):
            w.write(b"x" * MiB)
            await w.drain()

    url = serve(script)  # type: ignore[operator]
    c = client()
    resp = await c.post(url, JSON, b"{}")
    with pytest.raises(TooLarge, match="larger than 1048576 bytes"):
        await resp.read(MiB)
    assert resp._size <= 2 * MiB  # not buffered
    resp.release()
    assert list(c.stats().values()) == [0]  # closed, not pooled


@pytest.mark.asyncio
async def test_a_chunked_body_over_the_limit_is_refused_as_it_grows(serve: object) -> None:
    async def script(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(300):
            w.write(b"100000\r\n" + b"x" * MiB + b"\r\n")
            await w.drain()
        w.write(b"0\r\n\r\n")

    url = serve(script)  # type: ignore[operator]
    resp = await client().post(url, JSON, b"{}")
    with pytest.raises(TooLarge):
        await resp.read(2 * MiB)
    resp.release()


@pytest.mark.asyncio
async def test_a_large_streamed_body_is_relayed_chunk_by_chunk(serve: object) -> None:
    async def script(req: Req, w: asyncio.StreamWriter) -> None:
        w.write(response(b"x" * (8 * MiB)))

    url = serve(script)  # type: ignore[operator]
    resp = await client().post(url, JSON, b"{}")
    total = 0
    while (chunk := await resp.next_chunk()) is not None:
        total += len(chunk)
    assert total == 8 * MiB
    resp.release()
