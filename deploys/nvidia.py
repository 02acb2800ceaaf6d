"""NVIDIA driver (+ optional CUDA toolkit) from NVIDIA's CUDA repository, branch pinned.

The decisions are a pure function, :func:`plan` (deploys/_nvidia_plan.py: facts + config ->
steps), unit-tested per distribution; :func:`apply` here turns the steps into pyinfra operations:

preflight  GPU on the PCI bus (lspci), Secure Boot (mokutil: the DKMS-built modules would not
           load -> a clear stop), a supported distribution and architecture, kernel headers
           (installed if missing), a loaded driver no NVIDIA package installed (a .run install
           -> a clear stop); ``driver_source: preinstalled`` keeps such a driver and only checks
           its branch
configure  the apt pin to the driver branch (before any driver package is installed), nouveau
           blacklisted (initramfs rebuilt when that changes)
install    the repository trusted by its signing key's pinned fingerprint
           (citadel.components.nvidia.REPO_KEYS): unless the host's keyring already holds exactly
           that key, the host downloads the repository's public key, gpg checks its fingerprint
           (a mismatch stops the host, nothing is trusted) and writes it as the keyring the
           deb822 source is signed-by; an installed cuda-keyring package is purged (its source
           would clash); apt update when the key or source changed; linux-headers-<kernel>, the
           driver meta package (open or proprietary kernel modules by GPU generation), the CUDA
           toolkit when configured. Nothing is downloaded on the controller.
activate   nvidia-persistenced; then the reboot policy: the loaded module's version (from
           /proc/driver/nvidia/version) against the installed package -> reboot and wait
           (``reboot: allowed``; pyinfra's server.reboot checks the uptime went down) or a loud
           "REBOOT REQUIRED" for that host (``reboot: never``).
"""

from __future__ import annotations

import io
from typing import Any

from pyinfra import host, logger
from pyinfra.api import FactBase
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.server import Arch, LinuxDistribution
from pyinfra.operations import apt, files, python, server, systemd
from pyinfra.operations.util import any_changed

from citadel.components.nvidia import (
    BLACKLIST_FILE,
    REPO_KEYRING,
    REPO_SOURCES,
    Config,
    repo_sources,
    repo_url,
)
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._files import put_files
from deploys._nvidia_plan import Facts, Plan, plan
from deploys.facts.gpu import GpuInventory, NvidiaPreflight

# The public key as downloaded, before its fingerprint is checked (removed either way).
STAGED_KEY = f"{REPO_KEYRING}.download"


class KeyringFingerprints(FactBase[list[str]]):
    """The primary-key fingerprints in an apt keyring file (``[]`` when it is missing)."""

    def requires_command(self, *args: Any, **kwargs: Any) -> str:
        return "gpg"

    def command(self, path: str) -> str:
        return (
            f"if [ -f {path} ]; then gpg --batch --show-keys --with-colons {path} 2>/dev/null "
            '| awk -F: \'$1=="pub"{want=1; next} $1=="fpr" && want {print $10; want=0}\'; fi'
        )

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]


def key_url(p: Plan) -> str:
    assert p.repo_key is not None
    return repo_url(p.repo, p.repo_arch) + p.repo_key.file


def trust_key_command(url: str, fingerprint: str, staged: str, keyring: str) -> str:
    """Check the downloaded key's fingerprint with gpg; only an exact single-key match becomes
    the keyring. Any other key (or several) is removed and stops the host."""
    primaries = (
        f"gpg --batch --show-keys --with-colons {staged} 2>/dev/null | awk -F: "
        '\'$1=="pub"{n++; want=1; next} $1=="fpr" && want {print $10; want=0} '
        'END{if (n != 1) print "(" n+0 " primary keys)"}\''
    )
    return (
        f'got="$({primaries})"; '
        f'if [ "$got" != {fingerprint} ]; then '
        f'echo "nvidia: the key from {url} is $got, pinned {fingerprint}: not trusted" >&2; '
        f"rm -f {staged}; exit 1; fi; "
        f"gpg --batch --yes --dearmor -o {keyring}.tmp {staged} && chmod 0644 {keyring}.tmp && "
        f"mv -f {keyring}.tmp {keyring} && rm -f {staged}"
    )


def gather() -> Facts:
    distro = host.get_fact(LinuxDistribution) or {}
    meta = distro.get("release_meta") or {}
    return Facts(
        distro=str(meta.get("ID") or distro.get("name") or "").lower(),
        release=str(meta.get("VERSION_ID") or ""),
        arch=str(host.get_fact(Arch) or ""),
        preflight=host.get_fact(NvidiaPreflight) or {},
    )


def _required(message: str) -> None:
    logger.warning(f"[{host.name}] nvidia: REBOOT REQUIRED: {message}")


@deploy("nvidia: preflight")
def preflight(ctx: DeployContext, cfg: Config, p: Plan) -> bool:
    for note in p.notes:
        logger.info(f"[{ctx.host.name}] nvidia: {note}")
    if p.stop is None:
        return True
    logger.error(f"[{ctx.host.name}] nvidia: stopped: {p.stop}")
    server.shell(
        name="nvidia preflight failed (nothing was installed)",
        commands=[f"echo {_quote('nvidia: ' + p.stop)} >&2; exit 1"],
    )
    return False


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


@deploy("nvidia: configure")
def configure(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    return put_files(ctx.files("nvidia"))


@deploy("nvidia: repository")
def repository(ctx: DeployContext, cfg: Config, p: Plan) -> None:
    assert p.repo_key is not None
    changed: list[OperationMeta] = []
    if p.purge_keyring_package:
        changed.append(
            apt.packages(
                name="Purge cuda-keyring (trusted by the pinned key instead)",
                packages=["cuda-keyring"],
                present=False,
                purge=True,
            )
        )
    fingerprint = p.repo_key.fingerprint
    if host.get_fact(KeyringFingerprints, path=REPO_KEYRING) != [fingerprint]:
        url = key_url(p)
        apt.packages(
            name="Tools to fetch and check the repository key",
            packages=["ca-certificates", "curl", "gpg"],
        )
        files.directory(name="Directory /etc/apt/keyrings", path="/etc/apt/keyrings", mode="0755")
        files.download(
            name=f"Fetch NVIDIA's repository key ({p.repo_key.file})",
            src=url,
            dest=STAGED_KEY,
            mode="0600",
            force=True,
        )
        changed.append(
            server.shell(
                name=f"Trust NVIDIA's repository key only if its fingerprint is {fingerprint}",
                commands=[trust_key_command(url, fingerprint, STAGED_KEY, REPO_KEYRING)],
            )
        )
    changed.append(
        files.put(
            name=f"NVIDIA CUDA apt source ({p.repo}/{p.repo_arch}, signed-by the pinned key)",
            src=io.StringIO(repo_sources(p.repo, p.repo_arch)),
            dest=REPO_SOURCES,
            mode="0644",
        )
    )
    apt.update(
        name="Refresh apt (NVIDIA repository key or source changed)", _if=any_changed(*changed)
    )


@deploy("nvidia: install")
def install(ctx: DeployContext, cfg: Config, p: Plan) -> OperationMeta:
    apt.packages(name=f"Kernel headers ({p.headers})", packages=[p.headers])
    driver = apt.packages(
        name=f"NVIDIA driver {cfg.driver_branch} ({p.driver})", packages=[p.driver]
    )
    if p.toolkit:
        apt.packages(name=f"CUDA toolkit ({p.toolkit})", packages=[p.toolkit])
    return driver


@deploy("nvidia: activate")
def activate(
    ctx: DeployContext,
    cfg: Config,
    p: Plan,
    written: list[OperationMeta],
    driver: OperationMeta,
) -> None:
    blacklist = dict(zip([f.spec.dest for f in ctx.files("nvidia")], written, strict=True))[
        BLACKLIST_FILE
    ]
    server.shell(
        name="Rebuild the initramfs (nouveau blacklisted)",
        commands=["update-initramfs -u"],
        _if=blacklist.did_change,
    )
    systemd.service(
        name="Run nvidia-persistenced", service="nvidia-persistenced", running=True, enabled=True
    )
    check = (
        f"grep -q ' {cfg.driver_branch}\\.' /proc/driver/nvidia/version || "
        f"{{ echo 'nvidia: after the reboot the loaded driver is not branch "
        f"{cfg.driver_branch}' >&2; cat /proc/driver/nvidia/version >&2; exit 1; }}"
    )
    if p.reboot_now != "none":
        reason = "the loaded nvidia module differs from the installed driver"
        if p.reboot_now == "reboot":
            server.reboot(name=f"Reboot ({reason})", delay=30, reboot_timeout=900)
            server.shell(name="Check the loaded driver after the reboot", commands=[check])
        else:
            logger.warning(f"[{ctx.host.name}] nvidia: REBOOT REQUIRED: {reason} (reboot: never)")
            python.call(name="REBOOT REQUIRED (reboot: never)", function=_required, message=reason)
        return
    reason = "the driver was installed or changed in this run"
    if p.reboot_after_install == "reboot":
        rebooted = server.reboot(
            name=f"Reboot ({reason})", delay=30, reboot_timeout=900, _if=driver.did_change
        )
        server.shell(
            name="Check the loaded driver after the reboot",
            commands=[check],
            _if=rebooted.did_change,
        )
    else:
        python.call(
            name="REBOOT REQUIRED if the driver changed (reboot: never)",
            function=_required,
            message=reason,
            _if=driver.did_change,
        )


def apply(ctx: DeployContext, cfg: Config) -> None:
    facts = gather()
    p = plan(facts, cfg)
    if not preflight(ctx, cfg, p):
        return
    if not p.preinstalled:
        install_and_activate(ctx, cfg, p)
    inventory = host.get_fact(GpuInventory)
    if inventory and inventory.get("count"):
        logger.info(
            f"[{ctx.host.name}] nvidia: {inventory['count']} GPU(s) "
            f"{', '.join(inventory['names'])}, driver {inventory['driver_version']}"
        )


def install_and_activate(ctx: DeployContext, cfg: Config, p: Plan) -> None:
    written = configure(ctx, cfg)
    repository(ctx, cfg, p)
    driver = install(ctx, cfg, p)
    activate(ctx, cfg, p=p, written=written, driver=driver)
