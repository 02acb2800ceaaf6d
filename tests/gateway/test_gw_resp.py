"""The lean pipelined Redis connection (citadel_gateway.resp) the rate limiter uses on every
request: replies matched in order under concurrency, errors, timeouts, reconnects, AUTH."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from citadel_gateway.ratelimit import GCRA_LUA, GCRA_SHA
from citadel_gateway.resp import (
    RespClient,
    RespConnectionError,
    RespError,
    _Incomplete,
    encode,
    parse,
)

from .conftest import free_port, running_redis

pytestmark = pytest.mark.gateway


# -- wire format ---------------------------------------------------------------------------------


def test_encode_is_a_resp_array_of_bulk_strings() -> None:
    assert encode(b"EVALSHA", "ab", 1, b"k") == (
        b"*4\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n$1\r\nk\r\n"
    )


@pytest.mark.parametrize(
    ("wire", "value"),
    [
        (b":42\r\n", 42),
        (b"+OK\r\n", b"OK"),
        (b"$3\r\nabc\r\n", b"abc"),
        (b"$-1\r\n", None),
        (b"*4\r\n:1\r\n:9\r\n:0\r\n:-5\r\n", [1, 9, 0, -5]),
        (b"*2\r\n*1\r\n$1\r\nx\r\n:3\r\n", [[b"x"], 3]),
    ],
)
def test_parse_every_reply_type_the_gateway_meets(wire: bytes, value: object) -> None:
    assert parse(wire) == (value, len(wire))


def test_parse_an_error_reply_and_partial_input() -> None:
    err, _ = parse(b"-NOSCRIPT No matching script\r\n")
    assert isinstance(err, RespError) and str(err).startswith("NOSCRIPT")
    for cut in (b"*4\r\n:1\r\n:9", b"$3\r\nab", b":4"):
        with pytest.raises(_Incomplete):
            parse(cut)


# -- against a real redis-server -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_noscript_then_load_then_the_gcra_script_answers(redis_server: str) -> None:
    client = RespClient(redis_server, None, 1.0)
    try:
        await client.call(b"SCRIPT", b"FLUSH")
        with pytest.raises(RespError, match=r"^NOSCRIPT"):
            await client.call(b"EVALSHA", GCRA_SHA, 1, "resp-test:k", 1_000_000, 5)
        assert await client.call(b"SCRIPT", b"LOAD", GCRA_LUA) == GCRA_SHA.encode()
        allowed, remaining, retry_us, reset_us = await client.call(
            b"EVALSHA", GCRA_SHA, 1, "resp-test:k", 1_000_000, 5
        )
        assert (allowed, remaining, retry_us) == (1, 4, 0) and reset_us > 0
    finally:
        client.close()


@pytest.mark.asyncio
async def test_many_concurrent_callers_share_one_connection_and_get_their_own_reply(
    redis_server: str,
) -> None:
    client = RespClient(redis_server, None, 2.0)
    try:
        await client.call(b"DEL", "resp-test:n")
        replies = await asyncio.gather(*(client.call(b"INCR", "resp-test:n") for _ in range(500)))
        assert sorted(replies) == list(range(1, 501))
        # each caller got the reply to its own command, in the order they were sent
        assert replies == list(range(1, 501))
        clients = (await client.call(b"CLIENT", b"LIST")).decode().splitlines()
        assert len([c for c in clients if "cmd=client" in c]) == 1
    finally:
        client.close()


@pytest.mark.asyncio
async def test_a_cancelled_caller_does_not_shift_the_next_callers_reply(redis_server: str) -> None:
    client = RespClient(redis_server, None, 2.0)
    try:
        await client.call(b"SET", "resp-test:a", "A")
        await client.call(b"SET", "resp-test:b", "B")
        slow = asyncio.ensure_future(client.call(b"GET", "resp-test:a"))
        await asyncio.sleep(0)  # sent
        slow.cancel()
        assert await client.call(b"GET", "resp-test:b") == b"B"
    finally:
        client.close()


@pytest.mark.asyncio
async def test_silent_server_times_out_fails_in_flight_and_the_next_call_reconnects() -> None:
    accepted: list[asyncio.StreamWriter] = []
    answer = False

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        while data := await reader.read(65536):
            if answer:
                writer.write(b"+PONG\r\n" * data.count(b"PING"))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = RespClient(f"redis://127.0.0.1:{port}/0", None, 0.1)
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        results = await asyncio.gather(
            client.call(b"PING"), client.call(b"PING"), return_exceptions=True
        )
        assert all(isinstance(r, RespConnectionError) for r in results), results
        assert "no reply within 100 ms" in str(results[0])
        assert loop.time() - t0 < 0.5
        answer = True
        assert await client.call(b"PING") == b"PONG"
        assert len(accepted) == 2  # a fresh connection after the timeout
    finally:
        client.close()
        server.close()


@pytest.mark.asyncio
async def test_nothing_listening_is_a_connection_error_not_a_hang() -> None:
    client = RespClient(f"redis://127.0.0.1:{free_port()}/0", None, 0.2)
    with pytest.raises(RespConnectionError, match="cannot connect"):
        await client.call(b"PING")


@pytest.fixture(scope="module")
def redis_with_password(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    d = tmp_path_factory.mktemp("redis-auth")
    with running_redis(d, "--requirepass", "s3cret-pw", "--databases", "4") as port:
        yield f"redis://127.0.0.1:{port}/3"


@pytest.mark.asyncio
async def test_auth_and_database_from_the_config(redis_with_password: str) -> None:
    client = RespClient(redis_with_password, "s3cret-pw", 1.0)
    try:
        await client.call(b"SET", "resp-test:db", "3")
        info = (await client.call(b"CLIENT", b"INFO")).decode()
        assert " db=3 " in info
    finally:
        client.close()
    wrong = RespClient(redis_with_password, "wrong", 1.0)
    with pytest.raises(RespError, match=r"WRONGPASS|invalid"):
        await wrong.call(b"PING")
    wrong.close()
