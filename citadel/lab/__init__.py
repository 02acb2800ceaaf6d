"""The lab: the whole cluster as real systemd hosts on one machine (systemd-nspawn).

citadel lab up | status | ssh HOST [-- CMD...] | down | destroy | stop HOST | start HOST
"""

from __future__ import annotations

from citadel.lab.cli import main
from citadel.lab.config import LabConfig, LabError, LabHost, LabPaths
from citadel.lab.ops import destroy, down, ssh, start_host, status, stop_host, up


def lab_paths(config: LabConfig | None = None) -> LabPaths:
    """State dir, ssh private key, known_hosts, secrets dir (env CITADEL_LAB_DIR overrides)."""
    return (config if config is not None else LabConfig.from_env()).paths()


__all__ = [
    "LabConfig",
    "LabError",
    "LabHost",
    "LabPaths",
    "destroy",
    "down",
    "lab_paths",
    "main",
    "ssh",
    "start_host",
    "status",
    "stop_host",
    "up",
]
