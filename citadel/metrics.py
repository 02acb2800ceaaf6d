"""Every metric name citadel's rules and dashboards may use, by the source that emits it.

One place: the recording/alert rules (templates/prometheus) and the Grafana dashboards
(citadel.components.grafana) are tested against this registry, so a panel over a metric that no
exporter emits fails a unit test instead of showing "No data" in production.

Sources are the scrape jobs of citadel.components.prometheus (a job = a component) plus the
series Prometheus makes itself (`up`, ...) and the outputs of our recording rules.
"""

from __future__ import annotations

import re

# The API document's "Custom Metrics" (Monitoring APIs section).
DOCUMENT_METRICS = (
    "ai_inference_duration_seconds",
    "ai_queue_size",
    "ai_model_memory_usage_bytes",
    "vector_search_duration_seconds",
    "cache_hit_ratio",
)

# The document's three example queries (curl .../api/v1/query?query=...).
DOCUMENT_QUERIES = (
    "ai_inference_duration_seconds",
    "nvidia_gpu_utilization_percentage",
    "rate(http_requests_total[5m])",
)

# Histograms: the name stands for its _bucket/_sum/_count series.
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

EMITTED: dict[str, frozenset[str]] = {
    # Prometheus itself: synthetic per-target series and its own /metrics.
    "prometheus": frozenset(
        {
            "up",
            "ALERTS",
            "scrape_duration_seconds",
            "scrape_samples_scraped",
            "prometheus_config_last_reload_successful",
            "prometheus_rule_evaluation_failures_total",
            "prometheus_tsdb_head_series",
            "prometheus_notifications_dropped_total",
        }
    ),
    # prometheus-node-exporter (Debian), every host.
    "node_exporter": frozenset(
        {
            "node_cpu_seconds_total",
            # the textfile collector: the backups' freshness (kind: postgres_base, redis_rdb,
            # qdrant_snapshot; citadel.model.backup)
            "citadel_backup_last_success_timestamp_seconds",
            "node_load1",
            "node_memory_MemAvailable_bytes",
            "node_memory_MemTotal_bytes",
            "node_filesystem_avail_bytes",
            "node_filesystem_size_bytes",
            "node_filesystem_readonly",
            "node_network_receive_bytes_total",
            "node_network_transmit_bytes_total",
            "node_network_receive_errs_total",
            "node_network_transmit_errs_total",
            "node_network_receive_drop_total",
            "node_netstat_Tcp_RetransSegs",
            "node_netstat_Tcp_OutSegs",
            "node_boot_time_seconds",
            "node_time_seconds",
        }
    ),
    # services/gpu_exporter (NVML), GPU hosts.
    "gpu_exporter": frozenset(
        {
            "nvidia_gpu_up",
            "nvidia_gpu_count",
            "nvidia_gpu_driver_info",
            "nvidia_gpu_utilization_percentage",
            "nvidia_gpu_memory_used_bytes",
            "nvidia_gpu_memory_total_bytes",
            "nvidia_gpu_temperature_celsius",
            "nvidia_gpu_power_watts",
            "ai_model_memory_usage_bytes",
        }
    ),
    # services/gateway (prometheus_client), the gateway host.
    "gateway": frozenset(
        {
            "ai_inference_duration_seconds",  # histogram, label model
            "ai_queue_size",  # gauge, label model
            "vector_search_duration_seconds",  # histogram
            "http_requests_total",  # counter, labels route, method, code
            "cache_requests_total",  # counter, label result (hit|miss)
            "cache_hit_ratio",  # gauge
            "gateway_upstream_up",  # gauge, labels model, backend
            "gateway_overhead_seconds",  # histogram, label route
            "gateway_redis_errors_total",
            "gateway_ratelimit_failopen_total",
            "gateway_access_log_dropped_total",
            "gateway_ratelimit_overlapped_total",
        }
    ),
    # vLLM's OpenAI server /metrics (engine vllm only; llama.cpp's python server and Ollama
    # serve no /metrics and are not scraped).
    "model": frozenset(
        {
            "vllm:num_requests_running",
            "vllm:num_requests_waiting",
            "vllm:e2e_request_latency_seconds",  # histogram, label model_name
            "vllm:time_to_first_token_seconds",  # histogram
            "vllm:prompt_tokens_total",
            "vllm:generation_tokens_total",
        }
    ),
    # Qdrant's /metrics (api key required).
    "qdrant": frozenset(
        {
            "app_info",
            "collections_total",
            "rest_responses_total",
            "rest_responses_fail_total",
            "rest_responses_duration_seconds",
        }
    ),
    "postgres_exporter": frozenset(
        {
            "pg_up",
            "pg_stat_database_numbackends",
            "pg_stat_database_xact_commit",
            "pg_stat_database_xact_rollback",
            "pg_database_size_bytes",
        }
    ),
    "redis_exporter": frozenset(
        {
            "redis_up",
            "redis_connected_clients",
            "redis_memory_used_bytes",
            "redis_keyspace_hits_total",
            "redis_keyspace_misses_total",
            "redis_commands_processed_total",
        }
    ),
}

HISTOGRAMS = frozenset(
    {
        "ai_inference_duration_seconds",
        "vector_search_duration_seconds",
        "gateway_overhead_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:time_to_first_token_seconds",
        "rest_responses_duration_seconds",
    }
)

# Outputs of templates/prometheus/citadel-recording.yml.j2 (a unit test keeps the two in step).
RECORDED = frozenset(
    {
        "ai_inference_duration_seconds",
        "vector_search_duration_seconds",
        "ai_queue_size",
        "cache_hit_ratio",
        "instance:node_cpu_utilisation:ratio",
        "instance:node_memory_utilisation:ratio",
        "route:http_requests:rate5m",
        "route:http_errors:ratio_rate5m",
    }
)


def known_metrics() -> frozenset[str]:
    """Every series name a query may select: emitted names, histogram series, recorded names."""
    names: set[str] = set(RECORDED)
    for emitted in EMITTED.values():
        names |= emitted
    for hist in HISTOGRAMS:
        names |= {hist + suffix for suffix in _HISTOGRAM_SUFFIXES}
    return frozenset(names)


def sources_of(metric: str) -> list[str]:
    """Which sources emit a series name (histogram suffixes resolve to the histogram)."""
    base = metric
    for suffix in _HISTOGRAM_SUFFIXES:
        if metric.endswith(suffix) and metric[: -len(suffix)] in HISTOGRAMS:
            base = metric[: -len(suffix)]
    found = [src for src, names in EMITTED.items() if base in names]
    if metric in RECORDED:
        found.append("recording rule")
    return found


# -- metric names in a PromQL expression ---------------------------------------------------------
# PromQL's words that are not metric names (functions, aggregations, keywords, set operators).
_NOT_METRICS = frozenset(
    """
    abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes clamp
    clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year days_in_month
    deg delta deriv exp floor histogram_avg histogram_count histogram_fraction histogram_quantile
    histogram_stddev histogram_stdvar histogram_sum holt_winters hour idelta increase irate
    label_join label_replace last_over_time ln log10 log2 mad_over_time max_over_time min_over_time
    minute month pi predict_linear present_over_time quantile_over_time rad rate resets round
    scalar sgn sin sinh sort sort_desc sort_by_label sort_by_label_desc sqrt stddev_over_time
    stdvar_over_time sum_over_time tan tanh time timestamp vector year
    sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk
    limit_ratio by without on ignoring group_left group_right bool and or unless offset atan2 inf
    nan
    """.split()
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_WORD = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER_WORD = re.compile(r"(?<![\w:])\d[\w.]*")
_GRAFANA_VARIABLE = re.compile(r"\$\{?[A-Za-z_]\w*(?::\w+)?\}?|\[\[\w+\]\]")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects.

    Syntax is promtool's job (the tests run it on every expression); this only finds names:
    strings, label matchers, ranges and grouping clauses are removed, then every remaining word
    that is not a PromQL function or keyword (and is not followed by "(") is a metric name.
    `{__name__="x"}` selectors are not used here and not recognised.
    """
    text = _GRAFANA_VARIABLE.sub("1m", expr)
    text = _STRING.sub('""', text)
    text = _BRACES.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _NUMBER_WORD.sub(" ", text)
    names = set()
    for match in _WORD.finditer(text):
        word = match.group(0)
        rest = text[match.end() :].lstrip()
        if rest.startswith("("):
            continue  # a function call or aggregation
        if word.lower() in _NOT_METRICS:
            continue
        names.add(word)
    return names


def unknown_metrics(expr: str) -> set[str]:
    return metric_names(expr) - known_metrics()
