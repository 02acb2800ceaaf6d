"""A small fake OpenAI / Qdrant / JWKS server for the gateway tests (loopback only).

    python fakebackend.py PORT JWKS_FILE

Behaviour is chosen by the request's model name:
  *slow*    -> sleeps 3 s before answering
  *fail*    -> HTTP 500
  stream    -> ``x_chunks`` SSE chunks (default 5), ``x_delay`` seconds apart (default 0.01)
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from aiohttp import web

STATE: dict[str, object] = {
    "jwks_fetches": 0,
    "chat_calls": 0,
    "aborted_streams": 0,
    "last_auth": None,
    "last_api_key": None,
    "last_request_id": None,
    "last_citadel_request_id": None,
    "last_body": None,
}


def _usage(n: int = 5) -> dict[str, int]:
    return {"prompt_tokens": n, "completion_tokens": 7, "total_tokens": n + 7}


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    STATE["chat_calls"] = int(STATE["chat_calls"]) + 1  # type: ignore[call-overload]
    STATE["last_auth"] = request.headers.get("Authorization")
    STATE["last_request_id"] = request.headers.get("X-Request-ID")
    STATE["last_citadel_request_id"] = request.headers.get("X-Citadel-Request-ID")
    STATE["last_body"] = body
    model = body.get("model", "")
    if "slow" in model:
        await asyncio.sleep(3)
    if "fail" in model:
        return web.json_response({"error": {"message": "boom"}}, status=500)
    if body.get("stream"):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        n = int(body.get("x_chunks", 5))
        delay = float(body.get("x_delay", 0.01))
        try:
            for i in range(n):
                chunk = {
                    "id": "chatcmpl-1",
                    "object": "chat.completion.chunk",
                    "model": model,
                    "choices": [{"index": 0, "delta": {"content": f"tok{i} "}}],
                }
                await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
                await asyncio.sleep(delay)
            await resp.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, asyncio.CancelledError, RuntimeError):
            STATE["aborted_streams"] = int(STATE["aborted_streams"]) + 1  # type: ignore[call-overload]
            raise
        return resp
    content = " ".join(m.get("content", "") for m in body.get("messages", []))
    return web.json_response(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"echo: {content}"},
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(),
        }
    )


async def completions(request: web.Request) -> web.Response:
    body = await request.json()
    STATE["last_auth"] = request.headers.get("Authorization")
    STATE["last_body"] = body
    if "slow" in body.get("model", ""):
        await asyncio.sleep(3)
    text = (
        f"completion of {body.get('prompt')!r} "
        f"stop={body.get('stop')!r} suffix={body.get('suffix')!r}"
    )
    return web.json_response(
        {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"text": text, "index": 0, "finish_reason": "stop"}],
            "usage": _usage(),
        }
    )


async def embeddings(request: web.Request) -> web.Response:
    body = await request.json()
    inp = body.get("input")
    items = [inp] if isinstance(inp, str) else inp
    data = [
        {"object": "embedding", "embedding": [0.1 * (i + 1), -0.2, 0.3], "index": i}
        for i in range(len(items))
    ]
    return web.json_response(
        {
            "object": "list",
            "data": data,
            "model": body.get("model"),
            "usage": {"prompt_tokens": 4, "total_tokens": 4},
        }
    )


async def search(request: web.Request) -> web.Response:
    STATE["last_api_key"] = request.headers.get("api-key")
    body = await request.json()
    if request.match_info["name"] == "missing":
        return web.json_response({"status": {"error": "Collection not found"}}, status=404)
    hits = [{"id": 1, "score": 0.99, "payload": {"text": "Sample document"}}]
    return web.json_response(
        {"result": hits[: body.get("limit", 10)], "status": "ok", "time": 0.001}
    )


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="healthz check passed")


async def jwks(request: web.Request) -> web.Response:
    STATE["jwks_fetches"] = int(STATE["jwks_fetches"]) + 1  # type: ignore[call-overload]
    with open(request.app["jwks_file"], encoding="utf-8") as fh:
        return web.Response(text=fh.read(), content_type="application/json")


async def gpu_metrics(request: web.Request) -> web.Response:
    """What citadel-gpu-exporter serves on a host with two busy GPUs."""
    labels = 'gpu="{i}",name="NVIDIA H100 80GB HBM3",uuid="GPU-{i}"'
    lines = ["nvidia_gpu_up 1.0", "nvidia_gpu_count 2.0"] + [
        f"nvidia_gpu_utilization_percentage{{{labels.format(i=i)}}} {value}"
        for i, value in ((0, 42.0), (1, 58.0))
    ]
    return web.Response(text="\n".join(lines) + "\n")


async def state(request: web.Request) -> web.Response:
    return web.json_response(STATE)


def main() -> None:
    port, jwks_file = int(sys.argv[1]), sys.argv[2]
    app = web.Application()
    app["jwks_file"] = jwks_file
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/collections/{name}/points/search", search)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/jwks.json", jwks)
    app.router.add_get("/_state", state)
    app.router.add_get("/gpu/metrics", gpu_metrics)
    web.run_app(app, host="127.0.0.1", port=port, print=None, handler_cancellation=True)


if __name__ == "__main__":
    main()
