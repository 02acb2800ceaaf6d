"""The exporter and the probe against a real NVIDIA GPU: skipped where NVML cannot be read.

Runs on the GPU machine the device tool lends (``scripts/gpu-check.sh``); everywhere else every
test here is skipped with the reason NVML gave. A PyTorch matrix-product loop stands in for a
model server, so utilisation and the per-process memory metric have something to show.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from citadel_gpu_exporter.probe import probe  # on sys.path by conftest.py

from .test_gpu_exporter_process import exporter, get  # noqa: F401  (fixture re-used)

PROBE = probe()
pytestmark = pytest.mark.skipif(
    not PROBE["nvml"], reason=f"skipped: no NVIDIA GPU here ({PROBE['reason']})"
)

LOAD = """
import sys, time, torch
x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
ballast = torch.empty(2 * 1024**3, dtype=torch.uint8, device="cuda")
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    y = x @ x
    torch.cuda.synchronize()
"""


def sample(body: str, name: str, **labels: str) -> list[float]:
    """Values of ``name`` in a text exposition whose labels include ``labels``."""
    values = []
    for line in body.splitlines():
        match = re.match(rf"^{name}(\{{.*\}})? (\S+)$", line)
        if not match:
            continue
        text = match.group(1) or ""
        if all(f'{key}="{value}"' in text for key, value in labels.items()):
            values.append(float(match.group(2)))
    return values


def smi(query: str) -> list[str]:
    out = subprocess.run(
        ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


@pytest.fixture
def gpu_load() -> Iterator[subprocess.Popen[str]]:
    pytest.importorskip("torch", reason="skipped: no PyTorch to put load on the GPU")
    proc = subprocess.Popen([sys.executable, "-c", LOAD, "20"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_probe_agrees_with_nvidia_smi() -> None:
    assert PROBE["count"] >= 1
    if shutil.which("nvidia-smi") is None:
        pytest.skip("skipped: nvidia-smi not on PATH")
    rows = [row.split(", ") for row in smi("index,name,driver_version,memory.total")]
    assert PROBE["count"] == len(rows)
    assert PROBE["driver_version"] == rows[0][2]
    for gpu, (index, name, _, mib) in zip(PROBE["gpus"], rows, strict=True):
        assert gpu["index"] == int(index)
        assert gpu["name"] == name
        assert gpu["uuid"].startswith("GPU-")
        # nvidia-smi rounds to MiB
        assert abs(gpu["memory_total_bytes"] - int(mib) * 1024**2) < 1024**2


def test_exporter_reports_every_gpu_metric(
    exporter: tuple[str, subprocess.Popen[str]],  # noqa: F811
) -> None:
    base, _ = exporter
    status, body = get(base + "/metrics")
    assert status == 200
    assert sample(body, "nvidia_gpu_up") == [1.0]
    assert sample(body, "nvidia_gpu_count") == [float(PROBE["count"])]
    assert f'driver_version="{PROBE["driver_version"]}"' in body
    for gpu in PROBE["gpus"]:
        labels = {"gpu": str(gpu["index"]), "uuid": gpu["uuid"]}
        assert sample(body, "nvidia_gpu_memory_total_bytes", **labels) == [
            float(gpu["memory_total_bytes"])
        ]
        for name in (
            "nvidia_gpu_utilization_percentage",
            "nvidia_gpu_memory_used_bytes",
            "nvidia_gpu_temperature_celsius",
            "nvidia_gpu_power_watts",
        ):
            values = sample(body, name, **labels)
            assert len(values) == 1, name
            assert values[0] >= 0, name
        assert 0 < sample(body, "nvidia_gpu_temperature_celsius", **labels)[0] < 120


def test_exporter_sees_load_and_the_process_memory(
    exporter: tuple[str, subprocess.Popen[str]],  # noqa: F811
    gpu_load: subprocess.Popen[str],
) -> None:
    base, _ = exporter
    first = PROBE["gpus"][0]
    labels = {"gpu": str(first["index"]), "uuid": first["uuid"]}
    busiest = 0.0
    process_bytes: list[float] = []
    scrape_ms: list[float] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (busiest < 50 or not process_bytes):
        time.sleep(1)
        t0 = time.perf_counter()
        status, body = get(base + "/metrics")
        scrape_ms.append((time.perf_counter() - t0) * 1000)
        assert status == 200
        busiest = max(busiest, *sample(body, "nvidia_gpu_utilization_percentage", **labels))
        process_bytes = sample(body, "ai_model_memory_usage_bytes", pid=str(gpu_load.pid))
    print(f"busiest {busiest}% process {process_bytes} scrape ms {scrape_ms}")
    assert busiest >= 50, "a matrix-product loop should keep the GPU busy"
    # In a container NVML may not see our PID namespace; a VM or bare metal does.
    if not process_bytes and os.path.exists("/.dockerenv"):
        pytest.skip("skipped: per-process memory is not visible across PID namespaces")
    assert process_bytes, "ai_model_memory_usage_bytes names the process using the GPU"
    assert process_bytes[0] >= 2 * 1024**3
    assert max(scrape_ms) < 500, "a scrape reads NVML in well under half a second"
