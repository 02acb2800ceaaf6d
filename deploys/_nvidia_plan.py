"""The NVIDIA deploy's decisions as a pure function (deploys/nvidia.py turns them into operations):
:func:`plan` takes what the host's facts say (:class:`Facts`) and the config and returns the steps
(:class:`Plan`): which repository and key, which driver and kernel-module flavour, what stops the
host and why; :func:`reboot_decision` is the reboot table. It reads no fact and adds no
operation, so every distribution and GPU generation is unit-tested without a host."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from citadel.components.nvidia import (
    MISSING_REPOS,
    REPO_ARCH,
    REPO_KEYS,
    Config,
    RepoKey,
)
from deploys.facts.gpu import NvidiaPreflight

# (distribution id, VERSION_ID) -> NVIDIA's repository name
REPOS = {
    ("ubuntu", "22.04"): "ubuntu2204",
    ("ubuntu", "24.04"): "ubuntu2404",
    ("debian", "12"): "debian12",
    ("debian", "13"): "debian13",
}


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
