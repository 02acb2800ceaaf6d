"""The model backends and the stores the gateway calls: models and their backends, how it calls
them (``upstream``), Qdrant, PostgreSQL (probed only) and Redis."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, field_validator

from ._base import _http_url, _Strict


class Backend(_Strict):
    url: str
    api_key_file: str | None = None
    # the backend host's GPU exporter: read with the health probes for `gpu_utilization`
    gpu_metrics_url: str | None = None
    _api_key: str | None = PrivateAttr(default=None)

    @field_validator("url", "gpu_metrics_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else _http_url(v)

    @property
    def api_key(self) -> str | None:
        return self._api_key


def _backend_from_str(v: Any) -> Any:
    return {"url": v} if isinstance(v, str) else v


# a model's deadline for one request (all its retries); citadel's gateway.backend_timeout_s
ModelTimeoutS = Annotated[float, Field(gt=0, le=3600)]


class Model(_Strict):
    kind: Literal["chat", "completions", "embeddings"]
    backends: list[Annotated[Backend, Field()]] = Field(min_length=1)
    timeout_s: ModelTimeoutS = 120.0
    upstream_model: str | None = None
    # The engine completes with a `suffix` (fill-in-the-middle). Llama 3 does not, and vLLM
    # refuses any non-null suffix for such a model: an empty one is dropped, another refused.
    fill_in_middle: bool = False

    @field_validator("backends", mode="before")
    @classmethod
    def _strings(cls, v: Any) -> Any:
        return [_backend_from_str(x) for x in v] if isinstance(v, list) else v


class Upstream(_Strict):
    connect_timeout_s: float = Field(2.0, gt=0, le=60)
    retries: int = Field(1, ge=0, le=10)
    max_connections: int = Field(1000, ge=1)
    # idle upstream connections are dropped after this; below the 5 s uvicorn-based backends
    # (vLLM, llama.cpp's server) keep theirs, so a reused connection is rarely a closed one
    keepalive_s: float = Field(4.0, gt=0, le=300)
    health_timeout_s: float = Field(2.0, gt=0)
    health_path: str = "/models"
    breaker_failures: int = Field(3, ge=1)
    breaker_open_s: float = Field(10.0, gt=0)
    # what a backend may send: more is a broken backend (503 MODEL_UNAVAILABLE). A body read
    # whole (not `stream: true`, which is relayed as it comes) is parsed in memory.
    max_response_bytes: int = Field(16 * 1024 * 1024, ge=65536)
    max_response_header_bytes: int = Field(65536, ge=4096, le=16 * 1024 * 1024)
    max_response_headers: int = Field(100, ge=16, le=10_000)


class Qdrant(_Strict):
    url: str
    api_key_file: str | None = None
    timeout_s: float = Field(10.0, gt=0)
    _api_key: str | None = PrivateAttr(default=None)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http_url(v)

    @property
    def api_key(self) -> str | None:
        return self._api_key


class Postgres(_Strict):
    host: str
    port: int = Field(5432, ge=1, le=65535)


class Redis(_Strict):
    url: str = "redis://127.0.0.1:6379/0"
    password_file: str | None = None
    socket_timeout_ms: int = Field(200, ge=10, le=10_000)
    failure_mode: Literal["open", "closed"] = "open"
    retry_after_failure_s: float = Field(1.0, ge=0)
    _password: str | None = PrivateAttr(default=None)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if urlsplit(v).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return v

    @property
    def password(self) -> str | None:
        return self._password
