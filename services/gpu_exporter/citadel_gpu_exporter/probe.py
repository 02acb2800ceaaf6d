"""Fact helper for the deploy: ``python -m citadel_gpu_exporter.probe`` prints one JSON object.

    {"nvml": true, "reason": null, "driver_version": "550.54.15", "cuda_version": "12.4",
     "count": 2, "gpus": [{"index": 0, "name": "...", "uuid": "GPU-...",
                           "memory_total_bytes": 85899345920}, ...]}

With no library, driver or GPU: ``{"nvml": false, "reason": "...", "driver_version": null,
"cuda_version": null, "count": 0, "gpus": []}``. The exit status is 0 either way, so the pyinfra
fact can always parse stdout; a non-zero status means the probe itself is broken.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from .nvml import NvmlSession, NvmlUnavailable, load_pynvml


def probe(nvml: Any = None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "nvml": False,
        "reason": None,
        "driver_version": None,
        "cuda_version": None,
        "count": 0,
        "gpus": [],
    }
    try:
        session = NvmlSession(nvml if nvml is not None else load_pynvml())
        with session:
            reading = session.read(with_processes=False)
    except NvmlUnavailable as exc:
        result["reason"] = str(exc)
        return result
    result.update(
        nvml=True,
        driver_version=reading.driver_version,
        cuda_version=reading.cuda_version,
        count=len(reading.gpus),
        gpus=[
            {
                "index": gpu.index,
                "name": gpu.name,
                "uuid": gpu.uuid,
                "memory_total_bytes": gpu.memory_total_bytes,
            }
            for gpu in reading.gpus
        ],
    )
    return result


def main() -> int:
    json.dump(probe(), sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
