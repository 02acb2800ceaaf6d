"""The cached Debian base tree: debootstrap once, configure, rename into place atomically."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from citadel.lab import render, system
from citadel.lab.config import LabConfig, LabError

# Bump when the base configuration below changes: older cached trees are then rebuilt.
BASE_VERSION = "3"
MARKER = ".citadel-base"


def marker_text(config: LabConfig) -> str:
    return (
        f"version={BASE_VERSION}\nsuite={config.suite}\nmirror={config.mirror}\n"
        f"packages={','.join(render.BASE_PACKAGES)}\n"
    )


def is_complete(base: Path, config: LabConfig) -> bool:
    """Only a tree carrying our marker counts as cached (a half-built one never has it)."""
    try:
        return (base / MARKER).read_text() == marker_text(config)
    except OSError:
        return False


def ensure_base(config: LabConfig, log: system.Log) -> Path:
    paths = config.paths()
    base = paths.base_tree
    if is_complete(base, config):
        return base
    lab_cache = base.parent
    lab_cache.mkdir(parents=True, exist_ok=True)
    with system.locked(lab_cache / ".base.lock"):
        if is_complete(base, config):
            return base
        # Leftovers of a killed build never count: remove them (we hold the lock).
        for stale in lab_cache.glob(f".{base.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = lab_cache / f".{base.name}.tmp-{os.getpid()}"
        log(f"building the {config.suite} base tree (debootstrap, about 1-2 minutes)")
        t0 = time.monotonic()
        debs = paths.cache_dir / "lab" / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        try:
            res = system.run(render.debootstrap_argv(config, tmp, debs), check=False, capture=True)
            if res.returncode != 0:
                tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-5:])
                raise LabError(f"debootstrap failed (exit {res.returncode}): {tail}")
            configure_tree(tmp, config)
            (tmp / MARKER).write_text(marker_text(config))
            if base.exists():
                if system.tree_in_use(base):
                    raise LabError(
                        f"outdated base tree {base} is in use by a running lab; "
                        "run `citadel lab down` first"
                    )
                old = lab_cache / f".{base.name}.old-{os.getpid()}"
                base.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            tmp.rename(base)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        log(f"base tree ready in {time.monotonic() - t0:.0f} s: {base}")
    return base


def configure_tree(root: Path, config: LabConfig) -> None:
    def chroot(*args: str) -> None:
        system.run(["chroot", str(root), *args], capture=True)

    chroot("systemctl", "enable", *render.ENABLED_UNITS)
    chroot("systemctl", "mask", *render.MASKED_UNITS)
    # Background apt runs would take the dpkg lock in the middle of a converge.
    chroot("systemctl", "disable", "apt-daily.timer", "apt-daily-upgrade.timer")

    # Host keys are per host (made by the lab, known_hosts pinned): none in the shared base.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    dropin = root / "etc/ssh/sshd_config.d/10-citadel-lab.conf"
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text(render.sshd_dropin())

    # The machine's CA bundle (TLS to package registries goes through its egress CA); local CAs
    # also go to /usr/local/share so a later update-ca-certificates inside a host keeps them.
    local_src = Path("/usr/local/share/ca-certificates")
    local_dst = root / "usr/local/share/ca-certificates"
    if local_src.is_dir():
        local_dst.mkdir(parents=True, exist_ok=True)
        for crt in local_src.glob("*.crt"):
            shutil.copy2(crt, local_dst / crt.name)
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if bundle.is_file():
        dst = root / "etc/ssl/certs/ca-certificates.crt"
        if dst.is_symlink():
            dst.unlink()
        shutil.copyfile(bundle, dst)

    sources = root / "etc/apt/sources.list"
    if sources.exists():
        sources.unlink()
    (root / "etc/apt/sources.list.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/apt/sources.list.d/debian.sources").write_text(render.apt_sources(config))

    # Per-host identity is written into each host's overlay; the base carries none.
    (root / "etc/machine-id").write_text("")
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.exists() and not dbus_id.is_symlink():
        dbus_id.unlink()
    (root / "etc/hostname").write_text("localhost\n")
    chroot("apt-get", "clean")
