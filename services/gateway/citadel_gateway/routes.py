"""Which handler serves a method and path, and what it asks of the caller (``Policy``)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from . import handlers
from .admission import Policy
from .asgi import Ctx
from .errors import GatewayError
from .lifecycle import Runtime

Handler = Callable[[Runtime, Ctx], Awaitable[None]]

OPENAI_PREFIX = "/v1"
SEARCH = "/collections/{name}/points/search"
_COLLECTION = re.compile(r"^/collections/([A-Za-z0-9_\-]{1,255})/points/search$")
AUTHENTICATED = Policy()  # a token, no rate limit


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    handler: Handler
    policy: Policy = AUTHENTICATED


def _model_route(name: str, handler: Handler, bucket: str) -> Route:
    return Route(name, handler, Policy(limit=bucket, proxy=True))


class Routes:
    def __init__(self) -> None:
        self.table: dict[tuple[str, str], Route] = {
            ("POST", "/v1/chat/completions"): _model_route(
                "/v1/chat/completions", handlers.chat, "chat_completions"
            ),
            ("POST", "/v1/completions"): _model_route(
                "/v1/completions", handlers.completions, "completions"
            ),
            ("POST", "/v1/embeddings"): _model_route(
                "/v1/embeddings", handlers.embeddings, "embeddings"
            ),
            ("POST", "/api/embeddings"): _model_route(
                "/api/embeddings", handlers.embeddings, "embeddings"
            ),
            ("GET", "/v1/models"): Route("/v1/models", handlers.models),
            ("GET", "/health"): Route(
                "/health", handlers.health, Policy(auth=False, limit="health")
            ),
            ("GET", "/api/v1/status"): Route("/api/v1/status", handlers.status),
            ("GET", "/metrics"): Route("/metrics", handlers.prometheus, Policy(auth=False)),
            ("GET", "/openapi.json"): Route("/openapi.json", handlers.openapi_schema),
        }
        self.search = _model_route(SEARCH, handlers.search, "collection_search")
        # OpenAI's clients join their base URL and "/chat/completions": the document's Python SDK
        # sets base_url without "/v1". Each /v1/ route answers there too (same route, not a copy).
        for (method, path), route in list(self.table.items()):
            if path.startswith(OPENAI_PREFIX + "/"):
                self.table[(method, path[len(OPENAI_PREFIX) :])] = route
        self.paths = {p for _, p in self.table}

    def resolve(self, ctx: Ctx, method: str, path: str) -> Route:
        """The route, or the 404/405 to answer (``ctx.route`` names a known path's route)."""
        route = self.table.get((method, path))
        if route is not None:
            return route
        if _COLLECTION.match(path) and method == "POST":
            return self.search
        if path in self.paths or path.startswith("/collections/"):
            ctx.route = path if path in self.paths else SEARCH
            raise GatewayError("METHOD_NOT_ALLOWED", f"Method {method} not allowed")
        raise GatewayError("NOT_FOUND", "No such route")
