"""The call to a model's backends: a retry over the pool within the model's deadline, the
response streamed through or read whole, shaped (model name, performance, embeddings format)
and cached. Vector searches go to Qdrant, once (``State.http``: the same HTTP/1.1 client, its
own pool and in-flight limit)."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from typing import Any

from . import backend_errors, metrics
from .asgi import Ctx
from .backends import BackendState
from .errors import GatewayError, invalid
from .jsoncodec import BadJSON, dumps, loads
from .state import State
from .upstream import ConnectFailed, Response, TooLarge, UpstreamError
from .validation import is_int

_NS_URL = uuid.NAMESPACE_URL.bytes


def upstream_uuid(request_id: str) -> str:
    """``str(uuid.uuid5(uuid.NAMESPACE_URL, request_id))`` without building UUID objects."""
    h = bytearray(hashlib.sha1(_NS_URL + request_id.encode()).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50  # version 5
    h[8] = (h[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


async def forward(
    st: State,
    ctx: Ctx,
    name: str,
    kind: str,
    upath: str,
    raw: bytes,
    stream: bool,
    key: str | None,
) -> None:
    """Try the model's backends in turn (``upstream.retries`` more after a failure) within one
    deadline; a stream already started is ended, never retried."""
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
                            await stream_events(ctx, resp, model.timeout_s)
                        else:
                            data = await resp.read(st.cfg.upstream.max_response_bytes)
                            ctx.upstream_s = time.perf_counter() - t_up
                            await complete(st, ctx, name, kind, data, t_up, key, resp)
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
                    b.release(outcome, None if outcome else (last.message if last else "timeout"))
            return
        raise last or GatewayError(
            "MODEL_UNAVAILABLE", f"Model {name!r} has no healthy backend", {"model": name}
        )
    finally:
        queue.dec()


async def stream_events(ctx: Ctx, resp: Response, idle_s: float) -> None:
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


async def complete(
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
        obj = loads(data)
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
        obj = normalise_embeddings(obj, name)
    usage = obj.get("usage")
    if isinstance(usage, dict) and is_int(usage.get("total_tokens")):
        ctx.tokens = usage["total_tokens"]
    out = dumps(obj)
    extra: list[tuple[bytes, bytes]] = []
    if key is not None:
        extra.append((b"x-cache", b"MISS"))
    await ctx.respond(200, out, extra)
    if key is not None:
        await st.cache.put(key, out)


def normalise_embeddings(obj: dict[str, Any], name: str) -> dict[str, Any]:
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


async def search_vectors(st: State, ctx: Ctx, raw: bytes) -> bytes:
    """Relay a vector search to Qdrant (``st.cfg.qdrant``, set); its answer, or the error."""
    q = st.cfg.qdrant
    assert q is not None
    hdrs = [(b"Content-Type", b"application/json"), (b"X-Request-ID", ctx.request_id.encode())]
    if q.api_key:
        hdrs.append((b"api-key", q.api_key.encode()))
    t_up = time.perf_counter()
    try:
        async with asyncio.timeout(q.timeout_s):
            resp = await st.http.post(q.url + ctx.scope["path"], hdrs, raw)
            try:
                data = await resp.read(st.cfg.upstream.max_response_bytes)
            finally:
                resp.release()
            status = resp.status
    except TimeoutError:
        raise GatewayError(
            "TIMEOUT", f"Vector database did not answer within {q.timeout_s:g}s"
        ) from None
    except TooLarge:
        raise backend_errors.too_large_vector() from None
    except UpstreamError as exc:
        reason = "connect" if isinstance(exc, ConnectFailed) else "disconnect"
        raise GatewayError(
            "MODEL_UNAVAILABLE", "Vector database unreachable", {"reason": reason}
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
    return data
