"""The gateway as a pure ASGI application (no framework, no BaseHTTPMiddleware).

One request: route, admission from the headers (``admission``), the body read within its
limits (``body``), the handler (``handlers``); errors answered in the API document's format,
every request counted and logged once. Each of its modules imports only those before it in
``asgi``, ``state``, ``validation``, ``admission``, ``proxy``, ``lifecycle``, ``handlers``,
``routes``, ``app``: no circle, not even for type checking.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from . import body as request_body
from . import logs, metrics
from .admission import admit, client_ip
from .asgi import Ctx, Receive, Scope, Send
from .config import ConfigError, GatewayConfig, config_path_from_env, load_config
from .cors import Cors
from .errors import GatewayError, error_body, sane_request_id
from .jsoncodec import dumps as _dumps
from .jsoncodec import loads as _loads
from .lifecycle import Runtime
from .proxy import upstream_uuid
from .routes import Routes

# imported from here by other code: uvicorn ("citadel_gateway.app:create_app") and tests
__all__ = ["Gateway", "_dumps", "_loads", "create_app", "upstream_uuid"]

log = logging.getLogger("citadel_gateway")


class Gateway(Runtime):
    def __init__(self, config_path: str, cfg: GatewayConfig | None = None):
        super().__init__(config_path, cfg)
        self.routes = Routes()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        headers = dict(scope["headers"])
        ctx = Ctx(scope, receive, send, sane_request_id(headers.get(b"x-request-id")), t0, headers)
        st = self.state
        watcher: asyncio.Task[None] | None = None
        try:
            route = self.routes.resolve(ctx, scope["method"], scope["path"])
            ctx.route = route.name
            await admit(st, ctx, route.policy)  # from the headers alone: no body read yet
            if scope["method"] == "POST":
                lim = st.cfg.listen
                ctx.request_body = await request_body.read(
                    scope,
                    receive,
                    lim.max_body_bytes,
                    self.bodies,
                    lim.max_buffered_bytes,
                    lim.body_timeout_s,
                )
            if route.policy.proxy:
                watcher = asyncio.get_running_loop().create_task(
                    self._watch(ctx, asyncio.current_task())  # type: ignore[arg-type]
                )
            await route.handler(self, ctx)
        except GatewayError as err:
            await self._send_error(ctx, err)
        except request_body.ClientGone:
            ctx.status = 499  # client closed request
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            if ctx.admission is not None and ctx.admission.denied and not ctx.started:
                # the overlapped rate-limit check said no: the upstream request was cancelled
                with contextlib.suppress(Exception):
                    await self._send_error(ctx, GatewayError("INTERNAL_ERROR", "unreachable"))
            elif ctx.status == 0:
                ctx.status = 499  # client closed request
        except Exception:
            log.exception("unhandled error", extra={"fields": {"request_id": ctx.request_id}})
            await self._send_error(ctx, GatewayError("INTERNAL_ERROR", "Internal server error"))
        finally:
            if ctx.request_body is not None:
                self.bodies.used -= len(ctx.request_body)  # what read() took of the budget
            if watcher is not None:
                watcher.cancel()
            self._finish(ctx)

    async def _watch(self, ctx: Ctx, task: asyncio.Task[Any]) -> None:
        """Cancel the handler (and so the upstream request) when the client goes away."""
        while True:
            msg = await ctx.receive()
            if msg["type"] == "http.disconnect":
                if not ctx.done:
                    task.cancel()
                return

    async def _send_error(self, ctx: Ctx, err: GatewayError) -> None:
        if ctx.admission is not None:
            # the rate limit comes first: a refused request is answered 429, whatever else
            try:
                await ctx.admission.settle(ctx)
            except GatewayError as limited:
                err = limited
        if ctx.started:
            # headers already went out (streaming): nothing to do but end the body
            if not ctx.done:
                with contextlib.suppress(Exception):
                    await ctx.body(b"", more=False)
            return
        headers = err.headers
        unread = ctx.request_body is None and request_body.announced(ctx.scope)
        if unread and request_body.CLOSE not in headers:
            headers = [*headers, request_body.CLOSE]  # the server then drops what the client sends
        await ctx.respond(err.status, error_body(err, ctx.request_id), headers)

    def _finish(self, ctx: Ctx) -> None:
        total = time.perf_counter() - ctx.t0
        code = str(ctx.status)
        metrics.child(metrics.HTTP_REQUESTS, ctx.route, ctx.scope["method"], code).inc()
        metrics.child(metrics.OVERHEAD, ctx.route).observe(max(0.0, total - ctx.upstream_s))
        self.stats.record(total)
        fields = {
            "request_id": ctx.request_id,
            "subject": ctx.subject,
            "method": ctx.scope["method"],
            "route": ctx.route,
            "model": ctx.model,
            "status": ctx.status,
            "latency_ms": round(total * 1000, 3),
            "upstream_ms": round(ctx.upstream_s * 1000, 3) if ctx.upstream_s else None,
            "tokens": ctx.tokens,
            "backend": ctx.backend,
            "cache": ctx.cache,
            "client": client_ip(self.state.cfg.listen, ctx),
        }
        if ctx.forwarder is not None:  # the subject is a user the forwarder named
            fields["forwarder"] = ctx.forwarder
        logs.access(fields)


def create_app() -> Any:
    """uvicorn factory: config path from ``CITADEL_GATEWAY_CONFIG``."""
    try:
        path = config_path_from_env()
        cfg = load_config(path)
    except ConfigError as exc:
        raise SystemExit(f"{exc}") from None
    logs.setup(cfg.logging.level)
    gateway = Gateway(path, cfg)
    return Cors(gateway, lambda: gateway.cfg_now().cors.allowed_origins)
