#!/bin/bash
# One prepared check on a real NVIDIA GPU (the device tool's machine): the exporter and its probe
# read through NVML, the deploy's GPU facts run as pyinfra would run them, a scrape idle and one
# under load. Outputs land in $OUT (default /tmp/gpu-check) and feed tests/unit/fixtures/gpu/.
#
# Here, first:   .venv/bin/python scripts/gpu_fact_commands.py .devcheck
# There:         bash scripts/gpu-check.sh          (carry .devcheck)
set -u
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/services/gpu_exporter PYTHONUNBUFFERED=1
{
  nvidia-smi
  python3 -c 'import sys, pynvml, prometheus_client; print(sys.version); print(pynvml.__file__)'
  python3 -m pip show nvidia-ml-py prometheus-client 2>/dev/null | grep -E '^(Name|Version)'
  uname -a
} >"$OUT/env.txt" 2>&1

python3 -m citadel_gpu_exporter.probe >"$OUT/probe.json" 2>"$OUT/probe.err"
echo "probe rc=$?"

# GpuInventory without the exporter's venv (nvidia-smi branch), then with it (probe branch).
bash .devcheck/gpu_inventory.sh >"$OUT/fact-gpu-inventory-smi.txt" 2>&1
mkdir -p /opt/citadel-gpu-exporter/bin
printf '#!/bin/sh\nexec python3 "$@"\n' >/opt/citadel-gpu-exporter/bin/python
chmod +x /opt/citadel-gpu-exporter/bin/python
bash .devcheck/gpu_inventory.sh >"$OUT/fact-gpu-inventory-nvml.txt" 2>&1
bash .devcheck/nvidia_preflight.sh >"$OUT/fact-nvidia-preflight.txt" 2>&1

# The real exporter process: one scrape idle, one while a matrix-product loop runs.
python3 -m citadel_gpu_exporter --listen 127.0.0.1 --port 19835 >"$OUT/exporter.log" 2>&1 &
exporter=$!
sleep 3
curl -s http://127.0.0.1:19835/metrics >"$OUT/metrics-idle.txt"
python3 - <<'PY' &
import time, torch
x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
end = time.monotonic() + 12
while time.monotonic() < end:
    y = x @ x
    torch.cuda.synchronize()
PY
load=$!
sleep 8
curl -s http://127.0.0.1:19835/metrics >"$OUT/metrics-load.txt"
wait $load
kill $exporter; wait $exporter
echo "exporter rc=$?"

python3 -m pytest -p no:cacheprovider tests/gpu_exporter -v -s -o addopts=-ra \
  --junitxml="$OUT/junit.xml" 2>&1 | tee "$OUT/pytest.txt"
echo "pytest rc=${PIPESTATUS[0]}"
