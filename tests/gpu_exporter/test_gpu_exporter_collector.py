from __future__ import annotations

import logging

import pynvml
import pytest
from citadel_gpu_exporter.collector import GpuCollector
from prometheus_client import CollectorRegistry, generate_latest

from .fake_nvml import GIB, FakeNvml, error, two_gpus

GPU0 = {
    "gpu": "0",
    "uuid": "GPU-00000000-0000-0000-0000-000000000000",
    "name": "NVIDIA H100 80GB HBM3",
}
GPU1 = {
    "gpu": "1",
    "uuid": "GPU-11111111-1111-1111-1111-111111111111",
    "name": "NVIDIA H100 80GB HBM3",
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def registry_for(collector: GpuCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def nvidia_sample_names(registry: CollectorRegistry) -> set[str]:
    names = set()
    for family in registry.collect():
        for sample in family.samples:
            names.add(sample.name)
    return names


def test_register_does_not_touch_nvml() -> None:
    nvml = two_gpus()
    registry_for(GpuCollector(nvml))
    assert nvml.calls == []


def test_two_gpus_values_and_labels() -> None:
    registry = registry_for(GpuCollector(two_gpus()))
    value = registry.get_sample_value
    assert value("nvidia_gpu_up") == 1
    assert value("nvidia_gpu_count") == 2
    assert (
        value("nvidia_gpu_driver_info", {"driver_version": "550.54.15", "cuda_version": "12.4"})
        == 1
    )
    assert value("nvidia_gpu_utilization_percentage", GPU0) == 87
    assert value("nvidia_gpu_utilization_percentage", GPU1) == 0
    assert value("nvidia_gpu_memory_used_bytes", GPU0) == 40 * GIB
    assert value("nvidia_gpu_memory_total_bytes", GPU1) == 80 * GIB
    assert value("nvidia_gpu_temperature_celsius", GPU0) == 61
    assert value("nvidia_gpu_temperature_celsius", GPU1) == 35
    assert value("nvidia_gpu_power_watts", GPU0) == pytest.approx(312.5)
    assert value("nvidia_gpu_power_watts", GPU1) == pytest.approx(70.0)


def test_process_memory() -> None:
    registry = registry_for(GpuCollector(two_gpus()))
    value = registry.get_sample_value
    assert value("ai_model_memory_usage_bytes", {**GPU0, "pid": "4242", "process": "python3"}) == (
        38 * GIB
    )
    assert value("ai_model_memory_usage_bytes", {**GPU1, "pid": "5151", "process": "ollama"}) == (
        512 * 1024**2
    )
    # A process whose memory NVML cannot report is left out rather than exported as 0.
    text = generate_latest(registry).decode()
    assert 'pid="4343"' not in text
    samples = [
        s for f in registry.collect() for s in f.samples if s.name == "ai_model_memory_usage_bytes"
    ]
    assert len(samples) == 2


def test_exposition_text_has_the_document_names() -> None:
    text = generate_latest(registry_for(GpuCollector(two_gpus()))).decode()
    for name in (
        "nvidia_gpu_up 1.0",
        "# TYPE nvidia_gpu_utilization_percentage gauge",
        "# TYPE ai_model_memory_usage_bytes gauge",
        "nvidia_gpu_driver_info{",
    ):
        assert name in text


def test_no_driver_exports_up_0_logs_once_and_retries(caplog: pytest.LogCaptureFixture) -> None:
    nvml = FakeNvml([])
    nvml.fail["nvmlInit"] = error(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    clock = Clock()
    collector = GpuCollector(nvml, retry_interval=60, clock=clock)
    registry = registry_for(collector)
    caplog.set_level(logging.INFO, logger="citadel_gpu_exporter")

    for _ in range(5):
        assert registry.get_sample_value("nvidia_gpu_up") == 0
        assert not any(
            n.startswith("nvidia_gpu_") and n != "nvidia_gpu_up"
            for n in nvidia_sample_names(registry)
        )
        clock.now += 10
    # nvmlInit was tried once in the first 60 s, not at every scrape
    assert nvml.calls.count("nvmlInit") == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "NVML Shared Library Not Found" in warnings[0].getMessage()
    assert "Shared Library Not Found" in (collector.reason or "")

    # 60 s later: tried again, still failing, same reason: still logged only once
    clock.now += 20
    assert registry.get_sample_value("nvidia_gpu_up") == 0
    assert nvml.calls.count("nvmlInit") == 2
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1

    # the driver gets installed: picked up at the next retry, no restart
    del nvml.fail["nvmlInit"]
    nvml.gpus = two_gpus().gpus
    assert registry.get_sample_value("nvidia_gpu_up") == 0  # retry not due yet
    clock.now += 61
    assert registry.get_sample_value("nvidia_gpu_up") == 1
    assert registry.get_sample_value("nvidia_gpu_count") == 2
    assert collector.reason is None
    assert any("available again" in r.getMessage() for r in caplog.records)


def test_init_fails_with_a_plain_os_error() -> None:
    class Broken(FakeNvml):
        def nvmlInit(self) -> None:
            raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    collector = GpuCollector(Broken([]))
    assert registry_for(collector).get_sample_value("nvidia_gpu_up") == 0
    assert "libnvidia-ml.so.1" in (collector.reason or "")


def test_nvml_fails_mid_scrape_then_recovers(caplog: pytest.LogCaptureFixture) -> None:
    nvml = two_gpus()
    clock = Clock()
    registry = registry_for(GpuCollector(nvml, clock=clock))
    assert registry.get_sample_value("nvidia_gpu_up") == 1
    assert nvml.calls.count("nvmlInit") == 1

    # GPU 1 falls off the bus while GPU 0 has already been read
    nvml.fail["nvmlDeviceGetHandleByIndex"] = (1, error(pynvml.NVML_ERROR_GPU_IS_LOST))
    caplog.set_level(logging.INFO, logger="citadel_gpu_exporter")
    text = generate_latest(registry).decode()  # one scrape
    assert "nvidia_gpu_up 0.0" in text
    # nothing half-read leaks out of the failed scrape
    assert "nvidia_gpu_utilization_percentage{" not in text
    assert "nvidia_gpu_count" not in text
    assert "nvmlShutdown" in nvml.calls
    assert any("GPU is lost" in r.getMessage() for r in caplog.records)

    # the next scrape re-initialises at once (a lost GPU is not an init failure)
    del nvml.fail["nvmlDeviceGetHandleByIndex"]
    assert registry.get_sample_value("nvidia_gpu_up") == 1
    assert nvml.calls.count("nvmlInit") == 2
    assert registry.get_sample_value("nvidia_gpu_utilization_percentage", GPU1) == 0
    assert any("available again" in r.getMessage() for r in caplog.records)


def test_count_fails_mid_scrape() -> None:
    nvml = two_gpus()
    registry = registry_for(GpuCollector(nvml))
    assert registry.get_sample_value("nvidia_gpu_up") == 1
    nvml.fail["nvmlDeviceGetCount"] = error(pynvml.NVML_ERROR_UNKNOWN)
    assert registry.get_sample_value("nvidia_gpu_up") == 0


def test_unsupported_value_is_left_out_not_fatal() -> None:
    nvml = two_gpus()
    nvml.fail["nvmlDeviceGetPowerUsage"] = (1, error(pynvml.NVML_ERROR_NOT_SUPPORTED))
    nvml.fail["nvmlDeviceGetTemperature"] = (0, error(pynvml.NVML_ERROR_NOT_SUPPORTED))
    registry = registry_for(GpuCollector(nvml))
    value = registry.get_sample_value
    assert value("nvidia_gpu_up") == 1
    assert value("nvidia_gpu_power_watts", GPU0) == pytest.approx(312.5)
    assert value("nvidia_gpu_power_watts", GPU1) is None
    assert value("nvidia_gpu_temperature_celsius", GPU0) is None
    assert value("nvidia_gpu_temperature_celsius", GPU1) == 35


def test_process_name_falls_back_when_nvml_has_none() -> None:
    nvml = two_gpus()
    nvml.process_names = {}
    registry = registry_for(GpuCollector(nvml))
    # pid 5151 does not exist here (or is someone else): the label is present, maybe empty
    samples = [
        s for f in registry.collect() for s in f.samples if s.name == "ai_model_memory_usage_bytes"
    ]
    assert {s.labels["pid"] for s in samples} == {"4242", "5151"}


def test_zero_gpus_with_a_working_driver() -> None:
    registry = registry_for(GpuCollector(FakeNvml([])))
    assert registry.get_sample_value("nvidia_gpu_up") == 1
    assert registry.get_sample_value("nvidia_gpu_count") == 0
