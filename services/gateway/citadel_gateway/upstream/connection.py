"""One kept-alive socket to an origin: what arrives goes to the response being read, anything
else (bytes on an idle connection, or after the final response) closes it."""

from __future__ import annotations

import asyncio
import select
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .pool import Origin
    from .response import Response


class Connection(asyncio.Protocol):
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
        if not resp.feed(data):
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.resp is not None:
            self.resp._eof()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def finished(self, reusable: bool) -> None:
        """Its response is done with: back to the pool when ``reusable``, else closed."""
        self.resp = None
        if reusable:
            self.origin.put_back(self)
        else:
            self.close()
        self.origin.client.slots.release()

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
