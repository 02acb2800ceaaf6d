"""GCRA rate limiting in Redis: one atomic Lua script, Redis's own clock, keys with TTLs.

Two gateway processes (or hosts) sharing one Redis share the limits exactly: every decision
is one EVALSHA that reads and writes the bucket atomically, using ``TIME`` from Redis.

A bucket allows ``burst`` requests at once and refills one request every ``60/per_minute``
seconds. ``burst + 1`` simultaneous requests on a fresh bucket -> exactly ``burst`` allowed.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any

from .config import Limit
from .redisconn import RedisConn
from .resp import RespError

GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
return {1, math.floor((now - allow_at) / interval), 0, new_tat - now}
"""
GCRA_SHA = hashlib.sha1(GCRA_LUA.encode()).hexdigest()


@dataclass(slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int
    reset_epoch: int

    def headers(self) -> list[tuple[bytes, bytes]]:
        h = [
            (b"x-ratelimit-limit", str(self.limit).encode()),
            (b"x-ratelimit-remaining", str(self.remaining).encode()),
            (b"x-ratelimit-reset", str(self.reset_epoch).encode()),
        ]
        if not self.allowed:
            ra = str(self.retry_after_s).encode()
            h += [(b"x-ratelimit-retry-after", ra), (b"retry-after", ra)]
        return h


class RateLimiter:
    def __init__(self, conn: RedisConn, prefix: str = "citadel:rl:"):
        self.conn = conn
        self.prefix = prefix

    async def check(self, bucket: str, subject: str, limit: Limit) -> Decision:
        """Raises :class:`RedisUnavailable` when Redis cannot answer."""
        key = f"{self.prefix}{bucket}:{subject}"
        interval_us = 60_000_000 // limit.per_minute
        args = (interval_us, limit.burst)

        fast = self.conn.fast

        async def run(_: Any) -> Any:
            try:
                return await fast.call(b"EVALSHA", GCRA_SHA, 1, key, *args)
            except RespError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
                await fast.call(b"SCRIPT", b"LOAD", GCRA_LUA)
                return await fast.call(b"EVALSHA", GCRA_SHA, 1, key, *args)

        allowed, remaining, retry_us, reset_us = await self.conn.call("ratelimit", run)
        now = time.time()
        return Decision(
            allowed=bool(allowed),
            limit=limit.per_minute,
            remaining=int(remaining),
            retry_after_s=max(1, math.ceil(int(retry_us) / 1e6)) if not allowed else 0,
            reset_epoch=math.ceil(now + int(reset_us) / 1e6),
        )
