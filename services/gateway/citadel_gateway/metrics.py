"""Prometheus metrics with the API document's names.

With ``listen.workers > 1`` the runner sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker
imports prometheus_client, and ``/metrics`` aggregates all workers (multiprocess mode).
``cache_hit_ratio`` is computed at scrape time from the summed hit/miss counters, so it is
correct across workers too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

INFERENCE = Histogram(
    "ai_inference_duration_seconds",
    "Model inference time seen by the gateway (upstream request to last byte)",
    ["model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
QUEUE = Gauge(
    "ai_queue_size",
    "Requests in flight per model (waiting for or being served by a backend)",
    ["model"],
    multiprocess_mode="livesum",
)
VECTOR_SEARCH = Histogram(
    "vector_search_duration_seconds",
    "Vector database (Qdrant) search time",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests served by the gateway", ["route", "method", "code"]
)
CACHE_REQUESTS = Counter("cache_requests_total", "Response cache lookups", ["result"])
UPSTREAM_UP = Gauge(
    "gateway_upstream_up",
    "1 when the backend passes health checks and its breaker is not open",
    ["model", "backend"],
    multiprocess_mode="livemin",
)
OVERHEAD = Histogram(
    "gateway_overhead_seconds",
    "Time spent in the gateway itself (total minus upstream time)",
    ["route"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1),
)
REDIS_ERRORS = Counter("gateway_redis_errors_total", "Redis operations that failed", ["op"])
ACCESS_LOG_DROPPED = Counter(
    "gateway_access_log_dropped_total",
    "Access log lines dropped because stdout fell too far behind",
)
RATELIMIT_OVERLAPPED = Counter(
    "gateway_ratelimit_overlapped_total",
    "Model requests whose rate-limit check went to Redis together with the request itself",
)
FORWARDED = Counter(
    "gateway_forwarded_user_total",
    "Requests with a forwarder's credential (result user, service: no user header; invalid: "
    "400; refused: 401, not from its addresses) or its user header without it (ignored)",
    ["forwarder", "result"],
)
RATELIMIT_BYPASS = Counter(
    "gateway_ratelimit_failopen_total", "Requests let through because Redis was unavailable"
)


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class _View:
    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def render() -> bytes:
    source: Any
    if multiprocess():
        from prometheus_client import multiprocess as mp

        source = CollectorRegistry()
        mp.MultiProcessCollector(source)
    else:
        source = REGISTRY
    families = list(source.collect())
    hits = misses = 0.0
    for fam in families:
        if fam.name == "cache_requests":
            for s in fam.samples:
                if s.name == "cache_requests_total":
                    if s.labels.get("result") == "hit":
                        hits += s.value
                    elif s.labels.get("result") == "miss":
                        misses += s.value
    ratio = GaugeMetricFamily(
        "cache_hit_ratio", "Response cache hits / lookups (0 before the first lookup)"
    )
    ratio.add_metric([], hits / (hits + misses) if hits + misses else 0.0)
    families.append(ratio)
    return generate_latest(_View(families))


_children: dict[tuple[Any, ...], Any] = {}


def child(metric: Any, *labelvalues: str) -> Any:
    """``metric.labels(*labelvalues)``, memoised: ``labels()`` takes a lock and builds a tuple
    on every call; the request path asks for the same few children all the time."""
    key = (metric, *labelvalues)
    found = _children.get(key)
    if found is None:
        if len(_children) >= 10_000:  # bounded: label values include the client's method
            _children.clear()
        found = _children[key] = metric.labels(*labelvalues)
    return found
