"""A backend's answer that is not a success: what it means, and what it said (logged here,
never sent to the client).

Only a 2xx is an answer to relay. A 400, 413 or 422 is the backend refusing the client's
request (400 INVALID_PARAMS), a 404 a model the backend does not serve (503); anything else
(a redirect, a 5xx, 401/403/429 and the other 4xx) is the backend failing (503, counted by the
circuit breaker, another backend tried). Never relayed as it came, never as a 200.

A backend's error text is not ours to show: it can name hosts, paths, queries and credentials
(``password=...`` in a database error). The client gets the documented error body with the
status number; the log gets a short summary with anything that looks like a secret redacted.
"""

from __future__ import annotations

import json
import logging
import re

from .errors import GatewayError
from .upstream import ConnectFailed, Response, TooLarge, UpstreamError

log = logging.getLogger("citadel_gateway.backend")

SUMMARY_CHARS = 200

OK, REFUSED, NOT_SERVED, FAILED = "ok", "refused", "not_served", "failed"
_REFUSED = frozenset({400, 413, 422})


def verdict(status: int) -> str:
    """What a backend's status means for the request: OK, REFUSED, NOT_SERVED or FAILED."""
    if 200 <= status < 300:
        return OK
    if status in _REFUSED:
        return REFUSED
    if status == 404:
        return NOT_SERVED
    return FAILED


_SECRETS = [
    # first: "Authorization: Bearer <token>" must lose the token, not just the word Bearer
    (re.compile(r"(?i)\b(bearer|basic)\s+[\w.~+/=-]+"), r"\1 [redacted]"),
    # key=value / key: value for credential-like keys (JSON quoting included)
    (
        re.compile(
            r"""(?ix)
            (["']?\b[\w.-]*(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|apikey|auth\w*|
            credentials?|private[_-]?key|access[_-]?key|session)["']?\s*[=:]\s*)
            ("[^"]*"|'[^']*'|[^\s,;&}\]]+)
            """
        ),
        r"\1[redacted]",
    ),
    (re.compile(r"(?i)(\w+://)[^/\s:@]+:[^/\s@]+@"), r"\1[redacted]@"),  # URL user:password@
    (re.compile(r"\beyJ[\w-]+\.[\w-]+\.[\w-]*"), "[redacted-jwt]"),
    (re.compile(r"\b[A-Za-z0-9+/_-]{32,}={0,2}"), "[redacted]"),  # long key-like strings
]


def redact(text: str) -> str:
    for pattern, repl in _SECRETS:
        text = pattern.sub(repl, text)
    return text


def summary(data: bytes, limit: int = SUMMARY_CHARS) -> str:
    """The error message of a backend's body (OpenAI, vLLM, Ollama, Qdrant shapes) or its
    first bytes, one line, secrets redacted, at most ``limit`` characters."""
    head = data[:4096]
    text = head.decode("utf-8", "replace")
    try:
        obj = json.loads(data) if len(data) <= 65536 else None
    except (ValueError, RecursionError):
        obj = None
    if isinstance(obj, dict):
        err = obj.get("error") or obj.get("status") or obj.get("detail") or obj.get("message")
        if isinstance(err, dict):
            err = err.get("message") or err.get("error")
        if isinstance(err, str):
            text = err
    text = " ".join(text.split())
    text = redact(text[: limit * 4])
    return text[:limit]


def log_failure(request_id: str, backend: str, status: int, data: bytes) -> None:
    log.warning(
        "backend answered %d",
        status,
        extra={
            "fields": {
                "request_id": request_id,
                "backend": backend,
                "upstream_status": status,
                "upstream_error": summary(data),
            }
        },
    )


def unreachable(name: str, exc: UpstreamError) -> GatewayError:
    if isinstance(exc, TooLarge):
        return GatewayError(
            "MODEL_UNAVAILABLE",
            f"Model {name!r} sent a response larger than the gateway accepts",
            {"model": name, "reason": "too_large"},
        )
    reason = "connect" if isinstance(exc, ConnectFailed) else "disconnect"
    return GatewayError(
        "MODEL_UNAVAILABLE",
        f"Model {name!r} backend unreachable",
        {"model": name, "reason": reason},
    )


async def error_text(resp: Response) -> bytes:
    """An error body's first 64 KiB, for the log (a larger one is not read on)."""
    try:
        return await resp.read(65536)
    except TooLarge:
        return b"(error body larger than 64 KiB)"


def too_large_vector() -> GatewayError:
    return GatewayError(
        "MODEL_UNAVAILABLE",
        "Vector database sent a response larger than the gateway accepts",
        {"reason": "too_large"},
    )


def rejected(status: int, by: str) -> str:
    return f"Rejected by the {by} (HTTP {status}); its reason is in the gateway's log"


def client_error(name: str, status: int) -> GatewayError:
    if status == 404:
        return GatewayError(
            "MODEL_UNAVAILABLE", f"Model {name!r} is not served by its backend", {"model": name}
        )
    return GatewayError(
        "INVALID_PARAMS",
        "Backend rejected the request",
        {"upstream_status": status, "issue": rejected(status, "model's backend")},
    )
