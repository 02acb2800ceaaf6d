"""Background probes for ``/health`` (never one probe per request) and request statistics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import Any

from .config import HttpProbe, ModelProbe, SimpleProbe, SkippedProbe, TcpProbe
from .state import State
from .upstream import UpstreamClient, UpstreamError

log = logging.getLogger("citadel_gateway.health")


class Stats:
    """Requests per second and mean latency over the last ``window`` seconds."""

    def __init__(self, window: int = 60):
        self.window = window
        self.counts = [0] * window
        self.sums = [0.0] * window
        self.stamps = [0] * window
        self.started = time.monotonic()

    def record(self, latency_s: float) -> None:
        sec = int(time.monotonic())
        i = sec % self.window
        if self.stamps[i] != sec:
            self.stamps[i] = sec
            self.counts[i] = 0
            self.sums[i] = 0.0
        self.counts[i] += 1
        self.sums[i] += latency_s

    def snapshot(self) -> dict[str, float]:
        now = int(time.monotonic())
        count = 0
        total = 0.0
        for i in range(self.window):
            if now - self.stamps[i] < self.window:
                count += self.counts[i]
                total += self.sums[i]
        span = max(1.0, min(float(self.window), time.monotonic() - self.started))
        return {
            "avg_response_time_ms": round(total / count * 1000, 2) if count else 0,
            "requests_per_second": round(count / span, 2),
        }


async def _tcp(host: str, port: int, timeout: float) -> tuple[bool, str | None]:
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
        writer.close()
        return True, None
    except (OSError, TimeoutError) as exc:
        return False, type(exc).__name__


async def _get(
    client: UpstreamClient,
    url: str,
    timeout: float,
    limit: int,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[int, bytes]:
    """(status, body) of a GET, read whole (at most ``limit`` bytes) within ``timeout``."""
    async with asyncio.timeout(timeout):
        resp = await client.get(url, headers)
        try:
            return resp.status, await resp.read(limit)
        finally:
            resp.release()


async def _http(
    client: UpstreamClient,
    url: str,
    timeout: float,
    limit: int,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[bool, str | None, float]:
    t0 = time.perf_counter()
    try:
        status, _ = await _get(client, url, timeout, limit, headers)
        ok = status < 400
        return ok, None if ok else f"HTTP {status}", (time.perf_counter() - t0) * 1000
    except Exception as exc:
        return False, type(exc).__name__, (time.perf_counter() - t0) * 1000


_GPU_UTIL = re.compile(r"^nvidia_gpu_utilization_percentage\{[^}]*\} (\S+)$", re.M)


def gpu_utilization(exposition: str) -> float | None:
    """Mean utilisation over the GPUs of one exporter scrape; ``None`` without GPU readings."""
    values = [float(v) for v in _GPU_UTIL.findall(exposition)]
    return round(sum(values) / len(values), 1) if values else None


async def _gpu_utilization(
    client: UpstreamClient, url: str, timeout: float, limit: int
) -> float | None:
    try:
        status, body = await _get(client, url, timeout, limit)
    except (UpstreamError, TimeoutError, ValueError):
        return None
    if status != 200:
        return None
    try:
        return gpu_utilization(body.decode("utf-8", "replace"))
    except ValueError:
        return None


class Monitor:
    """Probes every backend and every ``health.services`` entry each ``health.interval_s``."""

    def __init__(self) -> None:
        self.services: dict[str, str] = {}
        self.details: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None

    async def probe_once(self, st: State) -> None:
        cfg = st.cfg
        timeout = cfg.upstream.health_timeout_s
        limit = cfg.upstream.max_response_bytes

        async def backend(b: Any) -> None:
            headers = [(b"Authorization", b.auth_header)] if b.auth_header else None
            ok, err, ms = await _http(
                st.http, b.url + cfg.upstream.health_path, timeout, limit, headers
            )
            b.set_health(ok, err, round(ms, 2))
            if b.gpu_metrics_url:
                b.gpu_utilization = await _gpu_utilization(
                    st.http, b.gpu_metrics_url, timeout, limit
                )

        await asyncio.gather(*(backend(b) for b in st.backends.values()))

        async def service(name: str, probe: Any) -> tuple[str, str, Any]:
            if isinstance(probe, ModelProbe):
                pool = st.pools[probe.model]
                return name, pool.status(), [b.describe() for b in pool.backends]
            if isinstance(probe, TcpProbe):
                ok, err = await _tcp(probe.host, probe.port, cfg.health.timeout_s)
                return name, "healthy" if ok else "unhealthy", {"error": err}
            if isinstance(probe, SkippedProbe):
                return name, "skipped", {"reason": probe.reason}
            if isinstance(probe, HttpProbe):
                ok, err, _ = await _http(st.http, probe.url, cfg.health.timeout_s, limit)
                return name, "healthy" if ok else "unhealthy", {"error": err}
            assert isinstance(probe, SimpleProbe)
            if probe.probe == "postgres":
                assert cfg.postgres is not None
                ok, err = await _tcp(cfg.postgres.host, cfg.postgres.port, cfg.health.timeout_s)
            elif probe.probe == "qdrant":
                assert cfg.qdrant is not None
                key = cfg.qdrant.api_key
                headers = [(b"api-key", key.encode())] if key else None
                ok, err, _ = await _http(
                    st.http, cfg.qdrant.url + "/healthz", cfg.health.timeout_s, limit, headers
                )
            else:
                try:
                    async with asyncio.timeout(cfg.health.timeout_s):
                        ok = await st.redis.ping()
                except TimeoutError:
                    ok = False
                err = None if ok else "ping failed"
            return name, "healthy" if ok else "unhealthy", {"error": err}

        results = await asyncio.gather(*(service(n, p) for n, p in cfg.health.services.items()))
        self.services = {name: status for name, status, _ in results}
        self.details = {name: detail for name, _, detail in results}

    def overall(self) -> str:
        """Over the services that run: a skipped one (not deployed) is neither up nor down."""
        values = [v for v in self.services.values() if v != "skipped"]
        if not values or all(v == "healthy" for v in values):
            return "healthy"
        if all(v == "unhealthy" for v in values):
            return "unhealthy"
        return "degraded"

    def start(self, get_state: Any) -> None:
        async def loop() -> None:
            while True:
                st = get_state()
                await asyncio.sleep(st.cfg.health.interval_s)
                try:
                    await self.probe_once(get_state())
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("health probe round failed")

        self._task = asyncio.get_running_loop().create_task(loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
