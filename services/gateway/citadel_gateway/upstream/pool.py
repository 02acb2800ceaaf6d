"""A lean HTTP/1.1 client for the gateway's hot call: one POST to a model backend per request.

aiohttp's client builds a request object, a multidict of headers, a URL object, tracing hooks
and timers for every call: about 0.4 ms of CPU per request on the lab's 2-core VM, a third of
the gateway's own cost at 200 req/s. Here a request is one bytes write on a kept-alive
connection and the response is parsed by httptools (llhttp, C): about 0.1 ms.

What it does, because the backends (vLLM, Ollama, llama.cpp's server) and the gateway need it:
keep-alive pools per backend origin (idle connections dropped after ``keepalive_s``, below the
5 s uvicorn-based servers keep them), Content-Length and chunked bodies, a body read whole or
chunk by chunk as it arrives (server-sent events), back-pressure on a slow consumer
(``pause_reading``), a connect timeout, and one quiet retry on a fresh connection when a reused
one turns out to have been closed by the server before it answered anything. A response not
read to its end (an error, a client that went away) closes its connection, so the backend sees
the disconnect and stops generating.

In step, or closed: a connection carries one user's request and then another's, so a response
read for the wrong request would hand one user's answer to another. Interim responses (1xx:
100 Continue, 103 Early Hints) are skipped and the final one read; 101 (a protocol switch) is
refused. A connection goes back to the pool only when its final response was read to its end
and nothing followed it; bytes after that response, or on an idle pooled connection (checked
again with ``poll`` just before reuse), close it.
"""

from __future__ import annotations

import asyncio
import collections
import select
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

import httptools

HIGH_WATER = 1024 * 1024  # buffered body bytes before reading from the backend pauses
LOW_WATER = 256 * 1024
MAX_INTERIM = 8  # 1xx responses skipped before the final one; more is a broken backend


class UpstreamError(Exception):
    """Base of the errors below; the message is safe to show (no secrets)."""


class ConnectFailed(UpstreamError):
    """No connection: nothing was sent, another backend may be tried."""


class Disconnected(UpstreamError):
    """The connection broke (or the response was malformed) before the response was complete."""


class StaleConnection(Disconnected):
    """A kept-alive connection the server had closed: it answered nothing."""


class TooLarge(Disconnected):
    """The response is larger than the client's limits (headers, their count, or a body read
    whole): a broken backend; the connection is closed, nothing more is buffered."""


def _check_header(value: bytes) -> bytes:
    if b"\r" in value or b"\n" in value:
        raise ValueError("header value with a line break")
    return value


class Response:
    """Status and headers are there once :meth:`Origin.request` returns; the body follows."""

    __slots__ = (
        "_chunks",
        "_conn",
        "_exc",
        "_head_bytes",
        "_header_count",
        "_headers_done",
        "_interim",
        "_interims",
        "_paused",
        "_raw_headers",
        "_size",
        "_waiter",
        "complete",
        "desync",
        "got_bytes",
        "headers",
        "keep_alive",
        "parser",
        "released",
        "status",
    )

    def __init__(self, conn: _Conn, loop: asyncio.AbstractEventLoop) -> None:
        self._conn = conn
        self.parser = httptools.HttpResponseParser(self)
        self._headers_done: asyncio.Future[None] = loop.create_future()
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._waiter: asyncio.Future[None] | None = None
        self._exc: UpstreamError | None = None
        self._paused = False
        self._head_bytes = 0  # bytes fed before the final response's headers were complete
        self._header_count = 0
        self._interim = False  # parsing a 1xx response
        self._interims = 0
        self.status = 0
        self.headers: dict[str, str] = {}
        self.complete = False  # the final response was read to its end
        self.desync = False  # bytes followed the final response: the connection is out of step
        self.keep_alive = False
        self.got_bytes = False
        self.released = False

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.complete or self._exc is not None:
            self.desync = True  # another response after the final one: nobody asked for it

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.desync or self._exc is not None:
            return
        self._header_count += 1
        limit = self._conn.origin.client.max_headers
        if self._header_count > limit:
            self._fail(TooLarge(f"more than {limit} response headers"))
            return
        self._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.desync or self._exc is not None:
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            self._raw_headers.clear()
            if status == 101:
                self._fail(Disconnected("the backend switched protocols (101): refused"))
                return
            self._interims += 1
            if self._interims > MAX_INTERIM:
                self._fail(Disconnected(f"more than {MAX_INTERIM} interim (1xx) responses"))
                return
            self._interim = True  # 100 Continue, 103 Early Hints: the final response follows
            return
        limit = self._conn.origin.client.max_header_bytes
        if sum(len(k) + len(v) + 4 for k, v in self._raw_headers) > limit:
            self._fail(TooLarge(f"response headers larger than {limit} bytes"))
            return
        self.status = status
        self.headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self._raw_headers
        }
        if not self._headers_done.done():
            self._headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.desync or self._exc is not None:
            return
        self._chunks.append(body)
        self._size += len(body)
        if self._size > HIGH_WATER and not self._paused and self._conn.transport is not None:
            self._paused = True
            self._conn.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.desync or self._exc is not None:
            return
        if self._interim:
            self._interim = False
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()
        self._wake()

    # -- connection events -----------------------------------------------------------------
    def _fail(self, exc: UpstreamError) -> None:
        if self.complete:
            return
        self._exc = exc
        if not self._headers_done.done():
            self._headers_done.set_exception(exc)
        self._wake()

    def _eof(self) -> None:
        """The server closed: a body delimited by the close is complete, anything else broke."""
        if self._headers_done.done() and not self._headers_done.exception():
            delimited = "content-length" in self.headers or "chunked" in self.headers.get(
                "transfer-encoding", ""
            )
            if not delimited and self.status not in (204, 304):
                self.complete = True
                self.keep_alive = False
                self._wake()
                return
        self._fail(Disconnected("the backend closed the connection before the response ended"))

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    # -- the body --------------------------------------------------------------------------
    async def next_chunk(self) -> bytes | None:
        """The body as it arrives; ``None`` at its end."""
        while not self._chunks:
            if self._exc is not None:
                raise self._exc
            if self.complete:
                return None
            await self._wait()
        chunk = self._chunks.popleft()
        self._size -= len(chunk)
        if self._paused and self._size < LOW_WATER and self._conn.transport is not None:
            self._paused = False
            self._conn.transport.resume_reading()
        return chunk

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body; :class:`TooLarge` (and the connection closed) past ``limit`` bytes."""
        if limit is not None:
            declared = self.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                self._too_large(limit)
        parts = []
        size = 0
        while (chunk := await self.next_chunk()) is not None:
            size += len(chunk)
            if limit is not None and size > limit:
                self._too_large(limit)
            parts.append(chunk)
        return b"".join(parts)

    def _too_large(self, limit: int) -> None:
        exc = TooLarge(f"response body larger than {limit} bytes")
        self._exc = exc
        self._chunks.clear()
        self._conn.close()
        raise exc

    @property
    def reusable(self) -> bool:
        """The connection is provably in step: the final response was read to its end on a
        keep-alive connection and nothing came after it."""
        return (
            self.complete
            and self.keep_alive
            and not self.desync
            and self._exc is None
            and not self._chunks
            and not self._conn.closed
        )

    def release(self) -> None:
        """Back to the pool when :attr:`reusable`, else closed."""
        if self.released:
            return
        self.released = True
        conn = self._conn
        conn.resp = None
        if self.reusable:
            conn.origin.put_back(conn)
        else:
            conn.close()
        conn.origin.client.slots.release()


class _Conn(asyncio.Protocol):
    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.resp: Response | None = None
        self.closed = False
        self.idle_since = 0.0
        self.used = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        resp = self.resp
        if resp is None or resp.complete:
            # bytes nobody asked for (on an idle connection, or after the final response):
            # the connection is out of step, and whatever they are must not reach anyone
            if resp is not None:
                resp.desync = True
            self.close()
            return
        resp.got_bytes = True
        try:
            resp.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            resp._fail(Disconnected(f"malformed response from the backend: {exc}"))
            self.close()
            return
        if not resp._headers_done.done():
            resp._head_bytes += len(data)  # all of it head: the headers are not complete
            limit = self.origin.client.max_header_bytes
            if resp._head_bytes > limit:
                resp._fail(TooLarge(f"response headers larger than {limit} bytes"))
        if resp.desync or resp._exc is not None:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.resp is not None:
            self.resp._eof()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def idle_and_quiet(self) -> bool:
        """Open, and nothing has arrived that the event loop has not delivered yet."""
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            return False
        sock = transport.get_extra_info("socket")
        if sock is None:
            return True
        try:
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN | select.POLLPRI)
            return not poller.poll(0)  # readable: unsolicited bytes, or the server's close
        except (OSError, ValueError):
            return False


class Origin:
    """Kept-alive connections to one ``scheme://host:port``."""

    def __init__(self, client: UpstreamClient, scheme: str, host: str, port: int) -> None:
        self.client = client
        self.host = host
        self.port = port
        self.ssl = ssl.create_default_context() if scheme == "https" else None
        default = 443 if scheme == "https" else 80
        self.host_header = (host if port == default else f"{host}:{port}").encode()
        self.idle: list[_Conn] = []

    def put_back(self, conn: _Conn) -> None:
        if conn.closed or len(self.idle) >= self.client.max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self.idle.append(conn)

    def _take_idle(self) -> _Conn | None:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if now - conn.idle_since < self.client.keepalive_s and conn.idle_and_quiet():
                return conn
            conn.close()
        return None

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.client.connect_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: _Conn(self), self.host, self.port, ssl=self.ssl
                )
        except TimeoutError:
            raise ConnectFailed(
                f"connect timeout after {self.client.connect_timeout_s:g}s"
            ) from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect: {exc.strerror or exc}") from None
        return conn

    async def request(
        self, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> Response:
        """POST ``body``; returns once the status line and headers arrived."""
        head = [
            b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n"
            % (target, self.host_header, len(body))
        ]
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

    async def _exchange(self, conn: _Conn, payload: bytes) -> Response:
        if conn.closed or conn.transport is None or conn.transport.is_closing():
            raise StaleConnection("connection closed")
        resp = Response(conn, asyncio.get_running_loop())
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
        hit = self._targets[url] = (origin, target.encode())
        return hit

    async def post(self, url: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Response:
        origin, target = self.route(url)
        return await origin.request(target, headers, body)

    def close(self) -> None:
        for origin in self._origins.values():
            for conn in origin.idle:
                conn.close()
            origin.idle.clear()

    def stats(self) -> dict[str, Any]:
        return {f"{s}://{h}:{p}": len(o.idle) for (s, h, p), o in self._origins.items()}
