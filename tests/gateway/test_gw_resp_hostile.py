"""citadel_gateway.resp against a hostile or broken Redis: replies no Redis sends to the commands
the gateway uses (bad integers, sizes, unbounded lines, arrays and bulk strings), replies in
pieces, replies nobody asked for; and the cache (now on resp.py too) never serving what GET
cannot answer. A broken reply closes the connection, fails what was in flight, and the next
call reconnects: never a hang, never a reply handed to another caller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from citadel_gateway.cache import ResponseCache
from citadel_gateway.config import Cache, Redis
from citadel_gateway.redisconn import FAST_MAX_REPLY_BYTES, RedisConn
from citadel_gateway.resp import (
    MAX_ARRAY,
    MAX_LINE,
    RespClient,
    RespConnectionError,
    _Incomplete,
    parse,
)

from .hostile_redis import split_commands

pytestmark = pytest.mark.gateway

# what the server writes for each command it receives (one reply per command, in order)
Answer = Callable[[int], bytes]


@asynccontextmanager
async def scripted(answer: Answer, chunk: int = 0) -> AsyncIterator[tuple[str, list[int]]]:
    """A Redis stand-in: the n-th command (counting from 0 over all connections) gets
    ``answer(n)``, written ``chunk`` bytes at a time when set. Yields its URL and the
    connections accepted so far (their count, as a one-element list)."""
    count = [0]
    conns = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns[0] += 1
        buf = b""
        try:
            while data := await reader.read(65536):
                cmds, buf = split_commands(buf + data)
                for _ in cmds:
                    reply = answer(count[0])
                    count[0] += 1
                    if chunk:
                        for i in range(0, len(reply), chunk):
                            writer.write(reply[i : i + chunk])
                            await writer.drain()
                            await asyncio.sleep(0)
                    else:
                        writer.write(reply)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/0", conns
    finally:
        server.close()


# -- the parser: what no Redis answers --------------------------------------------------------


@pytest.mark.parametrize(
    "wire",
    [
        b":1_0\r\n",  # int() would take these
        b": 1\r\n",
        b":+1\r\n",
        b":\r\n",
        b":" + b"9" * 30 + b"\r\n",  # beyond 64 bits
        b"$1_0\r\n0123456789\r\n",
        b"$-2\r\n",
        b"*-2\r\n",
        b"$3\r\nabcXY",  # the bulk string's CRLF is missing
        b"$%d\r\n" % (512 * 1024 * 1024 + 1),  # larger than Redis stores
        b"*%d\r\n" % (MAX_ARRAY + 1),
        b"%1\r\n+a\r\n+b\r\n",  # RESP3 map: never asked for (RESP2 only)
        b"_\r\n",
    ],
)
def test_replies_no_redis_sends_are_a_broken_connection(wire: bytes) -> None:
    with pytest.raises(RespConnectionError):
        parse(wire)


def test_a_line_without_its_end_is_not_waited_for_without_bound() -> None:
    with pytest.raises(_Incomplete):
        parse(b"-ERR " + b"x" * (MAX_LINE - 100))
    with pytest.raises(RespConnectionError, match="longer than"):
        parse(b"-ERR " + b"x" * MAX_LINE)


def test_a_bulk_string_over_the_clients_limit_is_refused_from_its_header() -> None:
    assert parse(b"$5\r\nhello\r\n", 0, 0, 5) == (b"hello", 11)
    with pytest.raises(RespConnectionError, match="limit 4"):
        parse(b"$5\r\n", 0, 0, 4)  # refused before a byte of it is waited for


# -- the client against a scripted server --------------------------------------------------------


@pytest.mark.asyncio
async def test_replies_arriving_a_byte_at_a_time_are_matched_to_their_callers() -> None:
    replies = [b"*4\r\n:1\r\n:9\r\n:0\r\n:1000\r\n", b"$5\r\nhello\r\n", b"$-1\r\n", b"+OK\r\n"]
    async with scripted(lambda n: replies[n % 4], chunk=1) as (url, _):
        client = RespClient(url, None, 2.0)
        try:
            got = await asyncio.gather(*(client.call(b"PING") for _ in range(8)))
        finally:
            client.close()
    assert got == [[1, 9, 0, 1000], b"hello", None, b"OK"] * 2


@pytest.mark.asyncio
async def test_a_giant_declared_reply_on_the_rate_limit_connection_is_refused_at_once() -> None:
    big = b"$%d\r\n" % (FAST_MAX_REPLY_BYTES + 1)
    async with scripted(lambda n: big if n == 0 else b"+PONG\r\n") as (url, conns):
        conn = RedisConn(Redis(url=url, socket_timeout_ms=2000))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(RespConnectionError, match="bad reply"):
            await conn.fast.call(b"EVALSHA", b"x", 0)
        assert loop.time() - t0 < 1.0  # closed at once, not after the 2 s timeout
        assert await conn.fast.call(b"PING") == b"PONG"  # the next call reconnects
        assert conns[0] == 2
        await conn.close()


@pytest.mark.asyncio
async def test_a_reply_larger_than_the_limit_is_not_buffered_to_its_end() -> None:
    # no size in the header to refuse: an error line that never ends, sent in pieces
    endless = b"-ERR " + b"x" * (FAST_MAX_REPLY_BYTES + 2 * MAX_LINE)
    async with scripted(lambda n: endless, chunk=8192) as (url, _):
        client = RespClient(url, None, 5.0, FAST_MAX_REPLY_BYTES)
        try:
            with pytest.raises(RespConnectionError, match="bad reply"):
                await client.call(b"PING")
            assert len(client._proto.buf if client._proto else b"") <= MAX_LINE + 8192
        finally:
            client.close()


@pytest.mark.asyncio
async def test_a_broken_reply_fails_every_caller_in_flight_and_none_gets_another_ones() -> None:
    answers = {0: b":1\r\n", 1: b":1_000\r\n"}  # the second is broken; the third never comes
    async with scripted(lambda n: answers.get(n, b"")) as (url, _):
        client = RespClient(url, None, 2.0)
        try:
            got = await asyncio.gather(
                *(client.call(b"INCR", b"k") for _ in range(3)), return_exceptions=True
            )
        finally:
            client.close()
    assert got[0] == 1
    assert all(isinstance(g, RespConnectionError) for g in got[1:]), got


@pytest.mark.asyncio
async def test_a_cache_get_answered_with_anything_but_a_string_is_a_miss() -> None:
    wrong = [b":1\r\n", b"*1\r\n$2\r\n{}\r\n", b"+OK\r\n", b"-ERR no\r\n"]
    async with scripted(lambda n: wrong[n % len(wrong)]) as (url, _):
        conn = RedisConn(Redis(url=url, retry_after_failure_s=0))
        cache = ResponseCache(Cache(), conn)
        try:
            for _ in wrong:
                assert await cache.get("llama:chat:x") is None
        finally:
            await conn.close()


@pytest.mark.asyncio
async def test_the_cache_sets_with_its_ttl_and_reads_back_binary_answers(redis_server: str) -> None:
    conn = RedisConn(Redis(url=redis_server))
    cache = ResponseCache(Cache(ttl_s=77), conn)
    value = bytes(range(256)) * 8 + b"\r\n$-1\r\n"  # RESP-looking bytes inside the value
    try:
        await cache.put("resp-test:cache", value)
        assert await cache.get("resp-test:cache") == value
        assert 0 < await conn.client.call(b"TTL", "resp-test:cache") <= 77
        assert await conn.ping()
    finally:
        await conn.close()
