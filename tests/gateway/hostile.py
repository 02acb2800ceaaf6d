"""A scripted, hostile HTTP/1.1 backend for the gateway tests (loopback only).

It runs its own event loop in a thread, so it keeps writing while the test (or the gateway
under test) is busy, and it writes exactly the bytes a script gives it: interim responses
nobody asked for, extra responses, garbage after a body, redirects, huge or deeply nested
bodies. GETs (the gateway's health probes) are answered ``200 {"data": []}``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .loopserver import LoopServer


@dataclass
class Req:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    conn: int  # which connection (1, 2, ...) it came on
    index: int  # which POST (1, 2, ...) overall

    def json(self) -> Any:
        return json.loads(self.body)


Script = Callable[[Req, asyncio.StreamWriter], Awaitable[None]]


def response(
    body: bytes, status: bytes = b"200 OK", headers: bytes = b"Content-Type: application/json\r\n"
) -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n%s\r\n%s" % (status, len(body), headers, body)


def chat_answer(req: Req) -> bytes:
    """An OpenAI chat completion that names what it answers: the model and the content."""
    body = req.json()
    said = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
    return response(
        json.dumps(
            {
                "id": f"chatcmpl-{req.index}",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"answer to {said}"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        ).encode()
    )


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return method, path, headers, body


@dataclass
class HostileBackend(LoopServer):
    script: Script
    connections: int = 0
    posts: list[Req] = field(default_factory=list)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        try:
            while True:
                method, path, headers, body = await read_request(reader)
                if method == "GET":
                    writer.write(response(b'{"data":[]}'))
                    await writer.drain()
                    continue
                req = Req(method, path, headers, body, conn, len(self.posts) + 1)
                self.posts.append(req)
                await self.script(req, writer)
                await writer.drain()
                if writer.is_closing():
                    return
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            asyncio.CancelledError,
            ConnectionError,
        ):
            pass
        finally:
            writer.close()
