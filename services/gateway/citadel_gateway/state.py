"""What one config builds (clients, limiter, cache, backend pools); a reload builds a new one
and swaps it in whole, keeping what did not change (connections, breaker state)."""

from __future__ import annotations

import asyncio

import aiohttp

from .auth import Authenticator
from .backends import BackendState, Pool
from .cache import ResponseCache
from .config import GatewayConfig, Upstream
from .ratelimit import RateLimiter
from .redisconn import RedisConn
from .upstream import UpstreamClient

# How long the connections of a replaced Redis client stay open after a reload: a command in
# flight is answered within redis.socket_timeout_ms (at most 10 s) or fails anyway.
REDIS_CLOSE_GRACE_S = 10.0


def _http_client(up: Upstream) -> UpstreamClient:
    return UpstreamClient(
        max_connections=up.max_connections,
        connect_timeout_s=up.connect_timeout_s,
        keepalive_s=up.keepalive_s,
        max_header_bytes=up.max_response_header_bytes,
        max_headers=up.max_response_headers,
    )


class State:
    def __init__(
        self,
        cfg: GatewayConfig,
        session: aiohttp.ClientSession,
        previous: State | None = None,
    ):
        self.cfg = cfg
        self.session = session  # aiohttp: the JWKS fetch only (auth.py)
        up = cfg.upstream
        # Two pools of the one HTTP/1.1 client: the model backends (every request), and the
        # rest (Qdrant searches, health probes), so a saturated model pool never starves a
        # health probe into marking healthy backends down, nor searches the models.
        self.upstream: UpstreamClient
        self.http: UpstreamClient
        if previous is not None and previous.cfg.upstream == up:
            self.upstream, self.http = previous.upstream, previous.http
        else:
            self.upstream, self.http = _http_client(up), _http_client(up)
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
            # A changed Redis section (a rotated password): requests in flight on this State
            # finish their commands on the old connections, closed once they are done.
            old = self.redis
            asyncio.get_running_loop().call_later(
                REDIS_CLOSE_GRACE_S, lambda: asyncio.ensure_future(old.close())
            )
        if self.upstream is not new.upstream:
            self.upstream.close()  # idle connections only; requests in flight finish
            self.http.close()
