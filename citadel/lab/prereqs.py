"""What the lab needs of the machine it runs on, checked (or set) before any host boots: root,
the tools it calls (installed from Debian when missing), overlayfs, inotify limits the hosts'
systemd needs, and a DNS server the hosts can reach."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from citadel.lab import render, system
from citadel.lab.config import (
    LabConfig,
    LabError,
)

PREREQS = {
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "nft": "nftables",
    "ip": "iproute2",
    "ssh-keygen": "openssh-client",
    "ssh": "openssh-client",
}


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError(
            "must run as root (the lab mounts overlays, boots containers, makes a bridge)"
        )


def ensure_prereqs(log: system.Log) -> None:
    missing = sorted({pkg for cmd, pkg in PREREQS.items() if shutil.which(cmd) is None})
    if not missing:
        return
    log(f"installing prerequisites: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *missing]):
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
            raise LabError(f"`{' '.join(argv[:3])}` failed: {' '.join(tail)}")


def check_overlay() -> None:
    def has() -> bool:
        try:
            return "overlay" in Path("/proc/filesystems").read_text().split()
        except OSError:
            return False

    if not has():
        system.run(["modprobe", "overlay"], check=False)
    if not has():
        raise LabError("kernel feature missing: overlay filesystem (modprobe overlay failed)")


# Every booted systemd uses inotify instances; the kernel default (128 per user) runs out
# at about 20 hosts ("Failed to allocate manager object: Too many open files").
INOTIFY_MINIMUMS = {
    "/proc/sys/fs/inotify/max_user_instances": 8192,
    "/proc/sys/fs/inotify/max_user_watches": 524288,
}


def raise_inotify_limits() -> None:
    for path, minimum in INOTIFY_MINIMUMS.items():
        try:
            if int(Path(path).read_text()) < minimum:
                Path(path).write_text(f"{minimum}\n")
        except (OSError, ValueError):
            pass


def machine_dns(config: LabConfig) -> list[str]:
    if config.dns:
        return list(config.dns)
    try:
        text = Path("/etc/resolv.conf").read_text()
    except OSError:
        text = ""
    dns = render.parse_resolv_conf(text)
    if not dns:
        raise LabError(
            "no usable resolver in /etc/resolv.conf (loopback resolvers are unreachable "
            "from the lab hosts); set LabConfig.dns"
        )
    return dns
