"""The API document's five dashboards, panel by panel, over metrics that citadel.metrics knows an
exporter or recording rule emits (tests check every expression with promtool)."""

from __future__ import annotations

from citadel.dashboards.model import Dashboard, Panel, q

RI = "$__rate_interval"

DASHBOARDS: tuple[Dashboard, ...] = (
    Dashboard(
        uid="citadel-overview",
        title="AI Infrastructure Overview",
        description="High-level system metrics",
        panels=(
            Panel("Hosts up", (q('sum(up{service="node_exporter"})'),), kind="stat", width=6),
            Panel(
                "Scrape targets up",
                (q("sum(up) / count(up)"),),
                unit="percentunit",
                kind="stat",
                width=6,
            ),
            Panel(
                "Gateway cache hit ratio",
                (q('cache_hit_ratio{service="gateway"}'),),
                unit="percentunit",
                kind="stat",
                width=6,
            ),
            Panel(
                "Firing alerts",
                (q('count(ALERTS{alertstate="firing"}) or vector(0)'),),
                kind="stat",
                width=6,
            ),
            Panel(
                "Request rate by status",
                (q(f"sum by (code) (rate(http_requests_total[{RI}]))", "{{code}}"),),
                unit="reqps",
            ),
            Panel(
                "Inference latency p95",
                (q('ai_inference_duration_seconds{quantile="0.95"}', "{{model}}"),),
                unit="s",
            ),
            Panel(
                "GPU utilization",
                (q("nvidia_gpu_utilization_percentage", "{{host}} GPU {{gpu}}"),),
                unit="percent",
            ),
            Panel("Queue size", (q("sum by (model) (ai_queue_size)", "{{model}}"),)),
            Panel(
                "Targets",
                (q("up", ""),),
                kind="table",
                width=24,
                description="Every scrape target: 1 up, 0 down",
            ),
        ),
    ),
    Dashboard(
        uid="citadel-model-performance",
        title="Model Performance",
        description="Inference times and accuracy",
        panels=(
            Panel(
                "Inference duration quantiles",
                (q("ai_inference_duration_seconds", "{{model}} p{{quantile}}"),),
                unit="s",
            ),
            Panel(
                "Mean inference duration",
                (
                    q(
                        f"sum by (model) (rate(ai_inference_duration_seconds_sum[{RI}]))"
                        f" / sum by (model) (rate(ai_inference_duration_seconds_count[{RI}]))",
                        "{{model}}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Inferences per second",
                (
                    q(
                        f"sum by (model) (rate(ai_inference_duration_seconds_count[{RI}]))",
                        "{{model}}",
                    ),
                ),
                unit="reqps",
            ),
            Panel(
                "Queue size (gateway in flight, vLLM waiting)",
                (q("ai_queue_size", "{{model}} {{service}}{{source}}"),),
            ),
            Panel(
                "Model backends up (gateway health checks)",
                (q("gateway_upstream_up", "{{model}} {{backend}}"),),
            ),
            Panel(
                "Time to first token p95 (vLLM)",
                (
                    q(
                        "histogram_quantile(0.95, sum by (le, model) "
                        f"(rate(vllm:time_to_first_token_seconds_bucket[{RI}])))",
                        "{{model}}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Generated tokens per second (vLLM)",
                (q(f"sum by (model) (rate(vllm:generation_tokens_total[{RI}]))", "{{model}}"),),
            ),
            Panel(
                "Vector search duration",
                (q("vector_search_duration_seconds", "p{{quantile}}"),),
                unit="s",
            ),
            Panel(
                "Accuracy",
                kind="text",
                width=24,
                text=(
                    "No exporter measures model accuracy: evaluation results belong in the "
                    "`experiments` schema of citadel_db. This dashboard shows what is measured: "
                    "latency, throughput, queueing and backend health."
                ),
            ),
        ),
    ),
    Dashboard(
        uid="citadel-resource-utilization",
        title="Resource Utilization",
        description="CPU, GPU, memory usage",
        panels=(
            Panel("CPU", (q("instance:node_cpu_utilisation:ratio", "{{host}}"),), "percentunit"),
            Panel(
                "Memory", (q("instance:node_memory_utilisation:ratio", "{{host}}"),), "percentunit"
            ),
            Panel(
                "GPU utilization",
                (q("nvidia_gpu_utilization_percentage", "{{host}} GPU {{gpu}}"),),
                "percent",
            ),
            Panel(
                "GPU memory used",
                (
                    q("nvidia_gpu_memory_used_bytes", "{{host}} GPU {{gpu}} used"),
                    q("nvidia_gpu_memory_total_bytes", "{{host}} GPU {{gpu}} total"),
                ),
                "bytes",
            ),
            Panel(
                "Model GPU memory by process",
                (q("ai_model_memory_usage_bytes", "{{host}} {{process}} ({{pid}})"),),
                "bytes",
            ),
            Panel(
                "GPU temperature",
                (q("nvidia_gpu_temperature_celsius", "{{host}} GPU {{gpu}}"),),
                "celsius",
            ),
            Panel("GPU power", (q("nvidia_gpu_power_watts", "{{host}} GPU {{gpu}}"),), "watt"),
            Panel(
                "GPUs readable (NVML)",
                (q("nvidia_gpu_up", "{{host}}"),),
                description="0: no driver or GPU, or NVML failed",
            ),
            Panel(
                "Disk used",
                (
                    q(
                        '1 - node_filesystem_avail_bytes{fstype!~"tmpfs|ramfs|squashfs"}'
                        ' / node_filesystem_size_bytes{fstype!~"tmpfs|ramfs|squashfs"}',
                        "{{host}} {{mountpoint}}",
                    ),
                ),
                "percentunit",
            ),
            Panel("Load (1 min)", (q("node_load1", "{{host}}"),)),
            Panel("Redis memory", (q("redis_memory_used_bytes", "{{host}}"),), "bytes"),
            Panel(
                "PostgreSQL database size", (q("pg_database_size_bytes", "{{datname}}"),), "bytes"
            ),
        ),
    ),
    Dashboard(
        uid="citadel-network-performance",
        title="Network Performance",
        description="Latency and throughput",
        panels=(
            Panel(
                "Received",
                (
                    q(
                        f'rate(node_network_receive_bytes_total{{device!="lo"}}[{RI}])',
                        "{{host}} {{device}}",
                    ),
                ),
                "Bps",
            ),
            Panel(
                "Transmitted",
                (
                    q(
                        f'rate(node_network_transmit_bytes_total{{device!="lo"}}[{RI}])',
                        "{{host}} {{device}}",
                    ),
                ),
                "Bps",
            ),
            Panel(
                "Gateway throughput by route",
                (q(f"sum by (route) (rate(http_requests_total[{RI}]))", "{{route}}"),),
                "reqps",
            ),
            Panel(
                "Gateway overhead p95 (time in the gateway itself)",
                (
                    q(
                        "histogram_quantile(0.95, sum by (le, route) "
                        f"(rate(gateway_overhead_seconds_bucket[{RI}])))",
                        "{{route}}",
                    ),
                ),
                "s",
            ),
            Panel(
                "Inference latency p50 / p95 / p99",
                (q("ai_inference_duration_seconds", "{{model}} p{{quantile}}"),),
                "s",
            ),
            Panel(
                "Scrape round trip (monitoring to each target)",
                (q("scrape_duration_seconds", "{{host}} {{service}}"),),
                "s",
            ),
            Panel(
                "Interface errors and drops",
                (
                    q(f"rate(node_network_receive_errs_total[{RI}])", "{{host}} {{device}} rx err"),
                    q(
                        f"rate(node_network_transmit_errs_total[{RI}])",
                        "{{host}} {{device}} tx err",
                    ),
                    q(
                        f"rate(node_network_receive_drop_total[{RI}])",
                        "{{host}} {{device}} rx drop",
                    ),
                ),
                "pps",
            ),
            Panel(
                "TCP retransmissions",
                (
                    q(
                        f"rate(node_netstat_Tcp_RetransSegs[{RI}])"
                        f" / rate(node_netstat_Tcp_OutSegs[{RI}])",
                        "{{host}}",
                    ),
                ),
                "percentunit",
            ),
        ),
    ),
    Dashboard(
        uid="citadel-error-monitoring",
        title="Error Monitoring",
        description="Error rates and incident tracking",
        panels=(
            Panel(
                "5xx ratio by route",
                (q("route:http_errors:ratio_rate5m", "{{route}}"),),
                "percentunit",
            ),
            Panel(
                "Error responses by code",
                (
                    q(
                        f'sum by (code) (rate(http_requests_total{{code=~"4..|5.."}}[{RI}]))',
                        "{{code}}",
                    ),
                ),
                "reqps",
            ),
            Panel(
                "Rate limited (429 RATE_LIMITED)",
                (q(f'sum(rate(http_requests_total{{code="429"}}[{RI}]))', "429"),),
                "reqps",
            ),
            Panel(
                "Model backends down",
                (q("gateway_upstream_up == 0", "{{model}} {{backend}}"),),
            ),
            Panel(
                "Gateway Redis errors and fail-open requests",
                (
                    q(f"sum by (op) (rate(gateway_redis_errors_total[{RI}]))", "redis {{op}}"),
                    q(f"rate(gateway_ratelimit_failopen_total[{RI}])", "fail-open"),
                ),
                "reqps",
            ),
            Panel(
                "Qdrant failed requests",
                (q(f"sum by (host) (rate(rest_responses_fail_total[{RI}]))", "{{host}}"),),
                "reqps",
            ),
            Panel("Targets down", (q("up == 0", "{{host}} {{service}}"),), kind="table"),
            Panel(
                "Incidents: firing alerts",
                (q('ALERTS{alertstate="firing"}', "{{alertname}} {{host}}"),),
                kind="table",
            ),
            Panel(
                "Data stores up",
                (q("pg_up", "postgres {{host}}"), q("redis_up", "redis {{host}}")),
            ),
            Panel(
                "Rule evaluation failures",
                (
                    q(
                        f"increase(prometheus_rule_evaluation_failures_total[{RI}])",
                        "{{rule_group}}",
                    ),
                ),
            ),
        ),
    ),
)


def expressions() -> list[tuple[str, str, str]]:
    """(dashboard, panel, expr) for every query of every dashboard."""
    return [(d.title, p.title, qq.expr) for d in DASHBOARDS for p in d.panels for qq in p.queries]
