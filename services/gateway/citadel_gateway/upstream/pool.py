"""Origins (``scheme://host:port``), their idle kept-alive connections and the in-flight
limit; a request is one write on a connection taken from the pool or opened for it."""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

from .connection import Connection
from .errors import ConnectFailed, Disconnected, StaleConnection
from .response import Response

MAX_ROUTES = 4096  # parsed URLs remembered; past that the memo starts over


def _check_header(value: bytes) -> bytes:
    if b"\r" in value or b"\n" in value:
        raise ValueError("header value with a line break")
    return value


class Origin:
    """Kept-alive connections to one ``scheme://host:port``."""

    def __init__(self, client: UpstreamClient, scheme: str, host: str, port: int) -> None:
        self.client = client
        self.host = host
        self.port = port
        self.ssl = ssl.create_default_context() if scheme == "https" else None
        default = 443 if scheme == "https" else 80
        self.host_header = (host if port == default else f"{host}:{port}").encode()
        self.idle: list[Connection] = []

    def put_back(self, conn: Connection) -> None:
        if conn.closed or len(self.idle) >= self.client.max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self.idle.append(conn)

    def _take_idle(self) -> Connection | None:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if now - conn.idle_since < self.client.keepalive_s and conn.idle_and_quiet():
                return conn
            conn.close()
        return None

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.client.connect_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: Connection(self), self.host, self.port, ssl=self.ssl
                )
        except TimeoutError:
            raise ConnectFailed(
                f"connect timeout after {self.client.connect_timeout_s:g}s"
            ) from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect: {exc.strerror or exc}") from None
        return conn

    async def request(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> Response:
        """Send the request; returns once the final status line and headers arrived."""
        head = [b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, target, self.host_header)]
        if body or method != b"GET":
            head.append(b"Content-Length: %d\r\n" % len(body))
        for name, value in headers:
            head.append(b"%s: %s\r\n" % (name, _check_header(value)))
        head.append(b"\r\n")
        payload = b"".join(head) + body
        await self.client.slots.acquire()
        try:
            conn = self._take_idle()
            if conn is not None:
                try:
                    return await self._exchange(conn, payload)
                except StaleConnection:
                    pass  # the request was not processed: once more on a fresh connection
            return await self._exchange(await self._connect(), payload)
        except BaseException:
            self.client.slots.release()
            raise

    async def _exchange(self, conn: Connection, payload: bytes) -> Response:
        if conn.closed or conn.transport is None or conn.transport.is_closing():
            raise StaleConnection("connection closed")
        client = self.client
        resp = Response(
            conn, asyncio.get_running_loop(), client.max_headers, client.max_header_bytes
        )
        conn.resp = resp
        reused, conn.used = conn.used, True
        try:
            conn.transport.write(payload)
        except (RuntimeError, OSError) as exc:  # closed under us between the check and now
            conn.resp = None
            conn.close()
            error = StaleConnection if reused else Disconnected
            raise error(f"write failed: {exc}") from None
        try:
            await resp._headers_done
        except Disconnected as exc:
            conn.resp = None
            conn.close()
            if reused and not resp.got_bytes:
                raise StaleConnection(str(exc)) from None
            raise
        except BaseException:  # cancelled (client gone, deadline): the backend must see it
            conn.resp = None
            conn.close()
            raise
        return resp


class UpstreamClient:
    """Origins by ``scheme://host:port``; at most ``max_connections`` requests in flight."""

    def __init__(
        self,
        *,
        max_connections: int,
        connect_timeout_s: float,
        keepalive_s: float,
        max_idle: int = 64,
        max_header_bytes: int = 65536,
        max_headers: int = 100,
    ) -> None:
        self.slots = asyncio.Semaphore(max_connections)
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        self.max_idle = max_idle
        self._origins: dict[tuple[str, str, int], Origin] = {}
        self._targets: dict[str, tuple[Origin, bytes]] = {}

    def route(self, url: str) -> tuple[Origin, bytes]:
        """``http://h:p/v1/chat/completions`` -> (its origin, ``b"/v1/chat/completions"``)."""
        hit = self._targets.get(url)
        if hit is not None:
            return hit
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key = (parts.scheme, parts.hostname, port)
        origin = self._origins.get(key)
        if origin is None:
            origin = self._origins[key] = Origin(self, parts.scheme, parts.hostname, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if not target.isascii() or any(c <= " " or c == "\x7f" for c in target):
            raise ValueError(f"not a request target: {target[:80]!r}")
        if len(self._targets) >= MAX_ROUTES:  # URLs built from requests (collection names)
            self._targets.clear()
        hit = self._targets[url] = (origin, target.encode())
        return hit

    async def post(self, url: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Response:
        origin, target = self.route(url)
        return await origin.request(b"POST", target, headers, body)

    async def get(self, url: str, headers: list[tuple[bytes, bytes]] | None = None) -> Response:
        origin, target = self.route(url)
        return await origin.request(b"GET", target, headers or [], b"")

    def close(self) -> None:
        for origin in self._origins.values():
            for conn in origin.idle:
                conn.close()
            origin.idle.clear()

    def stats(self) -> dict[str, Any]:
        return {f"{s}://{h}:{p}": len(o.idle) for (s, h, p), o in self._origins.items()}
