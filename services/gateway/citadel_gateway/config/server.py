"""The gateway's own serving: where it listens and what it reads of a request (``listen``),
browser origins (``cors``), who may read /metrics (``metrics``), ``health`` and ``logging``."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator

from ._base import _address_in, _cidr_list, _http_url, _Strict


class Listen(_Strict):
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    # serve on this unix socket instead of host:port: for a front server on the same host
    # (nginx: timeouts, header limits and connection caps; docs/gateway-front.md)
    unix_socket: str | None = None
    workers: int = Field(1, ge=1, le=64)
    # a stop (restart, upgrade) lets the requests in flight finish for this long, then cancels
    # them; the unit's TimeoutStopSec must be longer
    drain_s: int = Field(30, ge=1, le=3600)
    # request bodies are read only once the request is admitted (token, rate limit): at most
    # max_body_bytes each, at most max_buffered_bytes over all requests in flight (then 503)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_buffered_bytes: int = Field(128 * 1024 * 1024, ge=65536)
    body_timeout_s: float = Field(30.0, gt=0, le=3600)  # the whole body, once admitted
    # peers whose X-Real-IP names the real client (the TLS edge on this host): per-IP limits and
    # the access log use that address; /metrics' allow-list always uses the peer itself
    trusted_proxies: list[str] = []

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        return _cidr_list(v)

    def trusts(self, peer: str | None) -> bool:
        return _address_in(peer, self.trusted_proxies)


class Cors(_Strict):
    """Browser origins (``scheme://host[:port]``) allowed to call the API (cors.py)."""

    allowed_origins: list[str] = []

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        for origin in v:
            if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", origin):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], no path)")
        return v


class Metrics(_Strict):
    allow: list[str] = ["127.0.0.1/32", "::1/128"]
    multiproc_dir: str | None = None

    @field_validator("allow")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        return _cidr_list(v)

    def allows(self, host: str | None) -> bool:
        return _address_in(host, self.allow)


class ModelProbe(_Strict):
    probe: Literal["model"]
    model: str


class SimpleProbe(_Strict):
    probe: Literal["qdrant", "postgres", "redis"]


class TcpProbe(_Strict):
    probe: Literal["tcp"]
    host: str
    port: int = Field(ge=1, le=65535)


class HttpProbe(_Strict):
    probe: Literal["http"]
    url: str

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http_url(v)


class SkippedProbe(_Strict):
    """A service the inventory has but the deploy could not install (e.g. an artifact that
    cannot be had): /health says ``skipped`` and the reason, and it does not count as down."""

    probe: Literal["skipped"]
    reason: str = Field(min_length=1)


Probe = Annotated[
    ModelProbe | SimpleProbe | TcpProbe | HttpProbe | SkippedProbe, Field(discriminator="probe")
]


class Health(_Strict):
    interval_s: float = Field(5.0, gt=0)
    timeout_s: float = Field(2.0, gt=0)
    services: dict[str, Probe] = {}


class Logging(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
