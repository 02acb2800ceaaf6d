"""The gateway's Redis client: one pipelined connection, RESP2, the few commands it sends.

Measured against redis-py's asyncio client, with the hiredis parser, pooled and on a single
connection (bench/clients.py, bench/RESULTS.md): about half the CPU per command, a third at 32
callers. redis-py takes a pooled connection, wraps each read in a timeout context and builds
a response per command in Python; here one connection carries every caller's commands as they
come (Redis answers in order), replies are matched to a FIFO of futures, and a timeout closes
the connection (a late reply can no longer be matched), failing what was in flight. The next
call reconnects.

What it reads is what EVALSHA, SCRIPT LOAD, GET, SET, PTTL, AUTH, SELECT and PING answer:
integers, simple strings, errors, bulk strings and arrays of those. Anything else, or anything
beyond the bounds below (nesting, array length, a line without its end, a bulk string or a
buffered reply larger than the client's ``max_reply_bytes``), is a broken connection: closed,
what was in flight failed, never a hang or a reply handed to the wrong caller.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import Any
from urllib.parse import unquote, urlsplit


class RespError(Exception):
    """An error reply from Redis (``-ERR ...``, ``-NOSCRIPT ...``)."""


class RespConnectionError(ConnectionError):
    """The connection failed, closed or timed out; what was in flight failed with it."""


def encode(*args: bytes | str | int) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, int):
            raw = b"%d" % arg
        elif isinstance(arg, str):
            raw = arg.encode()
        else:
            raw = arg
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class _Incomplete(Exception):
    pass


class Status(bytes):
    """A simple-string reply (``+OK``, ``+PONG``): equal to its bytes, but never what GET
    answers, so a cache read can tell a status from a stored value."""

    __slots__ = ()


MAX_NESTING = 8  # arrays in arrays: the replies read here nest one level at most
MAX_ARRAY = 1024  # elements in one array: the replies read here have four at most
MAX_LINE = 65536  # a type byte's line (an integer, a status, an error) without its CRLF
MAX_BULK = 512 * 1024 * 1024  # Redis's own largest string (proto-max-bulk-len)


def _int(line: bytes) -> int:
    digits = line[1:] if line[:1] == b"-" else line
    if not digits.isdigit() or len(digits) > 19:  # int() would take " 1", "1_0", "+1"
        raise RespConnectionError(f"not an integer: {line[:20]!r}")
    return int(line)


def parse(
    buf: bytes | bytearray, pos: int = 0, depth: int = 0, max_bulk: int = MAX_BULK
) -> tuple[Any, int]:
    """One reply starting at ``pos`` -> (value, next position). Raises _Incomplete, or
    :class:`RespConnectionError` for what no Redis answers to the commands sent here."""
    end = buf.find(b"\r\n", pos, pos + MAX_LINE)
    if end < 0:
        if len(buf) - pos >= MAX_LINE:
            raise RespConnectionError(f"a reply line longer than {MAX_LINE} bytes")
        raise _Incomplete
    kind, line = buf[pos : pos + 1], bytes(buf[pos + 1 : end])
    nxt = end + 2
    if kind == b":":
        return _int(line), nxt
    if kind == b"+":
        return Status(line), nxt
    if kind == b"-":
        return RespError(line.decode(errors="replace")), nxt
    if kind == b"$":
        size = _int(line)
        if size == -1:
            return None, nxt
        if not 0 <= size <= max_bulk:
            raise RespConnectionError(f"bulk string of {size} bytes (limit {max_bulk})")
        if len(buf) < nxt + size + 2:
            raise _Incomplete
        if buf[nxt + size : nxt + size + 2] != b"\r\n":
            raise RespConnectionError("bulk string without its CRLF")
        return bytes(buf[nxt : nxt + size]), nxt + size + 2
    if kind == b"*":
        count = _int(line)
        if count == -1:
            return None, nxt
        if not 0 <= count <= MAX_ARRAY:
            raise RespConnectionError(f"array of {count} elements (limit {MAX_ARRAY})")
        if depth >= MAX_NESTING:
            raise RespConnectionError(f"arrays nested deeper than {MAX_NESTING}")
        items = []
        for _ in range(count):
            item, nxt = parse(buf, nxt, depth + 1, max_bulk)
            items.append(item)
        return items, nxt
    raise RespConnectionError(f"unexpected reply type {kind!r}")


class _Protocol(asyncio.Protocol):
    def __init__(self, max_reply_bytes: int = MAX_BULK) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.buf = bytearray()
        self.closed = False
        self.max_reply_bytes = max_reply_bytes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        pos = 0
        try:
            while pos < len(self.buf):
                value, pos_next = parse(self.buf, pos, 0, self.max_reply_bytes)
                pos = pos_next
                if not self.waiting:  # a reply nobody asked for: the stream is out of step
                    self.abort(RespConnectionError("unexpected reply"))
                    return
                fut = self.waiting.popleft()
                if not fut.done():
                    if isinstance(value, RespError):
                        fut.set_exception(value)
                    else:
                        fut.set_result(value)
        except _Incomplete:
            # a reply larger than any allowed one is not waited for (nor buffered) to its end
            if len(self.buf) - pos > self.max_reply_bytes + MAX_LINE:
                self.abort(RespConnectionError("bad reply: larger than the client's limit"))
                return
        except (ValueError, RespConnectionError) as exc:
            self.abort(RespConnectionError(f"bad reply: {exc}"))
            return
        del self.buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(RespConnectionError(f"connection lost: {exc or 'closed by the server'}"))

    def abort(self, exc: Exception) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_exception(exc)


class RespClient:
    """``await client.call(b"EVALSHA", sha, 1, key, ...)``; one connection, pipelined.

    ``max_reply_bytes``: the largest bulk string (and buffered reply) accepted; a larger one
    closes the connection as broken."""

    def __init__(
        self, url: str, password: str | None, timeout_s: float, max_reply_bytes: int = MAX_BULK
    ) -> None:
        self.max_reply_bytes = max_reply_bytes
        parts = urlsplit(url)
        self.unix_path = parts.path if parts.scheme == "unix" else None
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.ssl = ssl.create_default_context() if parts.scheme == "rediss" else None
        self.username = unquote(parts.username) if parts.username else None
        self.password = (
            password
            if password is not None
            else (unquote(parts.password) if parts.password else None)
        )
        db = parts.path.lstrip("/") if parts.scheme != "unix" else ""
        self.db = int(db) if db.isdigit() else 0
        self.timeout_s = timeout_s
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()

        def factory() -> _Protocol:
            return _Protocol(self.max_reply_bytes)

        if self.unix_path is not None:
            _, proto = await asyncio.wait_for(
                loop.create_unix_connection(factory, self.unix_path), self.timeout_s
            )
        else:
            _, proto = await asyncio.wait_for(
                loop.create_connection(factory, self.host, self.port, ssl=self.ssl),
                self.timeout_s,
            )
        try:
            if self.password is not None:
                auth = (
                    (b"AUTH", self.username, self.password)
                    if self.username
                    else (
                        b"AUTH",
                        self.password,
                    )
                )
                await self._send(proto, encode(*[a for a in auth if a is not None]))
            if self.db:
                await self._send(proto, encode(b"SELECT", self.db))
        except BaseException:
            proto.abort(RespConnectionError("connection set-up failed"))
            raise
        return proto

    async def _protocol(self) -> _Protocol:
        proto = self._proto
        if proto is not None and not proto.closed:
            return proto
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            proto = await asyncio.shield(connecting)
        except (TimeoutError, OSError) as exc:
            raise RespConnectionError(f"cannot connect: {exc or type(exc).__name__}") from None
        finally:
            if self._connecting is connecting and connecting.done():
                self._connecting = None
        self._proto = proto
        return proto

    def _send(self, proto: _Protocol, payload: bytes) -> asyncio.Future[Any]:
        if proto.closed or proto.transport is None:
            raise RespConnectionError("connection closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        proto.waiting.append(fut)
        proto.transport.write(payload)
        timer = loop.call_later(self.timeout_s, self._expire, proto, fut)
        fut.add_done_callback(lambda _: timer.cancel())
        return fut

    def _expire(self, proto: _Protocol, fut: asyncio.Future[Any]) -> None:
        if not fut.done():
            # Replies come in order: one we gave up on would be matched to the next caller.
            proto.abort(RespConnectionError(f"no reply within {self.timeout_s * 1000:.0f} ms"))

    def try_send(self, *args: bytes | str | int) -> asyncio.Future[Any] | None:
        """Write now on the open connection and return the reply's future; ``None`` when no
        connection is open (the caller then awaits :meth:`call`, which connects)."""
        proto = self._proto
        if proto is None or proto.closed:
            return None
        return self._send(proto, encode(*args))

    async def call(self, *args: bytes | str | int) -> Any:
        proto = await self._protocol()
        return await self._send(proto, encode(*args))

    def close(self) -> None:
        if self._proto is not None:
            self._proto.abort(RespConnectionError("client closed"))
            self._proto = None
