"""OpenAPI 3 description of the gateway's routes (served at ``/openapi.json``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from . import __version__

_ERR = {"$ref": "#/components/schemas/Error"}


def _errors(*codes: int) -> dict[str, Any]:
    names = {
        400: "INVALID_PARAMS",
        401: "INVALID_AUTH",
        403: "INSUFFICIENT_PERMS",
        404: "NOT_FOUND",
        429: "RATE_LIMITED",
        500: "INTERNAL_ERROR",
        503: "MODEL_UNAVAILABLE",
        504: "TIMEOUT",
    }
    return {
        str(c): {"description": names[c], "content": {"application/json": {"schema": _ERR}}}
        for c in codes
    }


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def build(models: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``models`` maps served model name -> kind; used for the ``model`` enums."""
    models = models or {}

    def model_field(kind: str) -> dict[str, Any]:
        names = [n for n, k in models.items() if k == kind]
        return {"type": "string", "enum": names} if names else {"type": "string"}

    common = {
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 4000},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "stream": {"type": "boolean"},
        "stop": {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "maxItems": 4},
            ]
        },
    }
    chat_req = {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": model_field("chat"),
            "messages": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["role", "content"],
                    "properties": {
                        "role": {"type": "string", "enum": ["system", "user", "assistant"]},
                        "content": {"type": "string"},
                    },
                },
            },
            **common,
        },
    }
    comp_req = {
        "type": "object",
        "required": ["model", "prompt"],
        "properties": {
            "model": model_field("completions"),
            "prompt": {"type": "string"},
            "suffix": {"type": "string"},
            **common,
        },
    }
    emb_req = {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": model_field("embeddings"),
            "input": {
                "oneOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "string"}, "minItems": 1},
                ]
            },
        },
    }
    emb_resp = {
        "type": "object",
        "required": ["object", "data", "model", "usage"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["object", "embedding", "index"],
                    "properties": {
                        "object": {"type": "string"},
                        "embedding": {"type": "array", "items": {"type": "number"}},
                        "index": {"type": "integer"},
                    },
                },
            },
            "model": {"type": "string"},
            "usage": {"type": "object"},
        },
    }
    openai_ok = {"type": "object", "required": ["choices"]}
    proxy_errors = _errors(400, 401, 403, 429, 500, 503, 504)
    emb_op = {
        "summary": "Embeddings (OpenAI shape)",
        "requestBody": {"required": True, **_json(emb_req)},
        "responses": {"200": {"description": "embeddings", **_json(emb_resp)}, **proxy_errors},
    }
    health = {
        "type": "object",
        "required": ["status", "timestamp", "services", "performance"],
        "properties": {
            "status": {"type": "string", "enum": ["healthy", "degraded", "unhealthy"]},
            "timestamp": {"type": "string"},
            "services": {"type": "object", "additionalProperties": {"type": "string"}},
            "performance": {
                "type": "object",
                "properties": {
                    "avg_response_time_ms": {"type": "number"},
                    "requests_per_second": {"type": "number"},
                },
            },
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "citadel gateway", "version": __version__},
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["type", "message", "code", "details", "request_id"],
                            "properties": {
                                "type": {"type": "string"},
                                "message": {"type": "string"},
                                "code": {"type": "string"},
                                "details": {"type": "object"},
                                "request_id": {"type": "string"},
                            },
                        }
                    },
                }
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/chat/completions": {
                "post": {
                    "summary": "Chat completions (stream: true -> text/event-stream)",
                    "requestBody": {"required": True, **_json(chat_req)},
                    "responses": {
                        "200": {"description": "completion", **_json(openai_ok)},
                        **proxy_errors,
                    },
                }
            },
            "/v1/completions": {
                "post": {
                    "summary": "Text completions",
                    "requestBody": {"required": True, **_json(comp_req)},
                    "responses": {
                        "200": {"description": "completion", **_json(openai_ok)},
                        **proxy_errors,
                    },
                }
            },
            "/v1/embeddings": {"post": emb_op},
            "/api/embeddings": {"post": emb_op},
            "/v1/models": {
                "get": {
                    "summary": "Served models",
                    "responses": {
                        "200": {"description": "models", **_json({"type": "object"})},
                        **_errors(401),
                    },
                }
            },
            "/collections/{name}/points/search": {
                "post": {
                    "summary": "Qdrant vector search (api-key added by the gateway)",
                    "parameters": [
                        {
                            "name": "name",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        **_json(
                            {
                                "type": "object",
                                "required": ["vector"],
                                "properties": {
                                    "vector": {"type": "array", "items": {"type": "number"}},
                                    "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                                    "with_payload": {"type": "boolean"},
                                    "filter": {"type": "object"},
                                },
                            }
                        ),
                    },
                    "responses": {
                        "200": {"description": "hits", **_json({"type": "object"})},
                        **proxy_errors,
                    },
                }
            },
            "/health": {
                "get": {
                    "summary": "Health (no token; detailed=true needs one with health:detailed)",
                    "security": [{}, {"bearer": []}],
                    "parameters": [
                        {
                            "name": "detailed",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "boolean"},
                        }
                    ],
                    "responses": {
                        "200": {"description": "health", **_json(health)},
                        **_errors(401, 429),
                    },
                }
            },
            "/api/v1/status": {
                "get": {
                    "summary": "Gateway status",
                    "responses": {
                        "200": {"description": "status", **_json({"type": "object"})},
                        **_errors(401),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (allow-listed client addresses only)",
                    "security": [{}],
                    "responses": {
                        "200": {
                            "description": "metrics",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **_errors(403),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {
                        "200": {"description": "schema", **_json({"type": "object"})},
                        **_errors(401),
                    },
                }
            },
        },
    }


def schema_bytes(models: Mapping[str, str] | None = None) -> bytes:
    return json.dumps(build(models), separators=(",", ":")).encode()
