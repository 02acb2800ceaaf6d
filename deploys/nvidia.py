"""NVIDIA driver (+ optional CUDA toolkit) from NVIDIA's CUDA repository, branch pinned.

The decisions are a pure function, :func:`plan` (facts + config -> steps), unit-tested per
distribution; :func:`apply` turns the steps into pyinfra operations:

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
from dataclasses import dataclass, field
from typing import Any, Literal

from pyinfra import host, logger
from pyinfra.api import FactBase
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.server import Arch, LinuxDistribution
from pyinfra.operations import apt, files, python, server, systemd
from pyinfra.operations.util import any_changed

from citadel.components.nvidia import (
    BLACKLIST_FILE,
    MISSING_REPOS,
    REPO_ARCH,
    REPO_KEYRING,
    REPO_KEYS,
    REPO_SOURCES,
    Config,
    RepoKey,
    repo_sources,
    repo_url,
)
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._files import put_files
from deploys.facts.gpu import GpuInventory, NvidiaPreflight

# (distribution id, VERSION_ID) -> NVIDIA's repository name
REPOS = {
    ("ubuntu", "22.04"): "ubuntu2204",
    ("ubuntu", "24.04"): "ubuntu2404",
    ("debian", "12"): "debian12",
    ("debian", "13"): "debian13",
}
# The public key as downloaded, before its fingerprint is checked (removed either way).
STAGED_KEY = f"{REPO_KEYRING}.download"

Reboot = Literal["none", "reboot", "required"]


@dataclass(frozen=True)
class Facts:
    """What the plan needs to know about a host (from LinuxDistribution, Arch, NvidiaPreflight)."""

    distro: str  # "ubuntu" / "debian"
    release: str  # "22.04" / "12"
    arch: str  # uname -m
    preflight: dict[str, Any]

    @property
    def repo(self) -> str | None:
        return REPOS.get((self.distro, self.release))

    def installed_version(self, package: str) -> str | None:
        return (self.preflight.get("installed") or {}).get(package)


@dataclass(frozen=True)
class Plan:
    stop: str | None = None  # a preflight failure: the reason, nothing else is done
    preinstalled: bool = False  # driver_source: preinstalled and its branch checked
    repo: str = ""
    repo_arch: str = ""
    repo_key: RepoKey | None = None  # the signing key the repository is trusted by
    purge_keyring_package: bool = False  # a cuda-keyring package is installed: purge it
    headers: str = ""  # linux-headers-<kernel>
    driver: str = ""
    toolkit: str | None = None
    reboot_now: Reboot = "none"  # decided from the facts (a previous run's install)
    reboot_after_install: Reboot = "none"  # applies when this run's driver install changes
    notes: list[str] = field(default_factory=list)


def upstream(version: str | None) -> str | None:
    """dpkg ``550.54.15-1`` (or ``1:550...``) -> ``550.54.15``."""
    if not version:
        return None
    return version.split(":", 1)[-1].split("-", 1)[0]


def reboot_decision(loaded: str | None, installed: str | None, policy: str) -> Reboot:
    """The reboot table. ``loaded``: /proc/driver/nvidia/version; ``installed``: the package.

    nothing installed              -> none (an install in this run decides at execution time)
    installed == loaded            -> none
    installed, none/other loaded   -> reboot (policy allowed) / required (policy never)
    """
    want = upstream(installed)
    if want is None or want == loaded:
        return "none"
    return "reboot" if policy == "allowed" else "required"


def plan(facts: Facts, cfg: Config) -> Plan:
    pre = facts.preflight
    if facts.repo is None:
        return Plan(
            stop=f"unsupported distribution {facts.distro} {facts.release} "
            f"(NVIDIA repositories known here: {', '.join(sorted(REPOS.values()))})"
        )
    if facts.arch not in REPO_ARCH:
        return Plan(stop=f"unsupported architecture {facts.arch}")
    if (facts.repo, REPO_ARCH[facts.arch]) in MISSING_REPOS:
        return Plan(
            stop=f"NVIDIA publishes no {facts.repo}/{REPO_ARCH[facts.arch]} CUDA repository"
        )
    if cfg.expected_gpus > 0 and pre.get("lspci") and pre.get("gpus_on_bus", 0) == 0:
        return Plan(
            stop=f"no NVIDIA GPU on the PCI bus (lspci -d 10de:), the inventory expects "
            f"{cfg.expected_gpus}"
        )
    if pre.get("secure_boot") is True:
        return Plan(
            stop="Secure Boot is enabled: the DKMS-built nvidia modules are not signed by a key "
            "this machine trusts and would not load. Enrol a MOK (mokutil --import) whose key "
            "signs DKMS modules, or disable Secure Boot, then converge again"
        )
    loaded = pre.get("loaded")
    if cfg.driver_source == "preinstalled":
        return preinstalled_plan(loaded, cfg)
    if loaded and not any((pre.get("installed") or {}).values()):
        return Plan(
            stop=f"driver {loaded} is loaded but no package of NVIDIA's repository "
            f"({', '.join(NvidiaPreflight.PACKAGES)}) installed it (a .run installer or the "
            "image's own driver?). Installing a packaged driver over it would break both: remove "
            "it first, or set nvidia.driver_source: preinstalled to keep it (citadel then only "
            "checks its branch)"
        )
    notes = []
    if pre.get("secure_boot") is None:
        notes.append("Secure Boot state unknown (no mokutil); assuming the modules will load")
    if not pre.get("lspci"):
        notes.append("lspci missing: GPU presence not checked (pciutils)")
    if not pre.get("headers"):
        notes.append(f"kernel headers for {pre.get('kernel')} missing: installing them")
    if pre.get("keyring"):
        notes.append(
            f"cuda-keyring {pre['keyring']} installed: purging it (the repository is trusted by "
            "its pinned signing key instead)"
        )
    driver = cfg.driver_package()
    installed = facts.installed_version(driver)
    same_branch = (upstream(installed) or "").startswith(f"{cfg.driver_branch}.")
    reboot_now = reboot_decision(loaded, installed if same_branch else None, cfg.reboot)
    return Plan(
        repo=facts.repo,
        repo_arch=REPO_ARCH[facts.arch],
        repo_key=REPO_KEYS[facts.repo],
        purge_keyring_package=bool(pre.get("keyring")),
        headers=f"linux-headers-{pre.get('kernel')}",
        driver=driver,
        toolkit=cfg.toolkit_package(),
        reboot_now=reboot_now,
        reboot_after_install="reboot" if cfg.reboot == "allowed" else "required",
        notes=notes,
    )


def preinstalled_plan(loaded: str | None, cfg: Config) -> Plan:
    """driver_source: preinstalled -> nothing to install; the loaded module must be the branch."""
    if not loaded:
        return Plan(stop="driver_source is preinstalled but no nvidia kernel module is loaded")
    if not loaded.startswith(f"{cfg.driver_branch}."):
        return Plan(
            stop=f"the preinstalled driver is {loaded}; the inventory expects branch "
            f"{cfg.driver_branch} (nvidia.driver_branch)"
        )
    return Plan(preinstalled=True, notes=[f"preinstalled driver {loaded}: nothing to install"])


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
