"""Request bodies: read only after the request was admitted (token, permissions, rate limit),
bounded per request (``listen.max_body_bytes``), over all requests in flight
(``listen.max_buffered_bytes``) and in time (``listen.body_timeout_s`` for the whole body).

An unauthenticated client is answered from its headers and never has its body read; a body
declared or found larger than allowed is refused as soon as that is known, not read to its end.
Either way the response says ``Connection: close``, so the server drops the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import GatewayError, invalid

CLOSE = (b"connection", b"close")


class ClientGone(Exception):
    """The client disconnected before its body was in."""


class Budget:
    """Request-body bytes buffered by this process right now."""

    def __init__(self) -> None:
        self.used = 0


def announced(scope: dict[str, Any]) -> bool:
    """The request announced a body (read or not: the caller knows which)."""
    for name, value in scope.get("headers") or ():
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


def _declared(scope: dict[str, Any]) -> int | None:
    for name, value in scope.get("headers") or ():
        if name == b"content-length" and value.strip().isdigit():
            return int(value)
    return None


def too_large(limit: int) -> GatewayError:
    err = invalid("body", f"Larger than {limit} bytes")
    err.headers.append(CLOSE)
    return err


def too_slow(timeout_s: float) -> GatewayError:
    err = invalid("body", f"Not received within {timeout_s:g}s")
    err.headers.append(CLOSE)
    return err


def busy() -> GatewayError:
    return GatewayError(
        "MODEL_UNAVAILABLE",
        "Gateway busy: too many request bodies in memory",
        {"reason": "request_buffer_full"},
        [(b"retry-after", b"1"), CLOSE],
    )


async def read(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    limit: int,
    budget: Budget,
    total: int,
    timeout_s: float,
) -> bytes:
    """Read the whole body; as many bytes of ``budget`` as it has stay held (the caller gives
    them back when the request ends; when this raises, they are already given back)."""
    declared = _declared(scope)
    if declared is not None and declared > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    held = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    msg = await receive()
            except TimeoutError:
                raise too_slow(timeout_s) from None
            if msg["type"] == "http.disconnect":
                raise ClientGone
            chunk = msg.get("body", b"")
            if chunk:
                if held + len(chunk) > limit:
                    raise too_large(limit)
                if budget.used + len(chunk) > total:
                    raise busy()
                budget.used += len(chunk)
                held += len(chunk)
                chunks.append(chunk)
            if not msg.get("more_body", False):
                break
    except BaseException:
        budget.used -= held
        raise
    return b"".join(chunks)
