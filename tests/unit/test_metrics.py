"""The metric registry (citadel.metrics) and its PromQL name extraction."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from citadel import metrics

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('up{service="node_exporter"} == 0', {"up"}),
        ("rate(http_requests_total[5m])", {"http_requests_total"}),
        (
            "histogram_quantile(0.95, sum by (le, model) (rate(x_bucket[$__rate_interval])))",
            {"x_bucket"},
        ),
        ("a / on (host) group_left (role) b offset 5m > 0.5", {"a", "b"}),
        ('vllm:num_requests_waiting{model_name="m"}', {"vllm:num_requests_waiting"}),
        ('count(ALERTS{alertstate="firing"}) or vector(0)', {"ALERTS"}),
        ("node_load1 and node_load15 unless bool 1e3", {"node_load1", "node_load15"}),
        ('label_replace(up, "x", "$1", "instance", "(.*):.*")', {"up"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metrics.metric_names(expr) == names


def test_document_metrics_are_all_emitted() -> None:
    for name in metrics.DOCUMENT_METRICS:
        assert metrics.sources_of(name), f"{name}: no exporter or rule emits it"
    for query in metrics.DOCUMENT_QUERIES:
        assert not metrics.unknown_metrics(query), query


def test_histogram_series_resolve_to_their_source() -> None:
    assert metrics.sources_of("ai_inference_duration_seconds_bucket") == ["gateway"]
    assert "recording rule" in metrics.sources_of("ai_inference_duration_seconds")
    assert metrics.sources_of("no_such_metric_total") == []


def _string_constants(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


def test_gpu_exporter_registry_matches_its_code() -> None:
    """The registry's GPU names are the ones services/gpu_exporter really emits."""
    code = _string_constants(
        ROOT / "services" / "gpu_exporter" / "citadel_gpu_exporter" / "collector.py"
    )
    emitted = {n for n in code if n.startswith(("nvidia_gpu_", "ai_model_"))}
    emitted = {"nvidia_gpu_driver_info" if n == "nvidia_gpu_driver" else n for n in emitted}
    assert metrics.EMITTED["gpu_exporter"] == emitted


def test_gateway_registry_matches_its_code() -> None:
    path = ROOT / "services" / "gateway" / "citadel_gateway" / "metrics.py"
    if not path.exists():
        pytest.skip("services/gateway/citadel_gateway/metrics.py is not there yet")
    code = _string_constants(path)
    missing = {n for n in metrics.EMITTED["gateway"] if n not in code}
    assert not missing, f"the registry names gateway metrics its code does not emit: {missing}"
