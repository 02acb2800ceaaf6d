"""The API document's error body and codes."""

from __future__ import annotations

import json
import os
import re
from typing import Any

# code -> (HTTP status, error type)
CODES: dict[str, tuple[int, str]] = {
    "INVALID_PARAMS": (400, "validation_error"),
    "INVALID_AUTH": (401, "authentication_error"),
    "INSUFFICIENT_PERMS": (403, "permission_error"),
    "RATE_LIMITED": (429, "rate_limit_error"),
    "INTERNAL_ERROR": (500, "internal_error"),
    "MODEL_UNAVAILABLE": (503, "service_unavailable"),
    "TIMEOUT": (504, "timeout_error"),
    # outside the document's table, for plain HTTP correctness:
    "NOT_FOUND": (404, "not_found"),
    "METHOD_NOT_ALLOWED": (405, "invalid_request"),
}

_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class GatewayError(Exception):
    """Raised anywhere in request handling; rendered as the document's error body."""

    def __init__(
        self,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.status, self.type = CODES[code]
        self.message = message
        self.details = details or {}
        self.headers = headers or []


def invalid(field: str, issue: str, message: str = "Invalid request parameters") -> GatewayError:
    return GatewayError("INVALID_PARAMS", message, {"field": field, "issue": issue})


def error_body(err: GatewayError, request_id: str) -> bytes:
    return json.dumps(
        {
            "error": {
                "type": err.type,
                "message": err.message,
                "code": err.code,
                "details": err.details,
                "request_id": request_id,
            }
        },
        separators=(",", ":"),
    ).encode()


def new_request_id() -> str:
    return "req_" + os.urandom(12).hex()


def sane_request_id(value: bytes | None) -> str:
    if value:
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            return new_request_id()
        if _REQUEST_ID_OK.match(text):
            return text
    return new_request_id()
