"""The gateway's two Redis connections, with short timeouts and a tiny outage breaker.

Both are :class:`~citadel_gateway.resp.RespClient` (one pipelined connection each, RESP2):
``fast`` carries the rate limiter's EVALSHA on every request, ``client`` the cache's GET/SET and
the health probe's PING. Two connections, so a large cached answer on the wire never delays a
rate-limit decision, and a timeout on one (which closes it, failing what was in flight) never
fails the other's commands. Both share the breaker below.

After a Redis error Redis is skipped for ``redis.retry_after_failure_s`` seconds, so an outage
costs one socket timeout per second at most, never one per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from . import metrics
from .config import Redis as RedisCfg
from .resp import MAX_BULK, RespClient

log = logging.getLogger("citadel_gateway.redis")
T = TypeVar("T")

# The rate limiter's replies are four integers (SCRIPT LOAD: a 40-byte digest): anything
# larger on that connection is a broken or hostile peer, refused before it is buffered.
FAST_MAX_REPLY_BYTES = 65536


class RedisUnavailable(Exception):
    pass


class RedisConn:
    def __init__(self, cfg: RedisCfg):
        self.cfg = cfg
        timeout = cfg.socket_timeout_ms / 1000
        # cached answers: as large as Redis itself stores (cache.max_entry_bytes bounds the SET)
        self.client = RespClient(cfg.url, cfg.password, timeout, MAX_BULK)
        self.fast = RespClient(cfg.url, cfg.password, timeout, FAST_MAX_REPLY_BYTES)
        self.down_until = 0.0
        self._last_log = 0.0

    @property
    def up(self) -> bool:
        return time.monotonic() >= self.down_until

    async def call(self, op: str, fn: Callable[[RespClient], Awaitable[T]]) -> T:
        if not self.up:
            metrics.REDIS_ERRORS.labels(op=op).inc()
            raise RedisUnavailable("redis marked down")
        try:
            return await fn(self.client)
        except Exception as exc:  # RespError, RespConnectionError, OSError ...
            raise self.failed(op, exc) from None

    def failed(self, op: str, exc: BaseException) -> RedisUnavailable:
        """Count and log a failure, skip Redis for a while; the error to raise."""
        self.down_until = time.monotonic() + self.cfg.retry_after_failure_s
        metrics.REDIS_ERRORS.labels(op=op).inc()
        now = time.monotonic()
        if now - self._last_log > 10:
            self._last_log = now
            log.warning("redis unavailable during %s: %s: %s", op, type(exc).__name__, exc)
        return RedisUnavailable(str(exc))

    async def ping(self) -> bool:
        try:
            return bool(await self.client.call(b"PING") == b"PONG")
        except Exception:
            return False

    async def close(self) -> None:
        self.fast.close()
        self.client.close()
