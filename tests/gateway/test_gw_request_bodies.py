"""Finding 3 of the hardening issue: a request is admitted from its headers (token, rate
limit) before its body is read, and what is buffered is bounded, per request
(``listen.max_body_bytes``), over all requests in flight (``listen.max_buffered_bytes``) and
in time (``listen.body_timeout_s``: a slow body, finding 2).
Raw sockets: the client sends the head and then waits, as an attacker would."""

from __future__ import annotations

import copy
import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from .conftest import GatewayFactory, Gw, Tokens

pytestmark = pytest.mark.gateway

MiB = 1024 * 1024


@contextmanager
def connect(gw: Gw) -> Iterator[socket.socket]:
    host, port = gw.url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=5)
    try:
        yield s
    finally:
        s.close()


def head(path: str, length: int | None, token: str | None = None, chunked: bool = False) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: gw", "Content-Type: application/json"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(s: socket.socket, timeout: float = 2.0) -> tuple[int, dict[str, str], Any]:
    """Status, headers and JSON body of one response; fails if it takes over ``timeout``."""
    s.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = s.recv(65536)
        assert data, f"connection closed before a response: {buf!r}"
        buf += data
    raw_head, rest = buf.split(b"\r\n\r\n", 1)
    lines = raw_head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        data = s.recv(65536)
        assert data
        rest += data
    return status, headers, json.loads(rest[:length]) if length else None


def closed_by_server(s: socket.socket) -> bool:
    s.settimeout(2)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def test_an_unauthenticated_64_mib_body_is_answered_401_before_it_is_sent(gw: Gw) -> None:
    with connect(gw) as s:
        t0 = time.monotonic()
        s.sendall(head("/v1/chat/completions", 64 * MiB))  # and not one byte of the body
        status, headers, body = read_response(s)
        assert status == 401 and body["error"]["code"] == "INVALID_AUTH"
        assert time.monotonic() - t0 < 2
        assert headers.get("connection") == "close"
        assert closed_by_server(s)


def test_many_unauthenticated_near_limit_bodies_are_not_read(gw: Gw) -> None:
    socks = []
    try:
        for _ in range(20):
            s = socket.create_connection(
                tuple(gw.url.removeprefix("http://").split(":")),  # type: ignore[arg-type]
                timeout=5,
            )
            socks.append(s)
            s.sendall(head("/v1/embeddings", MiB - 1))
        for s in socks:
            status, _, _ = read_response(s)
            assert status == 401
    finally:
        for s in socks:
            s.close()


def test_a_bad_token_is_refused_before_the_body_too(gw: Gw) -> None:
    with connect(gw) as s:
        s.sendall(head("/v1/chat/completions", 64 * MiB, token="not-a-token"))
        status, _, body = read_response(s)
        assert status == 401 and body["error"]["code"] == "INVALID_AUTH"


def test_a_declared_body_over_max_body_bytes_is_refused_before_it_is_sent(
    gw: Gw, token: Tokens
) -> None:
    with connect(gw) as s:
        s.sendall(head("/v1/chat/completions", 64 * MiB, token=token()))
        status, headers, body = read_response(s)
        assert status == 400 and body["error"]["code"] == "INVALID_PARAMS"
        assert body["error"]["details"]["field"] == "body"
        assert headers.get("connection") == "close"


def test_a_chunked_body_over_max_body_bytes_is_refused_as_it_grows(gw: Gw, token: Tokens) -> None:
    with connect(gw) as s:
        s.sendall(head("/v1/chat/completions", None, token=token(), chunked=True))
        chunk = b"%x\r\n%s\r\n" % (64 * 1024, b" " * 64 * 1024)
        try:
            for _ in range(40):  # 2.5 MiB of a never-ending body
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _, body = read_response(s)
        assert status == 400 and body["error"]["details"]["field"] == "body"


def test_an_authenticated_body_within_the_limits_is_read_and_served(gw: Gw, token: Tokens) -> None:
    payload = json.dumps(
        {"model": "llama-3-chat", "messages": [{"role": "user", "content": "x" * 500_000}]}
    ).encode()
    with connect(gw) as s:
        s.sendall(head("/v1/chat/completions", len(payload), token=token()))
        time.sleep(0.2)  # the body follows later: it is read after admission
        s.sendall(payload)
        status, _, body = read_response(s, 10)
        assert status == 200, body


@pytest.fixture(scope="module")
def small_buffer_gw(gateways: GatewayFactory, cfg: dict[str, Any]) -> Gw:
    c = copy.deepcopy(cfg)
    c["listen"] = {
        "max_body_bytes": 600 * 1024,
        "max_buffered_bytes": 1024 * 1024,
        "body_timeout_s": 5,
    }
    c["health"] = {"interval_s": 5, "timeout_s": 1, "services": {}}
    return gateways(c, "small-buffer")


def test_bodies_over_max_buffered_bytes_in_total_are_503(
    small_buffer_gw: Gw, token: Tokens
) -> None:
    gw = small_buffer_gw
    payload = json.dumps(
        {"model": "llama-3-chat", "messages": [{"role": "user", "content": "x" * 550_000}]}
    ).encode()
    with connect(gw) as a, connect(gw) as b:
        # a holds 500 KB of its 550 KB body, then b brings 500 KB more: over 1 MiB in total
        a.sendall(head("/v1/chat/completions", len(payload), token=token()) + payload[:500_000])
        time.sleep(1.0)  # the gateway has read what a sent
        b.sendall(head("/v1/chat/completions", len(payload), token=token()) + payload[:500_000])
        b.sendall(payload[500_000:])
        status, headers, body = read_response(b, 5)
        assert status == 503 and body["error"]["details"]["reason"] == "request_buffer_full"
        assert headers.get("retry-after") == "1"
        a.sendall(payload[500_000:])
        status, _, body = read_response(a, 10)
        assert status == 200, body
    # what was held is given back: the next request is served
    with connect(gw) as c:
        c.sendall(head("/v1/chat/completions", len(payload), token=token()) + payload)
        assert read_response(c, 10)[0] == 200


def test_a_slow_body_is_refused_after_body_timeout_s(small_buffer_gw: Gw, token: Tokens) -> None:
    payload = json.dumps(
        {"model": "llama-3-chat", "messages": [{"role": "user", "content": "slow"}]}
    ).encode()
    with connect(small_buffer_gw) as s:
        t0 = time.monotonic()
        s.sendall(head("/v1/chat/completions", len(payload), token=token()) + payload[:10])
        status, headers, body = read_response(s, 15)  # and never the rest
        elapsed = time.monotonic() - t0
    assert status == 400 and "Not received within 5s" in body["error"]["details"]["issue"]
    assert headers.get("connection") == "close"
    assert 4.5 < elapsed < 9
