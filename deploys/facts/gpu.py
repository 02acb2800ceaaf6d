"""Facts about NVIDIA GPUs and the driver on a host.

``GpuInventory``: the GPUs as NVML sees them, read on the host through the exporter venv's probe
(``python -m citadel_gpu_exporter.probe``), or nvidia-smi's CSV when the exporter is not there
yet: count, names, driver version, memory. ``NvidiaPreflight``: what the driver deploy decides
on (GPU on the PCI bus, Secure Boot, kernel headers, loaded vs installed driver).

Both ``process`` methods are pure, so tests (and tests/verify via testinfra) reuse them on
captured output.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pyinfra.api import FactBase

from citadel.components.gpu_exporter import PROBE, VENV

_VERSION = re.compile(r"\b([0-9]{3}\.[0-9]+(?:\.[0-9]+)?)\b")


def empty_inventory(source: str) -> dict[str, Any]:
    return {
        "source": source,
        "count": 0,
        "names": [],
        "driver_version": None,
        "memory_total_bytes": [],
        "reason": None,
    }


class GpuInventory(FactBase[dict[str, Any]]):
    """``{"source": "nvml"|"nvidia-smi"|"none", "count", "names", "driver_version",
    "memory_total_bytes": [per GPU], "reason"}``."""

    def command(self) -> str:
        return (
            f"if [ -x {VENV}/bin/python ] && out=$({PROBE} 2>/dev/null); then "
            'echo "#nvml"; echo "$out"; '
            "elif command -v nvidia-smi >/dev/null 2>&1; then echo '#nvidia-smi'; "
            "nvidia-smi --query-gpu=index,name,driver_version,memory.total "
            "--format=csv,noheader,nounits 2>&1 || true; "
            "else echo '#none'; fi"
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        lines = [line for line in output if line.strip()]
        if not lines or not lines[0].startswith("#"):
            return empty_inventory("none")
        source, body = lines[0][1:].strip(), lines[1:]
        if source == "nvml":
            return self._from_probe("\n".join(body))
        if source == "nvidia-smi":
            return self._from_smi(body)
        result = empty_inventory("none")
        result["reason"] = "neither the exporter's probe nor nvidia-smi is on the host"
        return result

    @staticmethod
    def _from_probe(text: str) -> dict[str, Any]:
        result = empty_inventory("nvml")
        try:
            data = json.loads(text)
        except ValueError:
            result["reason"] = "probe printed no JSON"
            return result
        gpus = data.get("gpus") or []
        result.update(
            count=int(data.get("count") or 0),
            names=[str(g.get("name")) for g in gpus],
            driver_version=data.get("driver_version"),
            memory_total_bytes=[int(g.get("memory_total_bytes") or 0) for g in gpus],
            reason=data.get("reason"),
        )
        return result

    @staticmethod
    def _from_smi(lines: list[str]) -> dict[str, Any]:
        result = empty_inventory("nvidia-smi")
        for line in lines:
            parts = [p.strip() for p in line.split(",")]
            if len(parts) != 4 or not parts[0].isdigit():
                result["reason"] = line.strip()  # e.g. "NVIDIA-SMI has failed ..."
                continue
            _, name, driver, memory_mib = parts
            result["names"].append(name)
            result["driver_version"] = driver
            try:
                result["memory_total_bytes"].append(int(float(memory_mib) * 1024 * 1024))
            except ValueError:
                result["memory_total_bytes"].append(0)
        result["count"] = len(result["names"])
        return result


class NvidiaPreflight(FactBase[dict[str, Any]]):
    """``{"lspci": bool, "gpus_on_bus": int, "secure_boot": True|False|None, "kernel": str,
    "headers": bool, "loaded": "550.54.15"|None, "installed": {"nvidia-open": "550.54.15-1", ...},
    "keyring": "1.1-1"|None, "nouveau_loaded": bool}``."""

    PACKAGES = ("nvidia-open", "cuda-drivers")

    def command(self) -> str:
        dpkg = "; ".join(
            f"echo \"pkg {p}=$(dpkg-query -W -f='${{Version}}' {p} 2>/dev/null)\""
            for p in (*self.PACKAGES, "cuda-keyring")
        )
        return (
            "if command -v lspci >/dev/null 2>&1; then "
            "echo \"gpus=$(lspci -d 10de: 2>/dev/null | grep -Eci 'vga|3d|display' || true)\"; "
            "else echo 'gpus=?'; fi; "
            'echo "secure_boot=$(mokutil --sb-state 2>&1 | head -n 1)"; '
            'echo "kernel=$(uname -r)"; '
            'if [ -e "/lib/modules/$(uname -r)/build" ]; then echo headers=yes; '
            "else echo headers=no; fi; "
            'echo "loaded=$(head -n 1 /proc/driver/nvidia/version 2>/dev/null)"; '
            "echo \"nouveau=$(grep -c '^nouveau ' /proc/modules 2>/dev/null || true)\"; " + dpkg
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        raw: dict[str, str] = {}
        installed: dict[str, str | None] = {}
        for line in output:
            key, _, value = line.partition("=")
            value = value.strip()
            if key.startswith("pkg "):
                installed[key[4:]] = value or None
            else:
                raw[key.strip()] = value
        gpus = raw.get("gpus", "?")
        loaded = _VERSION.search(raw.get("loaded", ""))
        keyring = installed.pop("cuda-keyring", None)
        return {
            "lspci": gpus != "?",
            "gpus_on_bus": int(gpus) if gpus.isdigit() else 0,
            "secure_boot": parse_secure_boot(raw.get("secure_boot", "")),
            "kernel": raw.get("kernel", ""),
            "headers": raw.get("headers") == "yes",
            "loaded": loaded.group(1) if loaded else None,
            "installed": installed,
            "keyring": keyring,
            "nouveau_loaded": raw.get("nouveau", "0").strip() not in ("", "0"),
        }


def parse_secure_boot(text: str) -> bool | None:
    """mokutil --sb-state: True enabled, False disabled/unsupported, None unknown (no mokutil)."""
    low = text.lower()
    if "secureboot enabled" in low:
        return True
    if "secureboot disabled" in low or "not supported" in low or "doesn't support" in low:
        return False
    return None
