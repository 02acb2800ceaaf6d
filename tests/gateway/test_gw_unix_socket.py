"""Finding 2 of the hardening issue, the gateway's part: with ``listen.unix_socket`` it serves
on a unix socket only, for a front server on the same host (nginx, which then owns timeouts,
header limits and connection caps: docs/gateway-front.md)."""

from __future__ import annotations

import copy
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import GatewayFactory, Tokens, wait_until

pytestmark = pytest.mark.gateway


def test_listen_unix_socket_serves_there_and_not_on_tcp(
    gateways: GatewayFactory, cfg: dict[str, Any], token: Tokens, workdir: Path
) -> None:
    sock = workdir / "gw-uds" / "gateway.sock"
    sock.parent.mkdir(exist_ok=True)
    c = copy.deepcopy(cfg)
    c["listen"] = {"unix_socket": str(sock)}
    c["health"] = {"interval_s": 5, "timeout_s": 1, "services": {}}
    gw = gateways(c, "uds", wait=False)
    client = httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://gw")
    try:
        wait_until(
            lambda: client.get("/health").status_code == 200, 30, "the gateway on its socket"
        )
        r = client.post(
            "/v1/chat/completions",
            json={"model": "llama-3-chat", "messages": [{"role": "user", "content": "hi"}]},
            headers=token.headers(),
        )
        assert r.status_code == 200, r.text
        assert sock.stat().st_mode & 0o777 == 0o666  # the front's user can connect
        # the peer of a unix socket is the front on this host: its X-Real-IP names the client
        real = "203.0.113.77"
        assert client.get("/health", headers={"X-Real-IP": real}).status_code == 200
        wait_until(lambda: f'"client":"{real}"' in gw.log(), 5, "the access log line")
        # /metrics' allow-list: behind the front, the client's address decides (127.0.0.1 is
        # allowed by default; nginx overwrites X-Real-IP, so a client cannot claim it)
        assert client.get("/metrics", headers={"X-Real-IP": "127.0.0.1"}).status_code == 200
        assert client.get("/metrics", headers={"X-Real-IP": real}).status_code == 403
        assert client.get("/metrics").status_code == 403
        host, port = gw.url.removeprefix("http://").split(":")
        with pytest.raises(OSError):
            socket.create_connection((host, int(port)), timeout=1).close()
    finally:
        client.close()
        gw.stop()
