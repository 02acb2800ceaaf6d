from __future__ import annotations

import json
import os
import subprocess
import sys

import pynvml
from citadel_gpu_exporter.probe import probe

from .fake_nvml import EXPORTER_SRC, GIB, FakeNvml, error, two_gpus


def test_probe_two_gpus() -> None:
    nvml = two_gpus()
    result = probe(nvml)
    assert result == {
        "nvml": True,
        "reason": None,
        "driver_version": "550.54.15",
        "cuda_version": "12.4",
        "count": 2,
        "gpus": [
            {
                "index": 0,
                "name": "NVIDIA H100 80GB HBM3",
                "uuid": "GPU-00000000-0000-0000-0000-000000000000",
                "memory_total_bytes": 80 * GIB,
            },
            {
                "index": 1,
                "name": "NVIDIA H100 80GB HBM3",
                "uuid": "GPU-11111111-1111-1111-1111-111111111111",
                "memory_total_bytes": 80 * GIB,
            },
        ],
    }
    json.dumps(result)  # the fact parses JSON
    assert nvml.calls[-1] == "nvmlShutdown"
    assert "nvmlDeviceGetComputeRunningProcesses" not in nvml.calls


def test_probe_no_driver() -> None:
    nvml = FakeNvml([])
    nvml.fail["nvmlInit"] = error(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    result = probe(nvml)
    assert result["nvml"] is False
    assert "Driver Not Loaded" in result["reason"]
    assert result["count"] == 0
    assert result["gpus"] == []
    assert result["driver_version"] is None


def test_probe_nvml_fails_after_init() -> None:
    nvml = two_gpus()
    nvml.fail["nvmlDeviceGetCount"] = error(pynvml.NVML_ERROR_UNKNOWN)
    result = probe(nvml)
    assert result["nvml"] is False
    assert "nvmlDeviceGetCount" in result["reason"]
    assert not nvml.initialised  # shut down again


def test_probe_module_on_this_machine() -> None:
    """``python -m citadel_gpu_exporter.probe`` as the pyinfra fact runs it (no GPU here)."""
    env = {**os.environ, "PYTHONPATH": str(EXPORTER_SRC)}
    proc = subprocess.run(
        [sys.executable, "-m", "citadel_gpu_exporter.probe"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    result = json.loads(proc.stdout)
    assert set(result) == {"nvml", "reason", "driver_version", "cuda_version", "count", "gpus"}
    if not result["nvml"]:
        assert result["reason"]
        assert result["count"] == 0
