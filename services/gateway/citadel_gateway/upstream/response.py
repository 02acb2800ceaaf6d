"""One HTTP/1.1 response as httptools parses it: the head within its limits, interim (1xx)
responses skipped, the body read whole or chunk by chunk with back-pressure, and whether the
connection is still in step afterwards (:attr:`Response.reusable`)."""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING

import httptools

from .errors import Disconnected, TooLarge, UpstreamError

if TYPE_CHECKING:
    from .connection import Connection

HIGH_WATER = 1024 * 1024  # buffered body bytes before reading from the backend pauses
LOW_WATER = 256 * 1024
MAX_INTERIM = 8  # 1xx responses skipped before the final one; more is a broken backend


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
        "_max_header_bytes",
        "_max_headers",
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

    def __init__(
        self,
        conn: Connection,
        loop: asyncio.AbstractEventLoop,
        max_headers: int,
        max_header_bytes: int,
    ) -> None:
        self._conn = conn
        self._max_headers = max_headers
        self._max_header_bytes = max_header_bytes
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
        limit = self._max_headers
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
        limit = self._max_header_bytes
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
    def feed(self, data: bytes) -> bool:
        """Bytes from the connection; ``False``: it is out of step or broken, close it."""
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(Disconnected(f"malformed response from the backend: {exc}"))
            return False
        if not self._headers_done.done():
            self._head_bytes += len(data)  # all of it head: the headers are not complete
            limit = self._max_header_bytes
            if self._head_bytes > limit:
                self._fail(TooLarge(f"response headers larger than {limit} bytes"))
        return not (self.desync or self._exc is not None)

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
        self._conn.finished(self.reusable)
