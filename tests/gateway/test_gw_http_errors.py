"""Finding 10 of the hardening issue: the HTTP server's own 400s (a request it cannot even
parse) are the API document's error JSON, not plain text."""

from __future__ import annotations

import json
import socket

import pytest

from .conftest import Gw

pytestmark = pytest.mark.gateway


def raw_exchange(gw: Gw, data: bytes) -> bytes:
    host, port = gw.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Without Colon\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
        b"Content-Length: 2\r\n\r\nab",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\n",
    ],
    ids=["not-http", "bad-header", "two-lengths", "bad-chunk"],
)
def test_the_servers_own_400_is_the_documented_error_json(gw: Gw, request_bytes: bytes) -> None:
    out = raw_exchange(gw, request_bytes)
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), out[:200]
    assert b"content-type: application/json" in head.lower()
    err = json.loads(body)["error"]
    assert set(err) == {"type", "message", "code", "details", "request_id"}
    assert err["code"] == "INVALID_PARAMS" and err["type"] == "validation_error"
