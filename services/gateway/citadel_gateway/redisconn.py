"""One Redis client per gateway state, with short timeouts and a tiny outage breaker.

``client`` (redis-py) serves the cache and health probes; ``fast`` (resp.py) the rate limiter's
EVALSHA on every request. Both share the breaker below.

After a Redis error the client is skipped for ``redis.retry_after_failure_s`` seconds, so an
outage costs one socket timeout per second at most, never one per request.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from . import metrics
from .config import Redis as RedisCfg
from .resp import RespClient

log = logging.getLogger("citadel_gateway.redis")
T = TypeVar("T")


class RedisUnavailable(Exception):
    pass


class RedisConn:
    def __init__(self, cfg: RedisCfg):
        self.cfg = cfg
        timeout = cfg.socket_timeout_ms / 1000
        self.client = aioredis.Redis.from_url(
            cfg.url,
            password=cfg.password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            health_check_interval=0,
            decode_responses=False,
        )
        # The per-request rate-limit command goes over a lean pipelined connection (resp.py).
        self.fast = RespClient(cfg.url, cfg.password, timeout)
        self.down_until = 0.0
        self._last_log = 0.0

    @property
    def up(self) -> bool:
        return time.monotonic() >= self.down_until

    async def call(self, op: str, fn: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        if not self.up:
            metrics.REDIS_ERRORS.labels(op=op).inc()
            raise RedisUnavailable("redis marked down")
        try:
            return await fn(self.client)
        except Exception as exc:  # RedisError, OSError, TimeoutError ...
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
            return bool(await self.client.ping())
        except Exception:
            return False

    async def close(self) -> None:
        self.fast.close()
        with contextlib.suppress(Exception):
            await self.client.aclose()

    def __getattr__(self, name: str) -> Any:  # pragma: no cover - convenience
        return getattr(self.client, name)
