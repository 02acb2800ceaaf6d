"""Response cache in Redis for deterministic requests.

Cacheable: non-streaming requests with ``temperature == 0``, or any non-streaming request that
opts in with the header ``X-Cache: use``; embeddings are always cacheable (deterministic).
Keys are scoped per subject: ``llama:<kind>:<sha256(scope, model, canonical body)>``, where the
scope tells a token's own subject (``sub:``) from a forwarder's user (``fwd:``): a JWT whose
``sub`` reads ``webui:<id>`` never shares that OpenWebUI user's answers.
A Redis outage only turns the cache into misses.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

from . import metrics
from .config import Cache as CacheCfg
from .redisconn import RedisConn, RedisUnavailable


def cache_scope(subject: str | None, forwarder: str | None) -> str:
    """Whose answers a key may hold: a forwarder's users and tokens' subjects never meet."""
    return f"fwd:{subject or ''}" if forwarder is not None else f"sub:{subject or ''}"


def cache_key(kind: str, scope: str, body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(f"{len(scope)}:{scope}\n{canonical}".encode()).hexdigest()
    return f"llama:{kind}:{digest}"


def cacheable(kind: str, body: dict[str, Any], opt_in: bool) -> bool:
    if body.get("stream"):
        return False
    if kind == "embeddings" or opt_in:
        return True
    return body.get("temperature") == 0


class ResponseCache:
    def __init__(self, cfg: CacheCfg, conn: RedisConn):
        self.cfg = cfg
        self.conn = conn

    async def get(self, key: str) -> bytes | None:
        try:
            value: Any = await self.conn.call("cache_get", lambda c: c.call(b"GET", key))
        except RedisUnavailable:
            value = None
        if value is not None and type(value) is not bytes:
            value = None  # not what GET answers (a status, a number): a miss, never served
        metrics.CACHE_REQUESTS.labels(result="hit" if value is not None else "miss").inc()
        return value

    async def put(self, key: str, value: bytes) -> None:
        if len(value) > self.cfg.max_entry_bytes:
            return
        with contextlib.suppress(RedisUnavailable):
            await self.conn.call(
                "cache_set", lambda c: c.call(b"SET", key, value, b"EX", self.cfg.ttl_s)
            )
