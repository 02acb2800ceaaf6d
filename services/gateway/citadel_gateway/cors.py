"""CORS for browser callers (the API document's JavaScript SDK): origins from the config.

Pure ASGI, in front of the gateway: a preflight (``OPTIONS`` with
``Access-Control-Request-Method``) is answered here, before authentication, since browsers send
it without credentials; an allowed origin gets 204 with what it may send, any other origin a 403
in the document's error format and no ``Access-Control-Allow-Origin``. Actual responses to an
allowed origin carry ``Access-Control-Allow-Origin`` and expose the rate-limit headers. The
settings are read per request, so a config reload (SIGHUP) applies them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import GatewayError, error_body, sane_request_id

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]

METHODS = b"GET, POST, OPTIONS"
ALLOWED_HEADERS = frozenset({"authorization", "content-type", "x-request-id", "x-citadel-cache"})
EXPOSED = (
    b"X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, X-RateLimit-Retry-After, "
    b"X-Request-Id, X-Cache"
)


class Cors:
    """Wraps an ASGI app; ``origins()`` returns the allowed origins of the running config."""

    def __init__(self, app: Any, origins: Callable[[], list[str]], max_age_s: int = 600):
        self.app = app
        self.origins = origins
        self.max_age = str(max_age_s).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        origin = headers.get(b"origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        allowed = origin.decode("latin-1") in self.origins()
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
            await self._preflight(send, origin, allowed, headers)
            return
        if not allowed:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                extra = [
                    (b"access-control-allow-origin", origin),
                    (b"access-control-expose-headers", EXPOSED),
                    (b"vary", b"Origin"),
                ]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(
        self, send: Send, origin: bytes, allowed: bool, headers: dict[bytes, bytes]
    ) -> None:
        requested = headers.get(b"access-control-request-headers", b"").decode("latin-1")
        wanted = {h.strip().lower() for h in requested.split(",") if h.strip()}
        if not allowed or not wanted <= ALLOWED_HEADERS:
            why = "origin not allowed" if not allowed else "request headers not allowed"
            err = GatewayError("INSUFFICIENT_PERMS", f"CORS preflight refused: {why}")
            body = error_body(err, sane_request_id(headers.get(b"x-request-id")))
            out = [(b"content-type", b"application/json"), (b"vary", b"Origin")]
            await send({"type": "http.response.start", "status": err.status, "headers": out})
            await send({"type": "http.response.body", "body": body})
            return
        out = [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-methods", METHODS),
            (b"access-control-allow-headers", ", ".join(sorted(wanted)).encode()),
            (b"access-control-max-age", self.max_age),
            (b"vary", b"Origin"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": out})
        await send({"type": "http.response.body", "body": b""})
