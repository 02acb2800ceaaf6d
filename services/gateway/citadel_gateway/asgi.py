"""The ASGI surface the gateway speaks, and one request's context: what was asked, what is
known about the caller so far, and the helpers that answer it."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_CT = (b"content-type", b"application/json")


class PendingAdmission(Protocol):
    """A rate-limit decision still on the wire (``admission.Admission``): settled before the
    first byte of the response goes out."""

    denied: bool

    async def settle(self, ctx: Ctx) -> None: ...


@dataclass(slots=True)
class Ctx:
    """One request: the ASGI channel, what admission learnt of the caller, and what the access
    log and metrics report of how it was answered."""

    scope: Scope
    receive: Receive
    send: Send
    request_id: str
    t0: float
    headers: dict[bytes, bytes]
    route: str = "unknown"
    subject: str | None = None
    forwarder: str | None = None  # the subject came with a forwarder's credential (auth.py)
    model: str | None = None
    status: int = 0
    tokens: int | None = None
    upstream_s: float = 0.0
    backend: str | None = None
    cache: str | None = None
    rl_headers: Headers = field(default_factory=list)
    started: bool = False
    done: bool = False
    claims: dict[str, Any] | None = None
    admission: PendingAdmission | None = None
    # read by http() after admission, before the disconnect watcher takes receive()
    request_body: bytes | None = None

    @property
    def posted(self) -> bytes:
        """The request body, on the routes that read one (POST)."""
        assert self.request_body is not None, "request body not read"
        return self.request_body

    async def start(self, status: int, headers: Headers) -> None:
        if self.admission is not None:
            await self.admission.settle(self)  # raises 429 (or 503) instead of answering
        self.status = status
        self.started = True
        await self.send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"x-request-id", self.request_id.encode()),
                    *self.rl_headers,
                    *headers,
                ],
            }
        )

    async def body(self, data: bytes, more: bool = False) -> None:
        if not more:
            self.done = True
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def respond(self, status: int, body: bytes, headers: Headers | None = None) -> None:
        hdrs = [JSON_CT, (b"content-length", str(len(body)).encode())]
        if headers:
            hdrs += headers
        await self.start(status, hdrs)
        await self.body(body)

    async def json(self, status: int, obj: Any, headers: Headers | None = None) -> None:
        await self.respond(status, json.dumps(obj, separators=(",", ":")).encode(), headers)


def query_flag(scope: Scope, name: str) -> bool:
    qs = scope.get("query_string", b"").decode("latin-1")
    for part in qs.split("&"):
        k, _, v = part.partition("=")
        if k == name:
            return v.lower() in ("1", "true", "yes", "")
    return False
