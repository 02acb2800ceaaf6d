"""The route handlers: each answers one admitted request (body read, for POST) from the
running state; errors are raised as ``GatewayError`` and answered by the application."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from . import __version__, metrics, openapi
from .admission import authenticate, client_ip
from .asgi import Ctx, query_flag
from .cache import cache_key, cache_scope, cacheable
from .config import Limit
from .errors import GatewayError
from .jsoncodec import dumps
from .lifecycle import Runtime
from .proxy import forward, search_vectors
from .validation import (
    parse_json,
    validate_chat,
    validate_completions,
    validate_embeddings,
    validate_search,
    without_empty_suffix,
)


async def chat(rt: Runtime, ctx: Ctx) -> None:
    await _openai(rt, ctx, "chat", "/chat/completions", validate_chat)


async def completions(rt: Runtime, ctx: Ctx) -> None:
    await _openai(rt, ctx, "completions", "/completions", validate_completions)


async def embeddings(rt: Runtime, ctx: Ctx) -> None:
    await _openai(rt, ctx, "embeddings", "/embeddings", validate_embeddings)


async def _openai(
    rt: Runtime, ctx: Ctx, kind: str, upath: str, validate: Callable[[dict[str, Any]], None]
) -> None:
    st = rt.state
    raw = ctx.posted
    body = parse_json(raw)
    validate(body)
    name = body["model"]
    ctx.model = name
    model = st.cfg.models.get(name)
    if model is None or model.kind != kind:
        raise GatewayError("MODEL_UNAVAILABLE", f"Model {name!r} is not available", {"model": name})
    if model.upstream_model:
        body["model"] = model.upstream_model
        raw = dumps(body)
    if kind == "completions" and "suffix" in body:
        raw = without_empty_suffix(body, model.fill_in_middle, raw)
    stream = bool(body.get("stream"))
    key: str | None = None
    if st.cfg.cache.enabled and cacheable(
        kind, body, ctx.headers.get(b"x-citadel-cache", b"").lower() == b"use"
    ):
        key = cache_key(kind, cache_scope(ctx.subject, ctx.forwarder), body)
        hit = await st.cache.get(key)
        if hit is not None:
            ctx.cache = "hit"
            await ctx.respond(200, hit, [(b"x-cache", b"HIT")])
            return
        ctx.cache = "miss"
    await forward(st, ctx, name, kind, upath, raw, stream, key)


async def models(rt: Runtime, ctx: Ctx) -> None:
    created = int(rt.started_at)
    data = [
        {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "citadel",
            "kind": m.kind,
        }
        for name, m in rt.state.cfg.models.items()
    ]
    await ctx.json(200, {"object": "list", "data": data})


async def search(rt: Runtime, ctx: Ctx) -> None:
    st = rt.state
    ctx.model = "qdrant"
    if st.cfg.qdrant is None:
        raise GatewayError("MODEL_UNAVAILABLE", "Vector database not configured")
    raw = ctx.posted
    validate_search(parse_json(raw))
    await ctx.respond(200, await search_vectors(st, ctx, raw))


async def health(rt: Runtime, ctx: Ctx) -> None:
    detailed = query_flag(ctx.scope, "detailed")
    st = rt.state
    if detailed:  # backend URLs and their last errors: for operators only
        perm = st.cfg.auth.health_detailed_permission
        await authenticate(st, ctx, [perm] if perm else None)
    body: dict[str, Any] = {
        "status": rt.monitor.overall(),
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "services": dict(rt.monitor.services),
        "performance": rt.stats.snapshot(),
    }
    if detailed:
        body["details"] = {
            "services": rt.monitor.details,
            "backends": {
                name: [b.describe() for b in pool.backends] for name, pool in st.pools.items()
            },
            "redis": "up" if st.redis.up else "down",
            "version": __version__,
        }
    await ctx.json(200, body)


async def status(rt: Runtime, ctx: Ctx) -> None:
    st = rt.state
    rl = st.cfg.rate_limits
    await ctx.json(
        200,
        {
            "status": rt.monitor.overall(),
            "version": __version__,
            "api_version": "v1",
            "uptime_s": round(time.time() - rt.started_at, 1),
            "pid": os.getpid(),
            "config_reloads": rt.reloads,
            "services": dict(rt.monitor.services),
            "models": {
                name: {
                    "kind": st.cfg.models[name].kind,
                    "status": pool.status(),
                    "backends": len(pool.backends),
                }
                for name, pool in st.pools.items()
            },
            "rate_limits": {
                k: {"per_minute": v.per_minute, "burst": v.burst}
                for k, v in rl
                if isinstance(v, Limit)
            },
            "performance": rt.stats.snapshot(),
        },
    )


async def prometheus(rt: Runtime, ctx: Ctx) -> None:
    # Behind a TCP proxy the peer decides (the proxy relays for everyone); behind the front
    # on the unix socket (nginx on this host, overwriting X-Real-IP) the client's address does.
    client = ctx.scope.get("client")
    peer = client[0] if client else None
    listen = rt.state.cfg.listen
    front = listen.unix_socket is not None and not peer
    if not rt.state.cfg.metrics.allows(client_ip(listen, ctx) if front else peer):
        raise GatewayError("INSUFFICIENT_PERMS", "Metrics are not served to this address")
    out = metrics.render()
    await ctx.start(
        200,
        [(b"content-type", metrics.CONTENT_TYPE), (b"content-length", str(len(out)).encode())],
    )
    await ctx.body(out)


async def openapi_schema(rt: Runtime, ctx: Ctx) -> None:
    models = {n: m.kind for n, m in rt.state.cfg.models.items()}
    await ctx.respond(200, openapi.schema_bytes(models))
