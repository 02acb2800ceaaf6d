"""Read NVIDIA GPUs through NVML (nvidia-ml-py's ``pynvml`` module).

Everything NVML-specific lives here so the collector and the probe share one reader, and tests
can inject a fake module with the same functions (``nvmlInit``, ``nvmlDeviceGetCount``, ...).

Error policy:

* ``NvmlSession.open`` fails (no library, no driver, no device nodes): the caller reports
  ``nvidia_gpu_up 0`` with the reason.
* A device-level call fails while reading (``nvmlDeviceGetCount``, ``nvmlDeviceGetHandleByIndex``,
  or any error that means NVML itself is gone): :class:`NvmlUnavailable` is raised and the whole
  reading is discarded; the session is closed and will be re-opened later.
* A single optional value fails (power not supported on this board, temperature sensor missing,
  a process that ended between the list and the name lookup): that one value is ``None`` and the
  rest of the reading stands.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# NVML return codes that mean "this one value is not available here", not "NVML is broken".
# (Values from nvml.h; kept here so a fake module does not need to define them.)
_SOFT_ERRORS = {
    3,  # NVML_ERROR_NOT_SUPPORTED
    4,  # NVML_ERROR_NO_PERMISSION
    6,  # NVML_ERROR_NOT_FOUND (e.g. a process that ended)
    13,  # NVML_ERROR_FUNCTION_NOT_FOUND (older driver)
    19,  # NVML_ERROR_NO_DATA
}

NVML_TEMPERATURE_GPU = 0


class NvmlUnavailable(Exception):
    """NVML cannot be used (not loaded, driver gone, GPU lost); the message is the reason."""


@dataclass
class ProcessReading:
    pid: int
    name: str
    used_memory_bytes: int | None


@dataclass
class GpuReading:
    index: int
    name: str
    uuid: str
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None
    utilization_percent: float | None = None
    temperature_celsius: float | None = None
    power_watts: float | None = None
    processes: list[ProcessReading] = field(default_factory=list)


@dataclass
class Reading:
    driver_version: str | None
    cuda_version: str | None
    gpus: list[GpuReading]


def load_pynvml() -> Any:
    """Import nvidia-ml-py's module; raises :class:`NvmlUnavailable` when it is not installed."""
    try:
        return importlib.import_module("pynvml")
    except ImportError as exc:  # pragma: no cover - the package is a dependency
        raise NvmlUnavailable(f"nvidia-ml-py is not installed: {exc}") from exc


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _error_code(exc: BaseException) -> int | None:
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) else None


class NvmlSession:
    """One ``nvmlInit`` .. ``nvmlShutdown`` span over an NVML module (real or fake)."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self.error_class: type[BaseException] = getattr(nvml, "NVMLError", Exception)
        self.is_open = False

    def open(self) -> None:
        try:
            self.nvml.nvmlInit()
        except Exception as exc:
            raise NvmlUnavailable(f"nvmlInit failed: {_text(exc) or type(exc).__name__}") from exc
        self.is_open = True

    def close(self) -> None:
        if not self.is_open:
            return
        self.is_open = False
        try:
            self.nvml.nvmlShutdown()
        except Exception as exc:
            log.debug("nvmlShutdown failed: %s", exc)

    def __enter__(self) -> NvmlSession:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- helpers -------------------------------------------------------------------------
    def _hard(self, what: str, fn: Any, *args: Any) -> Any:
        """Call ``fn``; any NVML error makes the whole reading unavailable."""
        try:
            return fn(*args)
        except self.error_class as exc:
            raise NvmlUnavailable(f"{what} failed: {_text(exc)}") from exc

    def _soft(self, what: str, fn: Any, *args: Any) -> Any:
        """Call ``fn``; a 'not supported here' error gives ``None``, anything else is hard."""
        try:
            return fn(*args)
        except self.error_class as exc:
            if _error_code(exc) in _SOFT_ERRORS:
                log.debug("%s: %s", what, _text(exc))
                return None
            raise NvmlUnavailable(f"{what} failed: {_text(exc)}") from exc

    # -- reading -------------------------------------------------------------------------
    def driver_version(self) -> str | None:
        value = self._soft("nvmlSystemGetDriverVersion", self.nvml.nvmlSystemGetDriverVersion)
        return None if value is None else _text(value)

    def cuda_version(self) -> str | None:
        fn = getattr(self.nvml, "nvmlSystemGetCudaDriverVersion", None)
        if fn is None:
            return None
        value = self._soft("nvmlSystemGetCudaDriverVersion", fn)
        if not isinstance(value, int) or value <= 0:
            return None
        return f"{value // 1000}.{(value % 1000) // 10}"

    def device_count(self) -> int:
        return int(self._hard("nvmlDeviceGetCount", self.nvml.nvmlDeviceGetCount))

    def read(self, *, with_processes: bool = True) -> Reading:
        nvml = self.nvml
        gpus: list[GpuReading] = []
        for index in range(self.device_count()):
            handle = self._hard(
                f"nvmlDeviceGetHandleByIndex({index})", nvml.nvmlDeviceGetHandleByIndex, index
            )
            name = self._soft("nvmlDeviceGetName", nvml.nvmlDeviceGetName, handle)
            uuid = self._soft("nvmlDeviceGetUUID", nvml.nvmlDeviceGetUUID, handle)
            gpu = GpuReading(
                index=index,
                name="" if name is None else _text(name),
                uuid="" if uuid is None else _text(uuid),
            )
            memory = self._soft("nvmlDeviceGetMemoryInfo", nvml.nvmlDeviceGetMemoryInfo, handle)
            if memory is not None:
                gpu.memory_total_bytes = int(memory.total)
                gpu.memory_used_bytes = int(memory.used)
            util = self._soft(
                "nvmlDeviceGetUtilizationRates", nvml.nvmlDeviceGetUtilizationRates, handle
            )
            if util is not None:
                gpu.utilization_percent = float(util.gpu)
            temp = self._soft(
                "nvmlDeviceGetTemperature",
                nvml.nvmlDeviceGetTemperature,
                handle,
                getattr(nvml, "NVML_TEMPERATURE_GPU", NVML_TEMPERATURE_GPU),
            )
            if temp is not None:
                gpu.temperature_celsius = float(temp)
            milliwatts = self._soft("nvmlDeviceGetPowerUsage", nvml.nvmlDeviceGetPowerUsage, handle)
            if milliwatts is not None:
                gpu.power_watts = float(milliwatts) / 1000.0
            if with_processes:
                gpu.processes = self._processes(handle)
            gpus.append(gpu)
        return Reading(
            driver_version=self.driver_version(), cuda_version=self.cuda_version(), gpus=gpus
        )

    def _processes(self, handle: Any) -> list[ProcessReading]:
        nvml = self.nvml
        seen: dict[int, ProcessReading] = {}
        for fn_name in (
            "nvmlDeviceGetComputeRunningProcesses",
            "nvmlDeviceGetGraphicsRunningProcesses",
        ):
            fn = getattr(nvml, fn_name, None)
            if fn is None:
                continue
            infos = self._soft(fn_name, fn, handle) or []
            for info in infos:
                pid = int(info.pid)
                used = getattr(info, "usedGpuMemory", None)
                used_bytes = int(used) if isinstance(used, int) else None
                if pid in seen:
                    if used_bytes is not None and seen[pid].used_memory_bytes is None:
                        seen[pid].used_memory_bytes = used_bytes
                    continue
                seen[pid] = ProcessReading(pid, self._process_name(pid), used_bytes)
        return sorted(seen.values(), key=lambda p: p.pid)

    def _process_name(self, pid: int) -> str:
        fn = getattr(self.nvml, "nvmlSystemGetProcessName", None)
        name: object = None
        if fn is not None:
            try:
                name = fn(pid)
            except self.error_class as exc:
                log.debug("nvmlSystemGetProcessName(%s): %s", pid, _text(exc))
        if name:
            # NVML gives the full path of the executable; the basename is the useful label.
            return _text(name).rsplit("/", 1)[-1]
        try:
            with open(f"/proc/{pid}/comm", encoding="utf-8") as comm:
                return comm.read().strip()
        except OSError:
            return ""
