"""A fake of nvidia-ml-py's ``pynvml`` module: the same functions, data from the test.

Errors are real ``pynvml.NVMLError`` instances (``pynvml.NVMLError(code)`` builds the matching
subclass, e.g. ``NVMLError_NotSupported``), so the exporter's error handling is exercised as it
runs against a real driver.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml

# the exporter's source tree (tests run it from there, see conftest.py)
EXPORTER_SRC = Path(__file__).resolve().parents[2] / "services" / "gpu_exporter"

NVMLError = pynvml.NVMLError
NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU


def error(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)


@dataclass
class FakeGpu:
    name: str
    uuid: str
    total: int
    used: int
    util: int
    temp: int
    milliwatts: int
    processes: list[tuple[int, int | None]] = field(default_factory=list)


class FakeNvml:
    NVMLError = pynvml.NVMLError
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU

    def __init__(self, gpus: list[FakeGpu], *, driver: str = "550.54.15", cuda: int = 12040):
        self.gpus = gpus
        self.driver = driver
        self.cuda = cuda
        self.process_names: dict[int, bytes] = {}
        self.calls: list[str] = []
        # name of a function -> the error it raises (any index), or (index, error)
        self.fail: dict[str, Any] = {}
        self.initialised = False

    def _check(self, fn: str, index: int | None = None) -> None:
        self.calls.append(fn)
        err = self.fail.get(fn)
        if err is None:
            return
        if isinstance(err, tuple):
            if index == err[0]:
                raise err[1]
            return
        raise err

    def nvmlInit(self) -> None:
        self._check("nvmlInit")
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self._check("nvmlShutdown")
        self.initialised = False

    def _need_init(self) -> None:
        if not self.initialised:
            raise error(pynvml.NVML_ERROR_UNINITIALIZED)

    def nvmlSystemGetDriverVersion(self) -> str:
        self._need_init()
        self._check("nvmlSystemGetDriverVersion")
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._need_init()
        self._check("nvmlSystemGetCudaDriverVersion")
        return self.cuda

    def nvmlDeviceGetCount(self) -> int:
        self._need_init()
        self._check("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._need_init()
        self._check("nvmlDeviceGetHandleByIndex", index)
        if not 0 <= index < len(self.gpus):
            raise error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:
        self._check("nvmlDeviceGetName", handle)
        return self.gpus[handle].name

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        self._check("nvmlDeviceGetUUID", handle)
        return self.gpus[handle].uuid

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        self._check("nvmlDeviceGetMemoryInfo", handle)
        gpu = self.gpus[handle]
        return SimpleNamespace(total=gpu.total, used=gpu.used, free=gpu.total - gpu.used)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        self._check("nvmlDeviceGetUtilizationRates", handle)
        return SimpleNamespace(gpu=self.gpus[handle].util, memory=0)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        self._check("nvmlDeviceGetTemperature", handle)
        return self.gpus[handle].temp

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        self._check("nvmlDeviceGetPowerUsage", handle)
        return self.gpus[handle].milliwatts

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[Any]:
        self._check("nvmlDeviceGetComputeRunningProcesses", handle)
        return [
            SimpleNamespace(pid=pid, usedGpuMemory=used)
            for pid, used in self.gpus[handle].processes
        ]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: int) -> list[Any]:
        self._check("nvmlDeviceGetGraphicsRunningProcesses", handle)
        return []

    def nvmlSystemGetProcessName(self, pid: int) -> bytes:
        self._check("nvmlSystemGetProcessName")
        if pid not in self.process_names:
            raise error(pynvml.NVML_ERROR_NOT_FOUND)
        return self.process_names[pid]


GIB = 1024**3


def two_gpus() -> FakeNvml:
    nvml = FakeNvml(
        [
            FakeGpu(
                name="NVIDIA H100 80GB HBM3",
                uuid="GPU-00000000-0000-0000-0000-000000000000",
                total=80 * GIB,
                used=40 * GIB,
                util=87,
                temp=61,
                milliwatts=312_500,
                processes=[(4242, 38 * GIB), (4343, None)],
            ),
            FakeGpu(
                name="NVIDIA H100 80GB HBM3",
                uuid="GPU-11111111-1111-1111-1111-111111111111",
                total=80 * GIB,
                used=1 * GIB,
                util=0,
                temp=35,
                milliwatts=70_000,
                processes=[(5151, 512 * 1024**2)],
            ),
        ]
    )
    nvml.process_names = {4242: b"/opt/vllm/bin/python3", 5151: b"ollama"}
    return nvml
