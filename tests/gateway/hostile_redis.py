"""A scripted, hostile Redis for the gateway tests (loopback only, its own thread).

It answers what the gateway asks on connect and for its cache as a Redis would (``+PONG``,
``+OK``, nil), and the rate limiter's ``EVALSHA`` with the raw RESP replies of :attr:`evalsha`
in turn (the last one repeated): a valid ``{1, 9, 0, 1000}`` and then malformed ones.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from citadel_gateway.ratelimit import GCRA_SHA
from citadel_gateway.resp import _Incomplete, parse

from .loopserver import LoopServer

VALID = b"*4\r\n:1\r\n:9\r\n:0\r\n:1000000\r\n"


def split_commands(buf: bytes) -> tuple[list[list[bytes]], bytes]:
    """The complete commands at the start of ``buf``, and the rest of it."""
    cmds = []
    while buf:
        try:
            cmd, used = parse(buf)
        except _Incomplete:
            break
        cmds.append(cmd)
        buf = buf[used:]
    return cmds, buf


@dataclass
class HostileRedis(LoopServer):
    evalsha: list[bytes] = field(default_factory=lambda: [VALID])
    evalshas: int = 0
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def answer(self, cmd: list[bytes]) -> bytes:
        name = cmd[0].upper() if cmd else b""
        if name == b"EVALSHA":
            reply = self.evalsha[min(self.evalshas, len(self.evalsha) - 1)]
            self.evalshas += 1
            return reply
        if name == b"SCRIPT":
            return b"$40\r\n" + GCRA_SHA.encode() + b"\r\n"
        if name == b"PING":
            return b"+PONG\r\n"
        if name == b"GET":
            return b"$-1\r\n"
        return b"+OK\r\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = b""
        try:
            while data := await reader.read(65536):
                cmds, buf = split_commands(buf + data)
                for cmd in cmds:
                    writer.write(self.answer(cmd))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
