"""The gateway as a pure ASGI application (no framework, no BaseHTTPMiddleware)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import ipaddress
import json
import logging
import os
import re
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from . import __version__, backend_errors, logs, metrics, openapi
from . import body as request_body
from .auth import (
    Authenticator,
    authorization,
    bearer_token,
    claim_permissions,
    insufficient_scope,
)
from .backends import BackendState, Pool
from .cache import ResponseCache, cache_key, cacheable
from .config import ConfigError, GatewayConfig, Limit, config_path_from_env, load_config
from .cors import Cors
from .errors import GatewayError, error_body, invalid, sane_request_id
from .health import Monitor, Stats
from .jsoncodec import BadJSON
from .jsoncodec import dumps as _dumps
from .jsoncodec import loads as _loads
from .ratelimit import Decision, Pending, RateLimiter
from .redisconn import RedisConn, RedisUnavailable
from .upstream import Response, UpstreamClient, UpstreamError

log = logging.getLogger("citadel_gateway")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON_CT = (b"content-type", b"application/json")
MAX_TOKENS = 4000
GC_GEN0_THRESHOLD = 20_000
_COLLECTION = re.compile(r"^/collections/([A-Za-z0-9_\-]{1,255})/points/search$")
_HOP_BY_HOP_DROP = {b"content-length", b"transfer-encoding", b"connection", b"keep-alive"}


# ---------------------------------------------------------------------------------------------
# state built from one config; swapped atomically on SIGHUP
# ---------------------------------------------------------------------------------------------
class State:
    def __init__(
        self,
        cfg: GatewayConfig,
        session: aiohttp.ClientSession,
        previous: State | None = None,
    ):
        self.cfg = cfg
        self.session = session  # JWKS, health probes, Qdrant: off the per-request hot path
        up = cfg.upstream
        self.upstream: UpstreamClient
        if previous is not None and previous.cfg.upstream == up:
            self.upstream = previous.upstream
        else:
            self.upstream = UpstreamClient(
                max_connections=up.max_connections,
                connect_timeout_s=up.connect_timeout_s,
                keepalive_s=up.keepalive_s,
                max_header_bytes=up.max_response_header_bytes,
                max_headers=up.max_response_headers,
            )
        self.redis: RedisConn
        if previous is not None and previous.cfg.redis == cfg.redis:
            self.redis = previous.redis
        else:
            self.redis = RedisConn(cfg.redis)
        self.limiter = RateLimiter(self.redis)
        self.cache = ResponseCache(cfg.cache, self.redis)
        self.auth = Authenticator(cfg.auth, session)
        old = previous.backends if previous is not None else {}
        self.backends: dict[str, BackendState] = {}
        self.pools: dict[str, Pool] = {}
        for name, model in cfg.models.items():
            states = []
            for b in model.backends:
                st = self.backends.get(b.url)
                if st is None:
                    prev = old.get(b.url)
                    if prev is not None and prev.api_key == b.api_key and prev.cfg == cfg.upstream:
                        st = prev
                        st.models = set()
                        st.gpu_metrics_url = None
                    else:
                        st = BackendState(b.url, b.api_key, cfg.upstream)
                    self.backends[b.url] = st
                # one URL is one backend host: any model's entry may name its GPU exporter
                st.gpu_metrics_url = st.gpu_metrics_url or b.gpu_metrics_url
                st.models.add(name)
                states.append(st)
            self.pools[name] = Pool(name, states)

    async def close_unshared(self, new: State) -> None:
        if self.redis is not new.redis:
            await self.redis.close()
        if self.upstream is not new.upstream:
            self.upstream.close()  # idle connections only; requests in flight finish


class Admission:
    """A model request's rate-limit decision sent together with the request itself
    (``rate_limits.overlap_upstream``): settled before anything reaches the client; a refusal
    that arrives while the backend is still working cancels the request at once."""

    __slots__ = ("app", "bucket", "denied", "limit", "pending", "settling", "task")

    def __init__(
        self, app: Gateway, pending: Pending, bucket: str, limit: Limit, task: asyncio.Task[Any]
    ):
        self.app = app
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
        st = self.app.state
        try:
            d = await self.pending.decision()
        except RedisUnavailable:
            self.app.redis_unavailable(st, ctx, self.bucket, self.limit)
            return
        self.app.apply_decision(ctx, d, self.limit)


@dataclass(slots=True)
class Ctx:
    scope: Scope
    receive: Receive
    send: Send
    request_id: str
    t0: float
    headers: dict[bytes, bytes]
    route: str = "unknown"
    subject: str | None = None
    model: str | None = None
    status: int = 0
    tokens: int | None = None
    upstream_s: float = 0.0
    backend: str | None = None
    cache: str | None = None
    rl_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    started: bool = False
    done: bool = False
    claims: dict[str, Any] | None = None
    admission: Admission | None = None  # a rate-limit decision still on the wire

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        if self.admission is not None:
            await self.admission.settle(self)  # raises 429 (or 503) instead of answering
        self.status = status
        self.started = True
        await self.send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"x-request-id", self.request_id.encode()),
                    *self.rl_headers,
                    *headers,
                ],
            }
        )

    async def body(self, data: bytes, more: bool = False) -> None:
        if not more:
            self.done = True
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def respond(
        self, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        hdrs = [JSON_CT, (b"content-length", str(len(body)).encode())]
        if headers:
            hdrs += headers
        await self.start(status, hdrs)
        await self.body(body)

    async def json(
        self, status: int, obj: Any, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        await self.respond(status, json.dumps(obj, separators=(",", ":")).encode(), headers)


_NS_URL = uuid.NAMESPACE_URL.bytes


def upstream_uuid(request_id: str) -> str:
    """``str(uuid.uuid5(uuid.NAMESPACE_URL, request_id))`` without building UUID objects."""
    h = bytearray(hashlib.sha1(_NS_URL + request_id.encode()).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50  # version 5
    h[8] = (h[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


# ---------------------------------------------------------------------------------------------
# request validation
# ---------------------------------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        obj = _loads(raw)
    except BadJSON as exc:
        raise invalid("body", str(exc), "Request body is not valid JSON") from None
    if not isinstance(obj, dict):
        raise invalid("body", "Must be a JSON object")
    return obj


def _str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def validate_common(body: dict[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model", "Required string")
    if "max_tokens" in body and body["max_tokens"] is not None:
        mt = body["max_tokens"]
        if not _is_int(mt) or not 1 <= mt <= MAX_TOKENS:
            raise invalid("max_tokens", f"Must be between 1 and {MAX_TOKENS}")
    if "temperature" in body and body["temperature"] is not None:
        t = body["temperature"]
        if not _is_num(t) or not 0 <= t <= 2:
            raise invalid("temperature", "Must be a number between 0 and 2")
    if "top_p" in body and body["top_p"] is not None:
        p = body["top_p"]
        if not _is_num(p) or not 0 <= p <= 1:
            raise invalid("top_p", "Must be a number between 0 and 1")
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise invalid("stream", "Must be a boolean")
    if (
        "n" in body
        and body["n"] is not None
        and (not _is_int(body["n"]) or not 1 <= body["n"] <= 16)
    ):
        raise invalid("n", "Must be an integer between 1 and 16")
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str) and not (_str_list(stop) and len(stop) <= 4):
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
    if not isinstance(p, str) and not (_str_list(p) and p):
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
        return _dumps(body)
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
        and (all(isinstance(x, str) for x in inp) or all(_is_int(x) for x in inp))
    )
    if not ok:
        raise invalid("input", "Required string or non-empty list of strings")


# ---------------------------------------------------------------------------------------------
# the application
# ---------------------------------------------------------------------------------------------
Handler = Callable[["Gateway", Ctx], Awaitable[None]]


OPENAI_PREFIX = "/v1"


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    handler: Handler
    auth: bool = True
    limit: str | None = None  # rate-limit bucket (config.rate_limits.<name>)
    proxy: bool = False  # watches for client disconnect


class Gateway:
    def __init__(self, config_path: str, cfg: GatewayConfig | None = None):
        self.config_path = config_path
        self.initial_cfg = cfg or load_config(config_path)
        self._state: State | None = None
        self.monitor = Monitor()
        self.stats = Stats()
        self.bodies = request_body.Budget()
        self.started_at = time.time()
        self.reloads = 0
        self._reload_lock = asyncio.Lock()
        self.routes: dict[tuple[str, str], Route] = {
            ("POST", "/v1/chat/completions"): Route(
                "/v1/chat/completions", Gateway.h_chat, limit="chat_completions", proxy=True
            ),
            ("POST", "/v1/completions"): Route(
                "/v1/completions", Gateway.h_completions, limit="completions", proxy=True
            ),
            ("POST", "/v1/embeddings"): Route(
                "/v1/embeddings", Gateway.h_embeddings, limit="embeddings", proxy=True
            ),
            ("POST", "/api/embeddings"): Route(
                "/api/embeddings", Gateway.h_embeddings, limit="embeddings", proxy=True
            ),
            ("GET", "/v1/models"): Route("/v1/models", Gateway.h_models),
            ("GET", "/health"): Route("/health", Gateway.h_health, auth=False, limit="health"),
            ("GET", "/api/v1/status"): Route("/api/v1/status", Gateway.h_status),
            ("GET", "/metrics"): Route("/metrics", Gateway.h_metrics, auth=False),
            ("GET", "/openapi.json"): Route("/openapi.json", Gateway.h_openapi),
        }
        self.search_route = Route(
            "/collections/{name}/points/search",
            Gateway.h_search,
            limit="collection_search",
            proxy=True,
        )
        # OpenAI's clients join their base URL and "/chat/completions": the document's Python SDK
        # sets base_url without "/v1". Each /v1/ route answers there too (same route, not a copy).
        for (method, path), route in list(self.routes.items()):
            if path.startswith(OPENAI_PREFIX + "/"):
                self.routes[(method, path[len(OPENAI_PREFIX) :])] = route
        self._paths = {p for _, p in self.routes}

    @property
    def state(self) -> State:
        assert self._state is not None, "gateway not started"
        return self._state

    def cfg_now(self) -> GatewayConfig:
        """The running config (the last good one after a reload), or the initial one."""
        return self._state.cfg if self._state is not None else self.initial_cfg

    # -- lifecycle --------------------------------------------------------------------------
    async def startup(self) -> None:
        cfg = self.initial_cfg
        logs.setup(cfg.logging.level)
        connector = aiohttp.TCPConnector(
            limit=cfg.upstream.max_connections,
            limit_per_host=0,
            ttl_dns_cache=300,
            keepalive_timeout=30,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
            max_headers=cfg.upstream.max_response_headers,
        )
        self._state = State(cfg, session)
        await self.state.auth.start()
        await self._probe_bounded(self.state)
        self.monitor.start(lambda: self.state)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)
        # Everything built so far lives as long as the process: move it out of the collector's
        # sight (gc.freeze) so the cyclic GC never rescans it, and collect young objects less
        # often; a request allocates few container objects that outlive it.
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)
        log.info(
            "gateway started", extra={"fields": {"pid": os.getpid(), "models": list(cfg.models)}}
        )

    async def _probe_bounded(self, st: State) -> None:
        try:
            async with asyncio.timeout(
                st.cfg.upstream.health_timeout_s + st.cfg.health.timeout_s + 1
            ):
                await self.monitor.probe_once(st)
        except TimeoutError:
            log.warning("initial health probe timed out")

    async def shutdown(self) -> None:
        logs.flush_access()
        await self.monitor.stop()
        if self._state is not None:
            await self._state.redis.close()
            self._state.upstream.close()
            await self._state.session.close()

    def _on_sighup(self) -> None:
        asyncio.get_running_loop().create_task(self.reload())

    async def reload(self) -> bool:
        async with self._reload_lock:
            try:
                cfg = load_config(self.config_path)
                new = State(cfg, self.state.session, previous=self.state)
                await new.auth.start()
            except ConfigError as exc:
                log.error("config reload failed, keeping the running config: %s", exc)
                return False
            except Exception as exc:
                log.error(
                    "config reload failed, keeping the running config: %s: %s",
                    type(exc).__name__,
                    exc,
                )
                return False
            old = self.state
            self._state = new  # atomic swap: requests in flight keep their old State
            logging.getLogger().setLevel(cfg.logging.level.upper())
            await old.close_unshared(new)
            self.reloads += 1
            log.info("config reloaded", extra={"fields": {"models": list(cfg.models)}})
            asyncio.get_running_loop().create_task(self._probe_bounded(new))
            return True

    # -- ASGI -------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        headers = dict(scope["headers"])
        ctx = Ctx(scope, receive, send, sane_request_id(headers.get(b"x-request-id")), t0, headers)
        st = self.state
        watcher: asyncio.Task[None] | None = None
        held = 0  # request-body bytes of self.bodies this request holds
        try:
            path = scope["path"]
            route = self.routes.get((scope["method"], path))
            if route is None:
                if _COLLECTION.match(path) and scope["method"] == "POST":
                    route = self.search_route
                elif path in self._paths or path.startswith("/collections/"):
                    ctx.route = path if path in self._paths else "/collections/{name}/points/search"
                    raise GatewayError(
                        "METHOD_NOT_ALLOWED", f"Method {scope['method']} not allowed"
                    )
                else:
                    raise GatewayError("NOT_FOUND", "No such route")
            ctx.route = route.name
            await self.admit(st, ctx, route)  # from the headers alone: no body read yet
            if scope["method"] == "POST":
                lim = st.cfg.listen
                held = await request_body.read(
                    scope,
                    receive,
                    lim.max_body_bytes,
                    self.bodies,
                    lim.max_buffered_bytes,
                    lim.body_timeout_s,
                )
            if route.proxy:
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
            self.bodies.used -= held
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
        if request_body.has_unread_body(ctx.scope) and request_body.CLOSE not in headers:
            headers = [
                *headers,
                request_body.CLOSE,
            ]  # the server then drops what the client still sends
        await ctx.respond(err.status, error_body(err, ctx.request_id), headers)

    def _finish(self, ctx: Ctx) -> None:
        total = time.perf_counter() - ctx.t0
        code = str(ctx.status)
        metrics.child(metrics.HTTP_REQUESTS, ctx.route, ctx.scope["method"], code).inc()
        metrics.child(metrics.OVERHEAD, ctx.route).observe(max(0.0, total - ctx.upstream_s))
        self.stats.record(total)
        logs.access(
            {
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
                "client": self.client_ip(ctx),
            }
        )

    # -- admission: auth, permissions, rate limit --------------------------------------------
    async def admit(self, st: State, ctx: Ctx, route: Route) -> None:
        if route.auth:
            await self.authenticate(st, ctx)
        if route.limit and st.cfg.rate_limits.enabled:
            if ctx.subject is not None:
                who = "sub:" + ctx.subject[:200]
            else:
                who = "ip:" + (self.client_ip(ctx) or "unknown")
            limit: Limit = getattr(st.cfg.rate_limits, route.limit)
            if route.proxy and st.cfg.rate_limits.overlap_upstream:
                pending = st.limiter.start(route.limit, who, limit)
                task = asyncio.current_task()
                if pending is not None and task is not None:
                    ctx.admission = Admission(self, pending, route.limit, limit, task)
                    metrics.RATELIMIT_OVERLAPPED.inc()
                    return
            await self.rate_limit(st, ctx, route.limit, who, limit)

    def client_ip(self, ctx: Ctx) -> str | None:
        """The client's address: the peer, or the X-Real-IP a trusted proxy (the TLS edge) set;
        on ``listen.unix_socket`` the peer is the front on this host, trusted like one."""
        client = ctx.scope.get("client")
        peer = client[0] if client else None
        listen = self.state.cfg.listen
        if listen.trusts(peer) or (listen.unix_socket is not None and not peer):
            real = ctx.headers.get(b"x-real-ip")
            if real:
                text = real.decode("latin-1").strip()
                with contextlib.suppress(ValueError):
                    return str(ipaddress.ip_address(text))
        return peer

    async def authenticate(
        self, st: State, ctx: Ctx, also: list[str] | None = None
    ) -> dict[str, Any]:
        """Verify the token; the route's permissions (and ``also``) must all be granted."""
        token = bearer_token(authorization(ctx.scope["headers"]))
        claims = await st.auth.verify(token)
        ctx.claims = claims
        sub = claims.get("sub")
        ctx.subject = str(sub) if sub is not None else "anonymous"
        needed = st.cfg.auth.permissions_for(ctx.scope["path"]) + (also or [])
        if needed:
            missing = [p for p in needed if p not in claim_permissions(claims)]
            if missing:
                raise insufficient_scope(needed, missing)
        return claims

    async def rate_limit(self, st: State, ctx: Ctx, bucket: str, who: str, limit: Limit) -> None:
        try:
            d: Decision = await st.limiter.check(bucket, who, limit)
        except RedisUnavailable:
            self.redis_unavailable(st, ctx, bucket, limit)
            return
        self.apply_decision(ctx, d, limit)

    @staticmethod
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

    @staticmethod
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

    # -- handlers ----------------------------------------------------------------------------
    async def h_chat(self, ctx: Ctx) -> None:
        await self._openai(ctx, "chat", "/chat/completions", validate_chat)

    async def h_completions(self, ctx: Ctx) -> None:
        await self._openai(ctx, "completions", "/completions", validate_completions)

    async def h_embeddings(self, ctx: Ctx) -> None:
        await self._openai(ctx, "embeddings", "/embeddings", validate_embeddings)

    async def _openai(
        self, ctx: Ctx, kind: str, upath: str, validate: Callable[[dict[str, Any]], None]
    ) -> None:
        st = self.state
        raw = ctx.scope["_body"]  # read by http() before the disconnect watcher took receive()
        body = parse_json(raw)
        validate(body)
        name = body["model"]
        ctx.model = name
        model = st.cfg.models.get(name)
        if model is None or model.kind != kind:
            raise GatewayError(
                "MODEL_UNAVAILABLE", f"Model {name!r} is not available", {"model": name}
            )
        if model.upstream_model:
            body["model"] = model.upstream_model
            raw = _dumps(body)
        if kind == "completions" and "suffix" in body:
            raw = without_empty_suffix(body, model.fill_in_middle, raw)
        stream = bool(body.get("stream"))
        key: str | None = None
        if st.cfg.cache.enabled and cacheable(
            kind, body, ctx.headers.get(b"x-citadel-cache", b"").lower() == b"use"
        ):
            key = cache_key(kind, ctx.subject or "", body)
            hit = await st.cache.get(key)
            if hit is not None:
                ctx.cache = "hit"
                await ctx.respond(200, hit, [(b"x-cache", b"HIT")])
                return
            ctx.cache = "miss"
        await self._upstream(st, ctx, name, kind, upath, raw, stream, key)

    async def _upstream(
        self,
        st: State,
        ctx: Ctx,
        name: str,
        kind: str,
        upath: str,
        raw: bytes,
        stream: bool,
        key: str | None,
    ) -> None:
        model = st.cfg.models[name]
        pool = st.pools[name]
        attempts = 1 + st.cfg.upstream.retries
        tried: set[BackendState] = set()
        last: GatewayError | None = None
        queue = metrics.child(metrics.QUEUE, name)
        inference = metrics.child(metrics.INFERENCE, name)
        up_id = upstream_uuid(ctx.request_id).encode()
        rid = ctx.request_id.encode()
        queue.inc()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + model.timeout_s
        try:
            for _ in range(attempts):
                b = pool.pick(tried)
                if b is None:
                    break
                tried.add(b)
                ctx.backend = b.url
                hdrs = [
                    (b"Content-Type", b"application/json"),
                    # llama.cpp's server accepts only a UUID here (400 otherwise); vLLM any string
                    (b"X-Request-ID", up_id),
                    (b"X-Citadel-Request-ID", rid),
                ]
                if b.auth_header is not None:
                    hdrs.append((b"Authorization", b.auth_header))
                t_up = time.perf_counter()
                outcome: bool | None = None
                try:
                    async with asyncio.timeout_at(deadline) as tmo:
                        resp = await st.upstream.post(b.url + upath, hdrs, raw)
                        try:
                            verdict = backend_errors.verdict(resp.status)
                            if verdict != backend_errors.OK:
                                backend_errors.log_failure(
                                    ctx.request_id,
                                    b.url,
                                    resp.status,
                                    await backend_errors.error_text(resp),
                                )
                            if verdict == backend_errors.FAILED:
                                outcome = False
                                last = GatewayError(
                                    "MODEL_UNAVAILABLE",
                                    f"Model {name!r} backend failed",
                                    {"model": name, "upstream_status": resp.status},
                                )
                                continue
                            outcome = True
                            if verdict != backend_errors.OK:
                                raise backend_errors.client_error(name, resp.status)
                            if stream:
                                tmo.reschedule(None)
                                await self._stream(ctx, resp, model.timeout_s)
                            else:
                                data = await resp.read(st.cfg.upstream.max_response_bytes)
                                ctx.upstream_s = time.perf_counter() - t_up
                                await self._complete(st, ctx, name, kind, data, t_up, key, resp)
                        finally:
                            resp.release()
                except TimeoutError:
                    outcome = False
                    if ctx.started:
                        return
                    raise GatewayError(
                        "TIMEOUT",
                        f"Model {name!r} did not answer within {model.timeout_s:g}s",
                        {"model": name},
                    ) from None
                except UpstreamError as exc:
                    outcome = False
                    if ctx.started:
                        return  # stream already going: just end it
                    last = backend_errors.unreachable(name, exc)
                    continue
                finally:
                    elapsed = time.perf_counter() - t_up
                    if not ctx.upstream_s:
                        ctx.upstream_s = elapsed
                    inference.observe(elapsed)
                    if outcome is None:
                        b.release_neutral()
                    else:
                        b.release(
                            outcome, None if outcome else (last.message if last else "timeout")
                        )
                return
            raise last or GatewayError(
                "MODEL_UNAVAILABLE", f"Model {name!r} has no healthy backend", {"model": name}
            )
        finally:
            queue.dec()

    async def _stream(self, ctx: Ctx, resp: Response, idle_s: float) -> None:
        ct = resp.headers.get("content-type", "text/event-stream").encode()
        await ctx.start(
            200,
            [(b"content-type", ct), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")],
        )
        while True:
            async with asyncio.timeout(idle_s):
                chunk = await resp.next_chunk()
            if chunk is None:
                break
            await ctx.body(chunk, more=True)
        await ctx.body(b"")

    async def _complete(
        self,
        st: State,
        ctx: Ctx,
        name: str,
        kind: str,
        data: bytes,
        t_up: float,
        key: str | None,
        resp: Response,
    ) -> None:
        try:
            obj = _loads(data)
        except BadJSON:
            obj = None
        if not isinstance(obj, dict):
            raise GatewayError(
                "MODEL_UNAVAILABLE", f"Model {name!r} sent an invalid response", {"model": name}
            )
        obj["model"] = name
        if kind == "chat":
            gpu = resp.headers.get("x-gpu-utilization")
            try:
                gpu_val: float | None = float(gpu) if gpu is not None else None
            except ValueError:
                gpu_val = None
            if gpu_val is None and ctx.backend is not None:
                b = st.backends.get(ctx.backend)
                gpu_val = b.gpu_utilization if b is not None else None
            obj["performance"] = {
                "inference_time_ms": round(ctx.upstream_s * 1000, 2),
                "queue_time_ms": round((t_up - ctx.t0) * 1000, 2),
                "gpu_utilization": gpu_val,
            }
        elif kind == "embeddings":
            obj = _normalise_embeddings(obj, name)
        usage = obj.get("usage")
        if isinstance(usage, dict) and _is_int(usage.get("total_tokens")):
            ctx.tokens = usage["total_tokens"]
        out = _dumps(obj)
        extra: list[tuple[bytes, bytes]] = []
        if key is not None:
            extra.append((b"x-cache", b"MISS"))
        await ctx.respond(200, out, extra)
        if key is not None:
            await st.cache.put(key, out)

    async def h_models(self, ctx: Ctx) -> None:
        created = int(self.started_at)
        data = [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "citadel",
                "kind": m.kind,
            }
            for name, m in self.state.cfg.models.items()
        ]
        await ctx.json(200, {"object": "list", "data": data})

    async def h_search(self, ctx: Ctx) -> None:
        st = self.state
        q = st.cfg.qdrant
        ctx.model = "qdrant"
        if q is None:
            raise GatewayError("MODEL_UNAVAILABLE", "Vector database not configured")
        raw = ctx.scope["_body"]
        body = parse_json(raw)
        vec = body.get("vector")
        if vec is None:
            raise invalid("vector", "Required")
        if "limit" in body and (not _is_int(body["limit"]) or body["limit"] < 1):
            raise invalid("limit", "Must be a positive integer")
        hdrs = {"Content-Type": "application/json", "X-Request-ID": ctx.request_id}
        if q.api_key:
            hdrs["api-key"] = q.api_key
        t_up = time.perf_counter()
        try:
            async with asyncio.timeout(q.timeout_s):
                async with st.session.post(
                    q.url + ctx.scope["path"], data=raw, headers=hdrs, allow_redirects=False
                ) as resp:
                    data = await backend_errors.read_capped(
                        resp, st.cfg.upstream.max_response_bytes
                    )
                    status = resp.status
        except TimeoutError:
            raise GatewayError(
                "TIMEOUT", f"Vector database did not answer within {q.timeout_s:g}s"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise GatewayError(
                "MODEL_UNAVAILABLE", "Vector database unreachable", {"reason": type(exc).__name__}
            ) from None
        finally:
            ctx.upstream_s = time.perf_counter() - t_up
            metrics.VECTOR_SEARCH.observe(ctx.upstream_s)
        verdict = backend_errors.verdict(status)
        if verdict != backend_errors.OK:
            backend_errors.log_failure(ctx.request_id, q.url, status, data)
        if verdict == backend_errors.FAILED:  # a 404 is a collection not found: the client's
            raise GatewayError(
                "MODEL_UNAVAILABLE", "Vector database failed", {"upstream_status": status}
            )
        if verdict != backend_errors.OK:
            raise invalid(
                "body",
                backend_errors.rejected(status, "vector database"),
                "Vector database rejected the request",
            )
        await ctx.respond(200, data)

    async def h_health(self, ctx: Ctx) -> None:
        detailed = _query_flag(ctx.scope, "detailed")
        st = self.state
        if detailed:  # backend URLs and their last errors: for operators only
            perm = st.cfg.auth.health_detailed_permission
            await self.authenticate(st, ctx, [perm] if perm else None)
        body: dict[str, Any] = {
            "status": self.monitor.overall(),
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "services": dict(self.monitor.services),
            "performance": self.stats.snapshot(),
        }
        if detailed:
            body["details"] = {
                "services": self.monitor.details,
                "backends": {
                    name: [b.describe() for b in pool.backends] for name, pool in st.pools.items()
                },
                "redis": "up" if st.redis.up else "down",
                "version": __version__,
            }
        await ctx.json(200, body)

    async def h_status(self, ctx: Ctx) -> None:
        st = self.state
        rl = st.cfg.rate_limits
        await ctx.json(
            200,
            {
                "status": self.monitor.overall(),
                "version": __version__,
                "api_version": "v1",
                "uptime_s": round(time.time() - self.started_at, 1),
                "pid": os.getpid(),
                "config_reloads": self.reloads,
                "services": dict(self.monitor.services),
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
                "performance": self.stats.snapshot(),
            },
        )

    async def h_metrics(self, ctx: Ctx) -> None:
        # Behind a TCP proxy the peer decides (the proxy relays for everyone); behind the front
        # on the unix socket (nginx on this host, overwriting X-Real-IP) the client's address does.
        client = ctx.scope.get("client")
        peer = client[0] if client else None
        front = self.state.cfg.listen.unix_socket is not None and not peer
        if not self.state.cfg.metrics.allows(self.client_ip(ctx) if front else peer):
            raise GatewayError("INSUFFICIENT_PERMS", "Metrics are not served to this address")
        out = metrics.render()
        await ctx.start(
            200,
            [(b"content-type", metrics.CONTENT_TYPE), (b"content-length", str(len(out)).encode())],
        )
        await ctx.body(out)

    async def h_openapi(self, ctx: Ctx) -> None:
        models = {n: m.kind for n, m in self.state.cfg.models.items()}
        await ctx.respond(200, openapi.schema_bytes(models))


def _query_flag(scope: Scope, name: str) -> bool:
    qs = scope.get("query_string", b"").decode("latin-1")
    for part in qs.split("&"):
        k, _, v = part.partition("=")
        if k == name:
            return v.lower() in ("1", "true", "yes", "")
    return False


def _normalise_embeddings(obj: dict[str, Any], name: str) -> dict[str, Any]:
    data = obj.get("data")
    if not isinstance(data, list) and isinstance(obj.get("embeddings"), list):  # Ollama /api/embed
        data = [{"embedding": e} for e in obj["embeddings"]]
    items = []
    for i, item in enumerate(data or []):
        emb = item.get("embedding") if isinstance(item, dict) else None
        items.append(
            {
                "object": "embedding",
                "embedding": emb,
                "index": item.get("index", i) if isinstance(item, dict) else i,
            }
        )
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        usage = {"prompt_tokens": 0, "total_tokens": 0}
    return {"object": "list", "data": items, "model": name, "usage": usage}


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
