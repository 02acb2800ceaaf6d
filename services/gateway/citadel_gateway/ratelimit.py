"""GCRA rate limiting in Redis: one atomic Lua script, Redis's own clock, keys with TTLs.

Two gateway processes (or hosts) sharing one Redis share the limits exactly: every decision
is one EVALSHA that reads and writes the bucket atomically, using ``TIME`` from Redis.

A bucket allows ``burst`` requests at once and refills one request every ``60/per_minute``
seconds. ``burst + 1`` simultaneous requests on a fresh bucket -> exactly ``burst`` allowed.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any

from .config import Limit
from .redisconn import RedisConn, RedisUnavailable
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


# A subject's last decision is trusted for overlapping (see RateLimiter.start) this long.
SEEN_TTL_S = 30.0
SEEN_MAX = 50_000


class MalformedReply(ValueError):
    """Redis answered the GCRA script with something it cannot return: not four integers."""


def gcra_reply(reply: Any) -> tuple[int, int, int, int]:
    """The script's ``{allowed, remaining, retry_us, reset_us}``; :class:`MalformedReply` for
    anything else (an integer, nil, a short array, strings): Redis is then as good as down, and
    the configured ``redis.failure_mode`` decides, as for an outage."""
    if (
        isinstance(reply, list)
        and len(reply) == 4
        and all(isinstance(v, int) and not isinstance(v, bool) for v in reply)
    ):
        allowed, remaining, retry_us, reset_us = reply
        return allowed, remaining, retry_us, reset_us
    raise MalformedReply(f"malformed GCRA reply: {type(reply).__name__}")


class Pending:
    """A rate-limit EVALSHA already written to Redis; :meth:`decision` waits for its answer."""

    __slots__ = ("_key", "_limit", "_limiter", "future")

    def __init__(self, limiter: RateLimiter, key: str, limit: Limit, future: asyncio.Future[Any]):
        self._limiter = limiter
        self._key = key
        self._limit = limit
        self.future = future

    def allowed_if_done(self) -> bool | None:
        """The decision when the answer is in (``None`` while on the wire or on an error)."""
        fut = self.future
        if not fut.done() or fut.cancelled() or fut.exception() is not None:
            return None
        try:
            return bool(gcra_reply(fut.result())[0])
        except MalformedReply:
            return None  # decision() reports it

    async def decision(self) -> Decision:
        """Raises :class:`RedisUnavailable` when Redis could not answer."""
        limiter = self._limiter
        try:
            try:
                reply = await self.future
            except RespError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
                reply = await limiter.evalsha(self._key, self._limit)
            return limiter.decide(self._key, self._limit, reply)
        except RedisUnavailable:
            raise
        except Exception as exc:
            raise limiter.conn.failed("ratelimit", exc) from None


class RateLimiter:
    def __init__(self, conn: RedisConn, prefix: str = "citadel:rl:"):
        self.conn = conn
        self.prefix = prefix
        # key -> (remaining at the last decision, when); key -> overlapped requests in flight
        self._seen: dict[str, tuple[int, float]] = {}
        self._overlapping: dict[str, int] = {}

    def key(self, bucket: str, subject: str) -> str:
        return f"{self.prefix}{bucket}:{subject}"

    @staticmethod
    def _args(limit: Limit) -> tuple[int, int]:
        return 60_000_000 // limit.per_minute, limit.burst

    async def evalsha(self, key: str, limit: Limit) -> Any:
        fast = self.conn.fast
        try:
            return await fast.call(b"EVALSHA", GCRA_SHA, 1, key, *self._args(limit))
        except RespError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            await fast.call(b"SCRIPT", b"LOAD", GCRA_LUA)
            return await fast.call(b"EVALSHA", GCRA_SHA, 1, key, *self._args(limit))

    async def check(self, bucket: str, subject: str, limit: Limit) -> Decision:
        """Raises :class:`RedisUnavailable` when Redis cannot answer."""
        key = self.key(bucket, subject)
        reply = await self.conn.call("ratelimit", lambda _: self.evalsha(key, limit))
        try:
            return self.decide(key, limit, reply)
        except MalformedReply as exc:
            raise self.conn.failed("ratelimit", exc) from None

    def start(self, bucket: str, subject: str, limit: Limit) -> Pending | None:
        """Put the decision on the wire without waiting, when the subject's last decision left
        room (at least 2 requests, counting those already overlapped). The caller then starts
        the upstream request at once and settles the decision before it answers anything, so
        the Redis round trip no longer adds to the latency. ``None``: decide with
        :meth:`check` instead (no recent decision, little room, Redis down or not connected).

        Decisions stay exact (Redis decides every request); what is given up is that, when
        another gateway process used the room in between, a request the limit then refuses
        has already reached a backend and is cancelled (its connection closed) at once.
        """
        key = self.key(bucket, subject)
        seen = self._seen.get(key)
        if seen is None or not self.conn.up:
            return None
        remaining, at = seen
        in_flight = self._overlapping.get(key, 0)
        if remaining - in_flight < 2 or time.monotonic() - at > SEEN_TTL_S:
            return None
        future = self.conn.fast.try_send(b"EVALSHA", GCRA_SHA, 1, key, *self._args(limit))
        if future is None:
            return None
        self._overlapping[key] = in_flight + 1
        future.add_done_callback(lambda f: self._answered(key, f))
        return Pending(self, key, limit, future)

    def _answered(self, key: str, future: asyncio.Future[Any]) -> None:
        # Also marks an error as retrieved: a request that ends without settling its decision
        # (the client went away) must not leave "exception was never retrieved" behind.
        if not future.cancelled():
            future.exception()
        left = self._overlapping.get(key, 1) - 1
        if left > 0:
            self._overlapping[key] = left
        else:
            self._overlapping.pop(key, None)

    def decide(self, key: str, limit: Limit, reply: Any) -> Decision:
        """Raises :class:`MalformedReply` for a reply the script cannot give."""
        allowed, remaining, retry_us, reset_us = gcra_reply(reply)
        if len(self._seen) >= SEEN_MAX:
            self._seen.clear()
        self._seen[key] = (remaining, time.monotonic())
        now = time.time()
        return Decision(
            allowed=bool(allowed),
            limit=limit.per_minute,
            remaining=remaining,
            retry_after_s=max(1, math.ceil(retry_us / 1e6)) if not allowed else 0,
            reset_epoch=math.ceil(now + reset_us / 1e6),
        )
