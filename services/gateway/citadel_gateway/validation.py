"""What a client may send: the OpenAI request bodies (and a vector search) checked before
anything reaches a backend, refused in the API document's error format."""

from __future__ import annotations

from typing import Any

from .errors import invalid
from .jsoncodec import BadJSON, dumps, loads

MAX_TOKENS = 4000


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        obj = loads(raw)
    except BadJSON as exc:
        raise invalid("body", str(exc), "Request body is not valid JSON") from None
    if not isinstance(obj, dict):
        raise invalid("body", "Must be a JSON object")
    return obj


def str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def validate_common(body: dict[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model", "Required string")
    if "max_tokens" in body and body["max_tokens"] is not None:
        mt = body["max_tokens"]
        if not is_int(mt) or not 1 <= mt <= MAX_TOKENS:
            raise invalid("max_tokens", f"Must be between 1 and {MAX_TOKENS}")
    if "temperature" in body and body["temperature"] is not None:
        t = body["temperature"]
        if not is_num(t) or not 0 <= t <= 2:
            raise invalid("temperature", "Must be a number between 0 and 2")
    if "top_p" in body and body["top_p"] is not None:
        p = body["top_p"]
        if not is_num(p) or not 0 <= p <= 1:
            raise invalid("top_p", "Must be a number between 0 and 1")
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise invalid("stream", "Must be a boolean")
    if (
        "n" in body
        and body["n"] is not None
        and (not is_int(body["n"]) or not 1 <= body["n"] <= 16)
    ):
        raise invalid("n", "Must be an integer between 1 and 16")
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str) and not (str_list(stop) and len(stop) <= 4):
        raise invalid("stop", "Must be a string or a list of up to 4 strings")


def validate_chat(body: dict[str, Any]) -> None:
    validate_common(body)
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise invalid("messages", "Required non-empty list")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise invalid(f"messages[{i}]", "Each message needs a string 'role'")
        c = m.get("content")
        if c is not None and not isinstance(c, str | list):
            raise invalid(f"messages[{i}].content", "Must be a string or a list of parts")


def validate_completions(body: dict[str, Any]) -> None:
    validate_common(body)
    p = body.get("prompt")
    if not isinstance(p, str) and not (str_list(p) and p):
        raise invalid("prompt", "Required string or non-empty list of strings")
    if "suffix" in body and body["suffix"] is not None and not isinstance(body["suffix"], str):
        raise invalid("suffix", "Must be a string")


def without_empty_suffix(body: dict[str, Any], fill_in_middle: bool, raw: bytes) -> bytes:
    """The API document's instruct example sends ``"suffix": ""``; vLLM refuses any suffix for a
    model without fill-in-the-middle (Llama 3). An empty one means none: dropped. A real one
    for such a model is the client's error, named, rather than the engine's 400 relayed."""
    suffix = body.get("suffix")
    if suffix is None or suffix == "":
        del body["suffix"]
        return dumps(body)
    if not fill_in_middle:
        raise invalid("suffix", "This model does not complete with a suffix (fill-in-the-middle)")
    return raw


def validate_embeddings(body: dict[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model", "Required string")
    inp = body.get("input")
    ok = isinstance(inp, str) or (
        isinstance(inp, list)
        and inp
        and (all(isinstance(x, str) for x in inp) or all(is_int(x) for x in inp))
    )
    if not ok:
        raise invalid("input", "Required string or non-empty list of strings")


def validate_search(body: dict[str, Any]) -> None:
    if body.get("vector") is None:
        raise invalid("vector", "Required")
    if "limit" in body and (not is_int(body["limit"]) or body["limit"] < 1):
        raise invalid("limit", "Must be a positive integer")
