"""``citadel-gateway --config FILE``: validate the config, then run uvicorn (uvloop + httptools).

Exit status 2 and one line ``FILE: field.path: problem`` on a bad config.
With ``listen.workers > 1`` the parent validates the config on SIGHUP and forwards the signal to
every worker, each of which reloads in place (a bad file is logged and the old config kept).
Under systemd socket activation (``citadel-gateway.socket``) it serves the socket it is handed
instead of binding its own (``sdlisten``); a stop lets the requests in flight finish for up to
``listen.drain_s`` while new connections wait in that socket for the next process.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from .config import ENV_CONFIG, ConfigError, load_config

log = logging.getLogger("citadel_gateway")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="citadel-gateway", description="citadel API gateway")
    ap.add_argument(
        "--config", default=os.environ.get(ENV_CONFIG), help=f"YAML file (or ${ENV_CONFIG})"
    )
    ap.add_argument("--check", action="store_true", help="validate the config and exit")
    ap.add_argument(
        "--check-keys",
        metavar="PEM",
        help="check a public key file (one key or several: a rotation's) and exit",
    )
    args = ap.parse_args(argv)
    if args.check_keys:
        return _check_keys(args.check_keys)
    if not args.config:
        print(f"citadel-gateway: no config: pass --config or set {ENV_CONFIG}", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print("; ".join(exc.lines), file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.config}: ok")
        return 0
    path = str(Path(args.config).resolve())
    os.environ[ENV_CONFIG] = path
    workers = cfg.listen.workers
    mp_dir: str | None = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # must be set before any process imports prometheus_client
        mp_dir = cfg.metrics.multiproc_dir or tempfile.mkdtemp(prefix="citadel-gateway-prom-")
        shutil.rmtree(mp_dir, ignore_errors=True)
        os.makedirs(mp_dir, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = mp_dir

    import uvicorn
    from uvicorn.supervisors.multiprocess import Multiprocess

    from . import logs, sdlisten
    from .httpproto import GatewayHttpToolsProtocol

    logs.setup(cfg.logging.level)
    sockets = sdlisten.inherited_sockets()
    if sockets:
        log.info(
            "serving the sockets systemd passed: %s", ", ".join(map(sdlisten.describe, sockets))
        )
    config = uvicorn.Config(
        "citadel_gateway.app:create_app",
        factory=True,
        host=cfg.listen.host,
        port=cfg.listen.port,
        uds=cfg.listen.unix_socket,
        workers=workers,
        loop="uvloop",
        http=GatewayHttpToolsProtocol,  # uvicorn's httptools, its 400s in our error format
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=cfg.listen.drain_s,
        timeout_keep_alive=5,  # > nginx's upstream keepalive_timeout (4 s): nginx closes first
    )

    class Supervisor(Multiprocess):
        def handle_hup(self) -> None:
            try:
                load_config(path)
            except ConfigError as exc:
                log.error("config reload failed, keeping the running config: %s", exc)
                return
            for proc in self.processes:
                if proc.pid:
                    os.kill(proc.pid, signal.SIGHUP)

    try:
        if workers > 1:
            Supervisor(config, sockets=sockets or [config.bind_socket()]).run()
        else:
            uvicorn.Server(config).run(sockets=sockets or None)
    finally:
        if mp_dir and not cfg.metrics.multiproc_dir:
            shutil.rmtree(mp_dir, ignore_errors=True)
    return 0


def _check_keys(path: str) -> int:
    """Every key of the file is one the gateway verifies with (RSA >= 2048, EC P-256)."""
    from .auth import load_public_keys

    try:
        keys = load_public_keys(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 2
    print(f"{path}: ok ({len(keys)} key{'s' if len(keys) != 1 else ''}: {', '.join(keys)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
