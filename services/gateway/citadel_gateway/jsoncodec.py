"""JSON in and out of the gateway, safe for whatever a client or a backend sends.

A document is refused (:class:`BadJSON`, never a ``RecursionError`` or a ``UnicodeEncodeError``
later on) when it is not UTF-8, not JSON, nested deeper than :data:`MAX_DEPTH`, or holds a lone
surrogate (``"\\ud800"``: valid JSON syntax, but no Unicode text; it could be neither hashed
for the cache key nor written out as UTF-8). The extra checks walk the document only when its
bytes could hold such a thing (many brackets, a ``\\uD8xx``-``\\uDFxx`` escape), so a common
request pays two byte scans.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

MAX_DEPTH = 64  # OpenAI bodies (tools with JSON schemas included) stay far below this


class BadJSON(ValueError):
    """The reason is safe to show: it never quotes the document."""


def loads(raw: bytes, max_depth: int = MAX_DEPTH) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadJSON("Not valid UTF-8") from None
    try:
        # stdlib on purpose: orjson turns integers beyond 64 bit into floats (not exact)
        obj = json.loads(text)
    except RecursionError:
        raise BadJSON(f"Nested deeper than {max_depth} levels") from None
    except ValueError:
        raise BadJSON("Not valid JSON") from None
    deep = raw.count(b"[") + raw.count(b"{") > max_depth
    escapes = b"\\ud" in raw or b"\\uD" in raw
    if deep or escapes:
        _check(obj, max_depth)
    return obj


def _check(obj: Any, max_depth: int) -> None:
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            _text(value)
        elif isinstance(value, dict | list):
            if depth > max_depth:
                raise BadJSON(f"Nested deeper than {max_depth} levels")
            if isinstance(value, dict):
                for key, item in value.items():
                    _text(key)
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in value)


def _text(s: str) -> None:
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise BadJSON("Holds a lone surrogate (\\ud800-\\udfff): not Unicode text") from None


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON; orjson, with the stdlib for what orjson refuses (ints > 64 bit)."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate (from a document not read by loads): escaped
        return json.dumps(obj, separators=(",", ":")).encode()
