"""``citadel-gpu-exporter --listen ADDR --port 9835``"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType

from prometheus_client import CollectorRegistry
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from . import __version__
from .collector import DEFAULT_RETRY_INTERVAL, GpuCollector
from .server import make_app, make_http_server

log = logging.getLogger("citadel_gpu_exporter")

DEFAULT_PORT = 9835


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="citadel-gpu-exporter",
        description="Prometheus exporter for NVIDIA GPUs (NVML read at scrape time).",
    )
    parser.add_argument("--listen", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (default 9835)")
    parser.add_argument(
        "--retry-interval",
        type=float,
        default=DEFAULT_RETRY_INTERVAL,
        help="seconds between nvmlInit retries while NVML is unavailable (default 60)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def build_registry(collector: GpuCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    collector = GpuCollector(retry_interval=args.retry_interval)
    registry = build_registry(collector)
    # One read at start-up so the log says at once whether NVML works here.
    list(collector.collect())
    server = make_http_server(make_app(registry), args.listen, args.port)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    log.info("serving /metrics on %s port %s", host, port)
    stop.wait()
    log.info("shutting down")
    server.shutdown()
    server.server_close()
    collector.close()
    return 0
