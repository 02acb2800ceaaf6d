"""A request the gateway refuses from its headers (401, 429, 413: its body is never read) is
answered, and the peer still sending that body is not reset: the gateway half-closes after the
answer and drops what follows (a lingering close), instead of closing under the peer's feet.

Found in the lab: nginx streams request bodies to the gateway, so a 429 of a burst whose body
came a moment after its headers became nginx's 502 ("writev() failed (32: Broken pipe) while
sending request to upstream")."""

from __future__ import annotations

import copy
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from citadel_gateway.httpproto import LINGER_S

from .conftest import GatewayFactory, Gw, wait_until

pytestmark = pytest.mark.gateway

BODY = b'{"model": "llama-3-chat", "messages": []}' + b" " * 400_000  # > any socket buffer
HEAD = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n" % len(BODY)
)


def _tcp(gw: Gw) -> Callable[[], socket.socket]:
    host, port = gw.url.removeprefix("http://").split(":")
    return lambda: socket.create_connection((host, int(port)), timeout=10)


@contextmanager
def _gateway_on(
    kind: str, gateways: GatewayFactory, cfg: dict[str, Any], workdir: Path
) -> Iterator[Callable[[], socket.socket]]:
    c = copy.deepcopy(cfg)
    c["health"] = {"interval_s": 5, "timeout_s": 1, "services": {}}
    if kind == "tcp":
        gw = gateways(c, "linger-tcp")
        connect = _tcp(gw)
        connect.log = gw.log  # type: ignore[attr-defined]
        yield connect
        gw.stop()
        return
    path = workdir / "linger-uds" / "gateway.sock"
    path.parent.mkdir(exist_ok=True)
    c["listen"] = {"unix_socket": str(path)}
    gw = gateways(c, "linger-uds", wait=False)

    def connect() -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(str(path))
        return s

    wait_until(lambda: path.exists() and connect().close() is None, 30, "the gateway's socket")
    yield connect
    gw.stop()


def _read_answer(s: socket.socket) -> bytes:
    """One whole response (status line, headers, Content-Length body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, f"closed before an answer: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        rest += s.recv(65536)
    return head


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_a_refused_request_whose_body_follows_is_answered_and_not_reset(
    kind: str, gateways: GatewayFactory, cfg: dict[str, Any], workdir: Path
) -> None:
    with _gateway_on(kind, gateways, cfg, workdir) as connect:
        for _ in range(5):
            s = connect()
            try:
                s.sendall(HEAD)  # no token: refused from the headers, the body never read
                head = _read_answer(s)
                assert head.startswith(b"HTTP/1.1 401"), head
                assert b"connection: close" in head.lower()
                s.sendall(BODY)  # the body the peer had under way: taken, not reset
                s.settimeout(LINGER_S + 5)
                assert s.recv(1) == b""  # then an orderly end
            finally:
                s.close()


def test_a_peer_that_never_stops_sending_is_closed_after_the_linger(
    gateways: GatewayFactory, cfg: dict[str, Any], workdir: Path
) -> None:
    with _gateway_on("tcp", gateways, cfg, workdir) as connect:
        s = connect()
        try:
            s.sendall(HEAD)
            _read_answer(s)
            started = time.monotonic()
            with pytest.raises(OSError):  # reset once the gateway stops lingering
                while time.monotonic() - started < LINGER_S + 10:
                    s.sendall(b" " * 65536)
                    time.sleep(0.01)
            assert time.monotonic() - started < LINGER_S + 5
        finally:
            s.close()


def test_a_request_pipelined_after_a_closing_answer_gets_nothing_and_breaks_nothing(
    gateways: GatewayFactory, cfg: dict[str, Any], workdir: Path, token: Any
) -> None:
    with _gateway_on("tcp", gateways, cfg, workdir) as connect:
        s = connect()
        try:
            refused = b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\n"
            allowed = (
                b"GET /v1/models HTTP/1.1\r\nHost: gw\r\n"
                + f"Authorization: Bearer {token()}\r\n\r\n".encode()
            )
            s.sendall(refused[:-4] + b"\r\n\r\n12345" + allowed)  # two requests in one write
            head = _read_answer(s)
            assert head.startswith(b"HTTP/1.1 401"), head
            s.settimeout(LINGER_S + 5)
            rest = b""
            while chunk := s.recv(65536):
                rest += chunk
            assert rest == b""  # the second is not answered on a connection that ended
        finally:
            s.close()
        # and the gateway is fine: a fresh connection is served
        t = connect()
        try:
            t.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
            assert _read_answer(t).startswith(b"HTTP/1.1 200")
        finally:
            t.close()
        assert "Exception in ASGI application" not in connect.log()  # type: ignore[attr-defined]


def test_garbage_after_a_request_in_flight_ends_the_connection_cleanly(
    gateways: GatewayFactory, cfg: dict[str, Any], workdir: Path
) -> None:
    """The parser refuses the garbage (400, the connection ends) while the request before it is
    still in the application: that one's answer is dropped as on a closed connection, no
    exception (the application must not see write-after-EOF)."""
    with _gateway_on("tcp", gateways, cfg, workdir) as connect:
        s = connect()
        try:
            s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: gw\r\n\r\n\x00\x01garbage\r\n\r\n")
            head = _read_answer(s)
            assert head.startswith(b"HTTP/1.1 400"), head
        finally:
            s.close()
        time.sleep(0.5)
        assert "Exception in ASGI application" not in connect.log()  # type: ignore[attr-defined]
