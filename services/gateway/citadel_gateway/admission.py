"""Admission, from the request's headers alone and before its body is read: the token, the
route's permissions, then the rate limit (checked, or sent alongside the upstream request)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from dataclasses import dataclass
from typing import Any

from . import metrics
from .asgi import Ctx
from .auth import (
    ServiceClient,
    auth_failed,
    authorization,
    bearer_token,
    claim_permissions,
    insufficient_scope,
)
from .config import Limit, Listen
from .errors import GatewayError
from .ratelimit import Decision, Pending
from .redisconn import RedisUnavailable
from .state import State


@dataclass(frozen=True, slots=True)
class Policy:
    """What a route asks of a caller before it is served."""

    auth: bool = True
    limit: str | None = None  # rate-limit bucket (config.rate_limits.<name>)
    proxy: bool = False  # served from a backend: the rate-limit check may overlap it


class Admission:
    """A model request's rate-limit decision sent together with the request itself
    (``rate_limits.overlap_upstream``): settled before anything reaches the client; a refusal
    that arrives while the backend is still working cancels the request at once."""

    __slots__ = ("bucket", "denied", "limit", "pending", "settling", "st", "task")

    def __init__(
        self, st: State, pending: Pending, bucket: str, limit: Limit, task: asyncio.Task[Any]
    ):
        self.st = st
        self.pending = pending
        self.bucket = bucket
        self.limit = limit
        self.task = task
        self.denied = False
        self.settling = False
        pending.future.add_done_callback(self._answered)

    def _answered(self, _: asyncio.Future[Any]) -> None:
        if self.settling or self.pending.allowed_if_done() is not False:
            return
        self.denied = True
        self.task.cancel()  # the upstream request stops; http() answers 429

    async def settle(self, ctx: Ctx) -> None:
        self.settling = True
        ctx.admission = None
        try:
            d = await self.pending.decision()
        except RedisUnavailable:
            redis_unavailable(self.st, ctx, self.bucket, self.limit)
            return
        apply_decision(ctx, d, self.limit)


async def admit(st: State, ctx: Ctx, policy: Policy) -> None:
    if policy.auth:
        await authenticate(st, ctx)
    if policy.limit and st.cfg.rate_limits.enabled:
        subject = ctx.subject
        if subject is None:
            who = "ip:" + (client_ip(st.cfg.listen, ctx) or "unknown")
        elif ctx.forwarder is None:
            who = "sub:" + subject[:200]
        else:  # a forwarder's users (validated ids): never a JWT subject's bucket
            who = "fwd:" + subject
        limit: Limit = getattr(st.cfg.rate_limits, policy.limit)
        if policy.proxy and st.cfg.rate_limits.overlap_upstream:
            pending = st.limiter.start(policy.limit, who, limit)
            task = asyncio.current_task()
            if pending is not None and task is not None:
                ctx.admission = Admission(st, pending, policy.limit, limit, task)
                metrics.RATELIMIT_OVERLAPPED.inc()
                return
        await rate_limit(st, ctx, policy.limit, who, limit)


def client_ip(listen: Listen, ctx: Ctx) -> str | None:
    """The client's address: the peer, or the X-Real-IP a trusted proxy (the TLS edge) set;
    on ``listen.unix_socket`` the peer is the front on this host, trusted like one."""
    client = ctx.scope.get("client")
    peer = client[0] if client else None
    if listen.trusts(peer) or (listen.unix_socket is not None and not peer):
        real = ctx.headers.get(b"x-real-ip")
        if real:
            text = real.decode("latin-1").strip()
            with contextlib.suppress(ValueError):
                return str(ipaddress.ip_address(text))
    return peer


async def authenticate(st: State, ctx: Ctx, also: list[str] | None = None) -> dict[str, Any]:
    """Verify the token; the route's permissions (and ``also``) must all be granted."""
    token = bearer_token(authorization(ctx.scope["headers"]))
    service = st.auth.services.get(token)
    if service is not None:
        claims = forwarded(st, ctx, service)
    else:
        claims = await st.auth.verify(token)
        sub = claims.get("sub")
        ctx.subject = str(sub) if sub is not None else "anonymous"
        for header, name in st.auth.user_headers:
            if header in ctx.headers:  # without its forwarder's credential: ignored
                metrics.child(metrics.FORWARDED, name, "ignored").inc()
    ctx.claims = claims
    needed = st.cfg.auth.permissions_for(ctx.scope["path"]) + (also or [])
    if needed:
        missing = [p for p in needed if p not in claim_permissions(claims)]
        if missing:
            raise insufficient_scope(needed, missing)
    return claims


def forwarded(st: State, ctx: Ctx, service: ServiceClient) -> dict[str, Any]:
    """A forwarder's service credential: accepted from its addresses only; the subject is the
    user its header names (``<forwarder>:<user id>``), or the forwarder itself without one."""
    if not service.allows(client_ip(st.cfg.listen, ctx)):
        metrics.child(metrics.FORWARDED, service.name, "refused").inc()
        raise auth_failed("Token not accepted from this address")
    ctx.subject = service.name
    ctx.forwarder = service.name
    try:
        user = service.user(ctx.scope["headers"])
    except GatewayError:
        metrics.child(metrics.FORWARDED, service.name, "invalid").inc()
        raise
    if user is None:
        metrics.child(metrics.FORWARDED, service.name, "service").inc()
    else:
        metrics.child(metrics.FORWARDED, service.name, "user").inc()
        ctx.subject = service.name + ":" + user
    return service.claims


async def rate_limit(st: State, ctx: Ctx, bucket: str, who: str, limit: Limit) -> None:
    try:
        d: Decision = await st.limiter.check(bucket, who, limit)
    except RedisUnavailable:
        redis_unavailable(st, ctx, bucket, limit)
        return
    apply_decision(ctx, d, limit)


def redis_unavailable(st: State, ctx: Ctx, bucket: str, limit: Limit) -> None:
    # /health always fails open: a Redis outage must not make the gateway look dead
    if st.cfg.redis.failure_mode == "closed" and bucket != "health":
        raise GatewayError(
            "MODEL_UNAVAILABLE",
            "Rate limiter unavailable",
            {"reason": "redis_unavailable"},
            [(b"retry-after", b"1")],
        )
    metrics.RATELIMIT_BYPASS.inc()
    ctx.rl_headers = [(b"x-ratelimit-limit", str(limit.per_minute).encode())]


def apply_decision(ctx: Ctx, d: Decision, limit: Limit) -> None:
    ctx.rl_headers = d.headers()
    if not d.allowed:
        raise GatewayError(
            "RATE_LIMITED",
            "Too many requests",
            {
                "limit_per_minute": limit.per_minute,
                "burst": limit.burst,
                "retry_after_s": d.retry_after_s,
            },
        )
