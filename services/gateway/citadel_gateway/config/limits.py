"""How much each subject may ask (``rate_limits``) and what is kept for reuse (``cache``)."""

from __future__ import annotations

from pydantic import Field

from ._base import _Strict


class Limit(_Strict):
    per_minute: int = Field(ge=1, le=1_000_000)
    burst: int = Field(ge=1, le=1_000_000)


class RateLimits(_Strict):
    enabled: bool = True
    # send a model request's rate-limit check and the request itself at once when the
    # subject's last decision left room (ratelimit.RateLimiter.start); false: always wait
    overlap_upstream: bool = True
    chat_completions: Limit = Limit(per_minute=60, burst=10)
    completions: Limit = Limit(per_minute=60, burst=10)
    embeddings: Limit = Limit(per_minute=120, burst=20)
    collection_search: Limit = Limit(per_minute=300, burst=50)
    health: Limit = Limit(per_minute=600, burst=100)


class Cache(_Strict):
    enabled: bool = True
    ttl_s: int = Field(3600, ge=1)
    max_entry_bytes: int = Field(1_048_576, ge=1)
