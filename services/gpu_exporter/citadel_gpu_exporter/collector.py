"""The Prometheus collector: NVML is read on every scrape, never in the background.

A host with no GPU, no driver or no NVML library exports ``nvidia_gpu_up 0`` and keeps serving.
The reason is logged once (and again only when it changes); ``nvmlInit`` is retried at most every
``retry_interval`` seconds, so a driver installed later is picked up without a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from .nvml import NvmlSession, NvmlUnavailable, Reading, load_pynvml

log = logging.getLogger(__name__)

GPU_LABELS = ["gpu", "uuid", "name"]
PROCESS_LABELS = ["gpu", "uuid", "name", "pid", "process"]
DEFAULT_RETRY_INTERVAL = 60.0


class GpuCollector(Collector):
    """Custom collector; ``nvml`` is the ``pynvml`` module or a fake with the same functions."""

    def __init__(
        self,
        nvml: Any = None,
        *,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._nvml = nvml
        self._retry_interval = retry_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._session: NvmlSession | None = None
        self._next_init_at: float | None = None  # None: try at the next scrape
        self._reason: str | None = None  # last logged failure reason; None while up

    # -- state ---------------------------------------------------------------------------
    @property
    def reason(self) -> str | None:
        """Why NVML is unavailable (``None`` while it works)."""
        return self._reason

    def _report_down(self, reason: str) -> None:
        if reason != self._reason:
            log.warning("NVML unavailable, exporting nvidia_gpu_up 0: %s", reason)
        self._reason = reason

    def _report_up(self) -> None:
        if self._reason is not None:
            log.info("NVML available again")
        self._reason = None

    def _ensure_session(self) -> NvmlSession | None:
        if self._session is not None and self._session.is_open:
            return self._session
        now = self._clock()
        if self._next_init_at is not None and now < self._next_init_at:
            return None
        try:
            nvml = self._nvml if self._nvml is not None else load_pynvml()
            session = NvmlSession(nvml)
            session.open()
        except NvmlUnavailable as exc:
            self._next_init_at = now + self._retry_interval
            self._report_down(str(exc))
            return None
        self._session = session
        self._next_init_at = None
        return session

    def _read(self) -> Reading | None:
        with self._lock:
            session = self._ensure_session()
            if session is None:
                return None
            try:
                reading = session.read()
            except NvmlUnavailable as exc:
                # NVML broke mid-scrape (GPU lost, driver unloaded): drop this reading, close the
                # session and re-initialise at the next scrape.
                session.close()
                self._session = None
                self._next_init_at = None
                self._report_down(str(exc))
                return None
            self._report_up()
            return reading

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    # -- prometheus_client ---------------------------------------------------------------
    def describe(self) -> Iterator[Metric]:
        # Returning no descriptions keeps registration from calling collect() (and NVML).
        return iter(())

    def collect(self) -> Iterator[Metric]:
        reading = self._read()
        up = GaugeMetricFamily("nvidia_gpu_up", "1 when NVML could be read at this scrape, else 0")
        up.add_metric([], 0.0 if reading is None else 1.0)
        families: list[Metric] = [up]
        if reading is not None:
            families.extend(self._families(reading))
        return iter(families)

    @staticmethod
    def _families(reading: Reading) -> list[Metric]:
        count = GaugeMetricFamily("nvidia_gpu_count", "Number of NVIDIA GPUs visible to NVML")
        count.add_metric([], float(len(reading.gpus)))
        driver = InfoMetricFamily(
            "nvidia_gpu_driver",
            "NVIDIA driver and the CUDA version it supports",
            value={
                "driver_version": reading.driver_version or "",
                "cuda_version": reading.cuda_version or "",
            },
        )
        util = GaugeMetricFamily(
            "nvidia_gpu_utilization_percentage",
            "Percent of time a kernel was running on the GPU over the last sample period",
            labels=GPU_LABELS,
        )
        used = GaugeMetricFamily(
            "nvidia_gpu_memory_used_bytes", "GPU memory in use", labels=GPU_LABELS
        )
        total = GaugeMetricFamily(
            "nvidia_gpu_memory_total_bytes", "GPU memory installed", labels=GPU_LABELS
        )
        temp = GaugeMetricFamily(
            "nvidia_gpu_temperature_celsius", "GPU core temperature", labels=GPU_LABELS
        )
        power = GaugeMetricFamily("nvidia_gpu_power_watts", "GPU power draw", labels=GPU_LABELS)
        procs = GaugeMetricFamily(
            "ai_model_memory_usage_bytes",
            "GPU memory used by one process (a model server) on one GPU",
            labels=PROCESS_LABELS,
        )
        for gpu in reading.gpus:
            labels = [str(gpu.index), gpu.uuid, gpu.name]
            for family, value in (
                (util, gpu.utilization_percent),
                (used, gpu.memory_used_bytes),
                (total, gpu.memory_total_bytes),
                (temp, gpu.temperature_celsius),
                (power, gpu.power_watts),
            ):
                if value is not None:
                    family.add_metric(labels, float(value))
            for proc in gpu.processes:
                if proc.used_memory_bytes is not None:
                    procs.add_metric(
                        [*labels, str(proc.pid), proc.name], float(proc.used_memory_bytes)
                    )
        return [count, driver, util, used, total, temp, power, procs]
