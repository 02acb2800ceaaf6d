"""What a real H100 machine answered (tests/unit/fixtures/gpu/h100, by scripts/gpu-check.sh):
the deploy's GPU facts parse it, the nvidia plan refuses to install over its foreign driver, and
the exporter's scrape carries every GPU metric the rules and dashboards rely on."""

from __future__ import annotations

from pathlib import Path

import deploy_harness as h
from prometheus_client.parser import text_string_to_metric_families

from citadel.components.nvidia import Config
from citadel.metrics import EMITTED
from deploys import nvidia
from deploys.facts.gpu import GpuInventory, NvidiaPreflight

CAPTURE = Path(__file__).parent / "fixtures" / "gpu" / "h100"
H100 = "NVIDIA H100 80GB HBM3"


def lines(name: str) -> list[str]:
    return (CAPTURE / name).read_text().splitlines()


def scrape(name: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families((CAPTURE / name).read_text()):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def test_gpu_inventory_from_the_probe_and_from_nvidia_smi_agree() -> None:
    nvml = GpuInventory().process(lines("fact-gpu-inventory-nvml.txt"))
    smi = GpuInventory().process(lines("fact-gpu-inventory-smi.txt"))
    assert nvml["source"] == "nvml" and smi["source"] == "nvidia-smi"
    for fact in (nvml, smi):
        assert fact["count"] == 1
        assert fact["names"] == [H100]
        assert fact["driver_version"] == "580.159.04"
        assert fact["reason"] is None
    # nvidia-smi reports MiB, NVML bytes
    assert abs(nvml["memory_total_bytes"][0] - smi["memory_total_bytes"][0]) < 1024**2


def test_preflight_reads_the_loaded_driver_without_lspci_or_mokutil() -> None:
    fact = NvidiaPreflight().process(lines("fact-nvidia-preflight.txt"))
    assert fact["loaded"] == "580.159.04"
    assert fact["lspci"] is False and fact["secure_boot"] is None
    assert fact["installed"] == {"nvidia-open": None, "cuda-drivers": None}
    assert fact["keyring"] is None and fact["nouveau_loaded"] is False


def _facts() -> nvidia.Facts:
    pre = NvidiaPreflight().process(lines("fact-nvidia-preflight.txt"))
    meta = h.DISTROS["ubuntu2404"]["release_meta"]
    return nvidia.Facts(meta["ID"], meta["VERSION_ID"], "x86_64", pre)


def test_plan_refuses_to_install_over_a_driver_no_package_installed() -> None:
    p = nvidia.plan(_facts(), Config(gpu_generation="hopper", driver_branch="580"))
    assert p.stop is not None
    assert "driver 580.159.04 is loaded but no package" in p.stop
    assert "nvidia.driver_source: preinstalled" in p.stop


def test_preinstalled_driver_of_the_branch_is_kept_and_nothing_installed() -> None:
    cfg = Config(gpu_generation="hopper", driver_branch="580", driver_source="preinstalled")
    p = nvidia.plan(_facts(), cfg)
    assert p.stop is None and p.preinstalled
    assert p.notes == ["preinstalled driver 580.159.04: nothing to install"]
    other = nvidia.plan(_facts(), cfg.model_copy(update={"driver_branch": "550"}))
    assert other.stop is not None and "expects branch 550" in other.stop


def test_scrape_under_load_has_every_gpu_metric_rules_and_dashboards_use() -> None:
    samples = scrape("metrics-load.txt")
    for name in EMITTED["gpu_exporter"]:
        assert name in samples, name
    assert samples["nvidia_gpu_up"] == [({}, 1.0)]
    ((labels, util),) = samples["nvidia_gpu_utilization_percentage"]
    assert labels["name"] == H100 and labels["gpu"] == "0" and labels["uuid"].startswith("GPU-")
    assert util >= 50
    ((proc_labels, used),) = samples["ai_model_memory_usage_bytes"]
    assert proc_labels["process"] == "python3" and int(proc_labels["pid"]) > 0
    assert used >= 512 * 1024**2  # the CUDA context and the 8192x8192 bf16 operands


def test_idle_scrape_has_no_process_series() -> None:
    samples = scrape("metrics-idle.txt")
    assert samples["nvidia_gpu_up"] == [({}, 1.0)]
    assert "ai_model_memory_usage_bytes" not in samples
    assert samples["nvidia_gpu_utilization_percentage"][0][1] == 0.0
