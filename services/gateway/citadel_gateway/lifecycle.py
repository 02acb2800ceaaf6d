"""The running gateway: its config and what it built from it, the health monitor and counters;
started and stopped by ASGI lifespan, reloaded on SIGHUP (the last good config stays)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time

import aiohttp

from . import body as request_body
from . import logs
from .asgi import Receive, Send
from .config import ConfigError, GatewayConfig, load_config
from .health import Monitor, Stats
from .state import State

log = logging.getLogger("citadel_gateway")

GC_GEN0_THRESHOLD = 20_000


class Runtime:
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

    @property
    def state(self) -> State:
        assert self._state is not None, "gateway not started"
        return self._state

    def cfg_now(self) -> GatewayConfig:
        """The running config (the last good one after a reload), or the initial one."""
        return self._state.cfg if self._state is not None else self.initial_cfg

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
            self._state.http.close()
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
