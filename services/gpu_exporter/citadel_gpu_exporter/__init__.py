"""citadel-gpu-exporter: NVIDIA GPU metrics for Prometheus, read through NVML at scrape time.

Standalone: installed alone on GPU hosts; imports neither ``citadel`` nor pyinfra.
"""

__version__ = "0.1.0"
