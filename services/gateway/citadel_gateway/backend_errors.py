"""What a backend says when it fails: logged here, never sent to the client.

A backend's error text is not ours to show: it can name hosts, paths, queries and credentials
(``password=...`` in a database error). The client gets the documented error body with the
status number; the log gets a short summary with anything that looks like a secret redacted.
"""

from __future__ import annotations

import json
import logging
import re

log = logging.getLogger("citadel_gateway.backend")

SUMMARY_CHARS = 200

_SECRETS = [
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
    (re.compile(r"(?i)\b(bearer|basic)\s+[\w.~+/=-]+"), r"\1 [redacted]"),
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
