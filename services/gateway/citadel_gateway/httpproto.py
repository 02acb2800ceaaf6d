"""uvicorn's httptools protocol with two changes; everything else is uvicorn's.

- Its own 400s (a request it cannot parse) come in the API document's error format, not text.
- **A lingering close.** A response that ends the connection (``Connection: close``: a request
  refused from its headers, whose body is never read — 401, 429, 413) used to close the socket
  at once, while the peer could still be sending that body. The peer then lost the answer: on a
  unix socket the kernel resets a peer whose data was left unread (ECONNRESET), and its next
  write fails (EPIPE). nginx in front streams request bodies (``proxy_request_buffering off``),
  so it turned a refused request into a 502 ("writev() failed (32: Broken pipe) while sending
  request to upstream": the acceptance burst's 429s, measured in the lab). Now the gateway
  half-closes instead (FIN after the response), reads and drops what the peer still sends, and
  closes when the peer is done or after ``LINGER_S`` — what nginx and Apache call lingering close.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .errors import GatewayError, error_body, new_request_id

LINGER_S = 2.0  # at most this long a closing connection still reads what its peer sends


def bad_request(msg: str) -> bytes:
    err = GatewayError(
        "INVALID_PARAMS", "Malformed HTTP request", {"field": "request", "issue": msg}
    )
    return error_body(err, new_request_id())


class LingeringTransport:
    """The connection's transport, whose ``close()`` is a lingering close (module docstring);
    everything else goes to the real one."""

    def __init__(self, transport: asyncio.Transport, linger_s: float = LINGER_S) -> None:
        self._transport = transport
        self._linger_s = linger_s
        self._timer: asyncio.TimerHandle | None = None
        self.lingering = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        # as on a closed transport: nothing more goes out (a pipelined request's answer after
        # the one that ended the connection), where after write_eof() uvloop would raise
        if not self.lingering:
            self._transport.write(data)

    def writelines(self, lines: Any) -> None:
        if not self.lingering:
            self._transport.writelines(lines)

    def close(self) -> None:
        transport = self._transport
        if self.lingering or transport.is_closing():
            return
        self.lingering = True
        try:
            if transport.can_write_eof():
                transport.write_eof()  # the response is flushed first, then the FIN
                transport.resume_reading()  # drain: flow control may have paused reading
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(self._linger_s, transport.close)
                return
        except (OSError, RuntimeError, NotImplementedError):
            pass
        transport.close()

    def closed(self) -> None:
        """The connection is gone: no timer left behind."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class GatewayHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(LingeringTransport(transport))  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # lingering: the rest of what the peer sends is dropped unread
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        lingering = self.transport
        super().connection_lost(exc)
        if isinstance(lingering, LingeringTransport):
            lingering.closed()

    def send_400_response(self, msg: str) -> None:
        body = bad_request(msg)
        content = [STATUS_LINE[400]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()
