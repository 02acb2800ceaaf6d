"""The lean upstream HTTP client (citadel_gateway.upstream) against small scripted servers:
keep-alive reuse, chunked and close-delimited bodies, streaming, stale connections, broken
responses, back-pressure, the in-flight limit, and header injection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from citadel_gateway.upstream import ConnectFailed, Disconnected, UpstreamClient
from citadel_gateway.upstream import response as upstream_response

from .conftest import free_port

pytestmark = pytest.mark.gateway

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
JSON = [(b"Content-Type", b"application/json")]


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.heads: list[bytes] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[tuple[Server, str]]:
    srv = Server(handler)
    server = await asyncio.start_server(srv._handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield srv, f"http://127.0.0.1:{port}/v1/chat/completions"
    finally:
        server.close()


def client(**kw: float) -> UpstreamClient:
    args = {"max_connections": 10, "connect_timeout_s": 1.0, "keepalive_s": 4.0, **kw}
    return UpstreamClient(**args)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_keep_alive_reuses_one_connection_and_sends_what_it_was_given() -> None:
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, body = await read_request(reader)
            heads.append(head)
            writer.write(ok(body, b"X-GPU-Utilization: 42.5\r\n"))

    async with serve(handler) as (srv, url):
        c = client()
        for i in range(5):
            resp = await c.post(url, [*JSON, (b"X-Request-ID", b"r%d" % i)], b'{"i":%d}' % i)
            assert resp.status == 200
            assert resp.headers["x-gpu-utilization"] == "42.5"
            assert await resp.read() == b'{"i":%d}' % i
            resp.release()
        assert srv.connections == 1
        assert heads[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:")
        assert (
            b"\r\nContent-Length: 7\r\nContent-Type: application/json\r\nX-Request-ID: r0"
            in (heads[0])
        )
        c.close()


@pytest.mark.asyncio
async def test_chunked_body_arrives_chunk_by_chunk() -> None:
    go = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n6\r\ndata:1\r\n"
        )
        await go.wait()
        writer.write(b"6\r\ndata:2\r\n0\r\n\r\n")
        await reader.read()

    async with serve(handler) as (_, url):
        c = client()
        resp = await c.post(url, JSON, b"{}")
        assert resp.headers["content-type"] == "text/event-stream"
        assert await resp.next_chunk() == b"data:1"  # before the rest was even written
        go.set()
        assert await resp.next_chunk() == b"data:2"
        assert await resp.next_chunk() is None
        resp.release()


@pytest.mark.asyncio
async def test_body_delimited_by_close_is_complete() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()

    async with serve(handler) as (_, url):
        resp = await client().post(url, JSON, b"{}")
        assert await resp.read() == b"all of it"
        resp.release()


@pytest.mark.asyncio
async def test_a_kept_alive_connection_the_server_closed_is_retried_on_a_fresh_one() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, body = await read_request(reader)
        writer.write(ok(body))
        if srv.connections == 1:
            # the next request finds the connection closed before anything was answered
            await read_request(reader)
            return
        while True:
            _, body = await read_request(reader)
            writer.write(ok(body))

    async with serve(handler) as (srv, url):
        c = client()
        first = await c.post(url, JSON, b"1")
        assert await first.read() == b"1"
        first.release()
        second = await c.post(url, JSON, b"2")
        assert await second.read() == b"2"
        second.release()
        assert srv.connections == 2


@pytest.mark.asyncio
async def test_idle_connections_older_than_keepalive_are_not_reused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _, body = await read_request(reader)
            writer.write(ok(body))

    async with serve(handler) as (srv, url):
        c = client(keepalive_s=0.05)
        for _ in range(2):
            resp = await c.post(url, JSON, b"x")
            await resp.read()
            resp.release()
            await asyncio.sleep(0.1)
        assert srv.connections == 2


@pytest.mark.asyncio
async def test_server_dies_mid_body_is_disconnected() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await writer.drain()

    async with serve(handler) as (_, url):
        resp = await client().post(url, JSON, b"{}")
        with pytest.raises(Disconnected, match="before the response ended"):
            await resp.read()
        resp.release()


@pytest.mark.asyncio
async def test_malformed_response_is_disconnected() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await reader.read()

    async with serve(handler) as (_, url):
        with pytest.raises(Disconnected, match="malformed response"):
            await client().post(url, JSON, b"{}")


@pytest.mark.asyncio
async def test_nothing_listening_is_connect_failed() -> None:
    with pytest.raises(ConnectFailed, match="cannot connect"):
        await client().post(f"http://127.0.0.1:{free_port()}/v1/x", JSON, b"{}")


@pytest.mark.asyncio
async def test_connect_timeout_is_connect_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()

    async def never(*args: object, **kw: object) -> None:
        await asyncio.sleep(10)

    monkeypatch.setattr(loop, "create_connection", never)
    with pytest.raises(ConnectFailed, match=r"connect timeout after 0\.1s"):
        await client(connect_timeout_s=0.1).post("http://127.0.0.1:9/v1/x", JSON, b"{}")


@pytest.mark.asyncio
async def test_a_response_not_read_to_its_end_closes_its_connection() -> None:
    backend_saw_eof = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await writer.drain()
        await reader.read()  # returns at the client's close: the backend sees the disconnect
        backend_saw_eof.set()

    async with serve(handler) as (_, url):
        c = client()
        resp = await c.post(url, JSON, b"{}")
        assert await resp.next_chunk() == b"abc"
        resp.release()  # e.g. the gateway's client went away mid-stream
        await asyncio.wait_for(backend_saw_eof.wait(), 2)
        assert list(c.stats().values()) == [0]  # nothing went back to the pool


@pytest.mark.asyncio
async def test_a_slow_reader_pauses_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream_response, "HIGH_WATER", 64 * 1024)
    monkeypatch.setattr(upstream_response, "LOW_WATER", 16 * 1024)
    size = 4 * 1024 * 1024

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        writer.write(b"x" * size)
        await writer.drain()

    async with serve(handler) as (_, url):
        resp = await client().post(url, JSON, b"{}")
        await asyncio.sleep(0.2)
        assert resp._paused and resp._size < size  # stopped reading, not buffering it all
        assert len(await resp.read()) == size
        resp.release()


@pytest.mark.asyncio
async def test_in_flight_requests_are_limited() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _, body = await read_request(reader)
            await release.wait()
            writer.write(ok(body))

    async with serve(handler) as (_, url):
        c = client(max_connections=1)
        first = asyncio.ensure_future(c.post(url, JSON, b"1"))
        second = asyncio.ensure_future(c.post(url, JSON, b"2"))
        await asyncio.sleep(0.1)
        assert not first.done() and not second.done()
        release.set()
        r1 = await first
        await asyncio.sleep(0.05)
        assert not second.done()  # its slot is still held by the unreleased first response
        await r1.read()
        r1.release()
        r2 = await second
        assert await r2.read() == b"2"
        r2.release()


def test_a_header_value_with_a_line_break_is_refused() -> None:
    async def go() -> None:
        await client().post("http://127.0.0.1:9/v1/x", [(b"X-Request-ID", b"a\r\nEvil: 1")], b"")

    with pytest.raises(ValueError, match="line break"):
        asyncio.run(go())


@pytest.mark.asyncio
async def test_a_get_has_no_body_and_shares_the_kept_alive_connection() -> None:
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, body = await read_request(reader)
            heads.append(head)
            writer.write(ok(b"up" if head.startswith(b"GET") else body))

    async with serve(handler) as (srv, url):
        c = client()
        got = await c.get(url, [(b"Authorization", b"Bearer k")])
        assert (got.status, await got.read()) == (200, b"up")
        got.release()
        posted = await c.post(url, [], b"x")
        assert await posted.read() == b"x"
        posted.release()
        assert srv.connections == 1
        assert heads[0].startswith(b"GET /v1/chat/completions HTTP/1.1\r\nHost: ")
        assert b"content-length" not in heads[0].lower() and b"Bearer k" in heads[0]
        c.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/a b",
        "http://127.0.0.1:9/a\r\nEvil: 1",
        "http://127.0.0.1:9/caf\u00e9",
        "http://127.0.0.1:9/a\x00",
        "ftp://127.0.0.1/x",
    ],
)
def test_a_url_that_is_no_request_target_is_refused_before_anything_is_sent(url: str) -> None:
    with pytest.raises(ValueError):
        client().route(url)


def test_the_parsed_url_memo_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from citadel_gateway.upstream import pool

    monkeypatch.setattr(pool, "MAX_ROUTES", 8)
    c = client()
    for i in range(50):  # e.g. a collection name per request
        _, target = c.route(f"http://127.0.0.1:9/collections/c{i}/points/search")
        assert target == b"/collections/c%d/points/search" % i
    assert len(c._targets) <= 8 and len(c._origins) == 1
