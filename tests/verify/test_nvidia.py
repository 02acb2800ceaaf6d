"""NVIDIA driver on GPU hosts (skipped in the lab: no GPU). Reads the GPUs the way the deploy's
fact does (deploys/facts/gpu.py: NVML through the exporter's probe, else nvidia-smi)."""

from __future__ import annotations

from citadel.components.nvidia import BLACKLIST_FILE, PIN_FILE
from deploys.facts.gpu import GpuInventory

COMPONENT = "nvidia"


def _inventory(target) -> dict:
    fact = GpuInventory()
    return fact.process(target.infra.check_output(fact.command()).splitlines())


def test_gpu_count_and_driver_branch(target):
    cfg = target.host.nvidia
    gpus = _inventory(target)
    assert gpus["count"] == cfg.expected_gpus, gpus
    assert (gpus["driver_version"] or "").startswith(f"{cfg.driver_branch}."), gpus


def test_loaded_module_is_the_branch(target):
    version = target.infra.file("/proc/driver/nvidia/version").content_string
    assert f" {target.host.nvidia.driver_branch}." in version


def test_persistenced_runs(target):
    service = target.infra.service("nvidia-persistenced")
    assert service.is_running
    assert service.is_enabled


def test_branch_pinned_and_nouveau_blacklisted(target):
    pin = target.infra.file(PIN_FILE).content_string
    assert f"Pin: version {target.host.nvidia.driver_branch}.*" in pin
    assert "blacklist nouveau" in target.infra.file(BLACKLIST_FILE).content_string
    assert "nouveau " not in target.infra.file("/proc/modules").content_string
