"""Backends: least-outstanding-requests balancing, active health, circuit breaker.

Each backend URL has one :class:`BackendState` (shared by every model it serves).
A backend is *available* when its active health check passes and its breaker lets traffic in:

* closed    -> all traffic; ``breaker_failures`` consecutive failures open it;
* open      -> no traffic for ``breaker_open_s`` seconds, then
* half-open -> exactly one request (the probe) goes through; success closes the breaker,
               failure opens it again for another ``breaker_open_s``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from . import metrics
from .config import Upstream

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(eq=False)
class BackendState:
    url: str
    api_key: str | None
    cfg: Upstream
    gpu_metrics_url: str | None = None
    gpu_utilization: float | None = None  # mean over the host's GPUs, from its exporter
    models: set[str] = field(default_factory=set)
    outstanding: int = 0
    healthy: bool = True
    health_failures: int = 0
    last_error: str | None = None
    last_latency_ms: float | None = None
    breaker: str = CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probe_in_flight: bool = False
    auth_header: bytes | None = field(init=False, repr=False)  # sent on every request

    def __post_init__(self) -> None:
        self.auth_header = f"Bearer {self.api_key}".encode() if self.api_key else None

    def available(self, now: float) -> bool:
        if not self.healthy:
            return False
        if self.breaker == CLOSED:
            return True
        if self.breaker == OPEN:
            return now - self.opened_at >= self.cfg.breaker_open_s
        return not self.probe_in_flight  # half-open

    def acquire(self, now: float) -> None:
        if self.breaker == OPEN:
            self.breaker = HALF_OPEN
        if self.breaker == HALF_OPEN:
            self.probe_in_flight = True
        self.outstanding += 1

    def release(self, ok: bool, error: str | None = None) -> None:
        self.outstanding -= 1
        if ok:
            self.failures = 0
            if self.breaker != CLOSED:
                self.breaker = CLOSED
                self.probe_in_flight = False
                self._publish()
            return
        self.last_error = error
        self.failures += 1
        if self.breaker == HALF_OPEN or self.failures >= self.cfg.breaker_failures:
            self.breaker = OPEN
            self.opened_at = time.monotonic()
            self.probe_in_flight = False
            self._publish()

    def release_neutral(self) -> None:
        """Request ended without telling us anything about the backend (client went away)."""
        self.outstanding -= 1
        if self.breaker == HALF_OPEN:
            self.probe_in_flight = False

    def set_health(
        self, ok: bool, error: str | None = None, latency_ms: float | None = None
    ) -> None:
        if ok:
            self.health_failures = 0
            self.healthy = True
            self.last_latency_ms = latency_ms
        else:
            self.health_failures += 1
            self.last_error = error
            if self.health_failures >= 2:
                self.healthy = False
        self._publish()

    @property
    def up(self) -> bool:
        return self.healthy and self.breaker != OPEN

    def _publish(self) -> None:
        for model in self.models:
            metrics.UPSTREAM_UP.labels(model=model, backend=self.url).set(1 if self.up else 0)

    def describe(self) -> dict[str, object]:
        return {
            "url": self.url,
            "healthy": self.healthy,
            "breaker": self.breaker,
            "outstanding": self.outstanding,
            "last_error": self.last_error,
            "last_latency_ms": self.last_latency_ms,
        }


class Pool:
    """The backends serving one model."""

    def __init__(self, name: str, backends: list[BackendState]):
        self.name = name
        self.backends = backends
        self._rr = 0

    def pick(self, exclude: set[BackendState]) -> BackendState | None:
        now = time.monotonic()
        n = len(self.backends)
        self._rr = (self._rr + 1) % n
        best: BackendState | None = None
        for i in range(n):
            b = self.backends[(self._rr + i) % n]
            if b in exclude or not b.available(now):
                continue
            if best is None or b.outstanding < best.outstanding:
                best = b
        if best is not None:
            best.acquire(now)
        return best

    def status(self) -> str:
        up = sum(1 for b in self.backends if b.up)
        if up == len(self.backends):
            return "healthy"
        return "degraded" if up else "unhealthy"
