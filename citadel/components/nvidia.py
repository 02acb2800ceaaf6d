"""NVIDIA driver and CUDA from NVIDIA's repository, branch pinned, reboot by policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from citadel.model.common import ComponentConfig
from citadel.model.component import Component
from citadel.model.files import FileSpec

if TYPE_CHECKING:
    from citadel.render import HostView

PIN_FILE = "/etc/apt/preferences.d/citadel-nvidia-driver"
REPO_BASE = "https://developer.download.nvidia.com/compute/cuda/repos"
# NVIDIA's CUDA apt repository is trusted by its signing key, pinned by fingerprint: the host
# fetches the public key from the repository, checks the fingerprint with gpg and only then
# writes it as the keyring the apt source is signed-by (no unpinned cuda-keyring package).
REPO_KEYRING = "/etc/apt/keyrings/citadel-cuda-archive.gpg"
REPO_SOURCES = "/etc/apt/sources.list.d/citadel-cuda.sources"


@dataclass(frozen=True)
class RepoKey:
    file: str  # the public key's file name in the repository directory
    fingerprint: str  # the primary key's full fingerprint
    source: str  # where a reviewer can check the fingerprint


# The key NVIDIA rotated to in 2022 for every Debian-based repository (not rotated again for
# existing repositories); its binding signature is SHA-1, which apt's sqv policy on Debian 13
# rejects since 2026-02-01, hence the new key for debian13.
KEY_3BF863CC = RepoKey(
    file="3bf863cc.pub",
    fingerprint="EB693B3035CD5710E231E123A4B469963BF863CC",
    source=(
        "https://github.com/NVIDIA/cuda-repo-management/blob/main/SIGNATURES.md (gpg on "
        "3bf863cc.pub: 'Primary key fingerprint: EB69 3B30 35CD 5710 E231 E123 A4B4 6996 3BF8 "
        "63CC', uid cudatools <cudatools@nvidia.com>); the 2022 rotation to 3bf863cc for "
        "Debian-based repositories: https://github.com/NVIDIA/cuda-repo-management/issues/4"
    ),
)
KEY_8793F200 = RepoKey(
    file="8793F200.pub",
    fingerprint="02182E60104FCDC26EAE1B8597A5D4CB8793F200",
    source=(
        "NVIDIA signs debian13 with its new key 8793F200 (uid 'Kitmaker (Debian 13 Trixie) "
        "<kitmaker@nvidia.com>'): https://github.com/NVIDIA/cuda-repo-management/issues/39 "
        "and the README's active pubkeys table; full fingerprint as pinned by independent public "
        "deployments of debian13/x86_64 (e.g. Chef and Node.js provisioning code)"
    ),
)
REPO_KEYS: dict[str, RepoKey] = {
    "ubuntu2204": KEY_3BF863CC,
    "ubuntu2404": KEY_3BF863CC,
    "debian12": KEY_3BF863CC,
    "debian13": KEY_8793F200,
}
# NVIDIA's repository arch per uname -m; repositories NVIDIA does not publish for an arch.
REPO_ARCH = {"x86_64": "x86_64", "aarch64": "sbsa"}
MISSING_REPOS = {("debian13", "sbsa")}


def repo_url(repo: str, repo_arch: str) -> str:
    return f"{REPO_BASE}/{repo}/{repo_arch}/"


def repo_sources(repo: str, repo_arch: str, keyring: str = REPO_KEYRING) -> str:
    """The deb822 source for NVIDIA's flat CUDA repository, signed by its pinned key only."""
    return (
        "# Managed by citadel (nvidia component): NVIDIA's CUDA repository, trusted only through\n"
        "# the keyring whose fingerprint citadel checked (citadel/components/nvidia.py).\n"
        "Types: deb\n"
        f"URIs: {repo_url(repo, repo_arch)}\n"
        "Suites: /\n"
        f"Signed-By: {keyring}\n"
    )


BLACKLIST_FILE = "/etc/modprobe.d/citadel-blacklist-nouveau.conf"
# Check an apt preferences candidate alone (apt exits 100 on an invalid record).
CHECK_PREFERENCES = (
    "apt-cache -o Dir::Etc::Preferences={path} -o Dir::Etc::PreferencesParts=/nonexistent "
    "policy >/dev/null"
)
# Packages whose versions follow the driver branch (held to it by the pin file).
DRIVER_PACKAGE_GLOBS = (
    "nvidia-*",
    "libnvidia-*",
    "cuda-drivers*",
    "xserver-xorg-video-nvidia*",
    "libxnvctrl*",
    "firmware-nvidia-gsp*",
    "libcuda1*",
    "nvidia-open*",
)


class Config(ComponentConfig):
    driver_branch: str = Field(default="550", pattern=r"^[0-9]{3}$")
    # open kernel modules need Turing or newer; "auto" decides from gpu_generation.
    kernel_modules: Literal["auto", "open", "proprietary"] = "auto"
    gpu_generation: Literal["pascal", "volta", "turing", "ampere", "ada", "hopper", "blackwell"] = (
        "ampere"
    )
    expected_gpus: int = Field(default=1, ge=0)
    # e.g. "12.4" -> cuda-toolkit-12-4; None: driver only (vLLM/Ollama bring their CUDA runtime).
    cuda_toolkit: str | None = Field(default=None, pattern=r"^[0-9]{2}\.[0-9]$")
    reboot: Literal["allowed", "never"] = "never"
    # "nvidia-repo": citadel installs and pins the driver from NVIDIA's repository.
    # "preinstalled": the image brings the driver (a .run installer, a cloud image); citadel
    # installs nothing and only checks that the loaded module is driver_branch.
    driver_source: Literal["nvidia-repo", "preinstalled"] = "nvidia-repo"

    def open_modules(self) -> bool:
        if self.kernel_modules != "auto":
            return self.kernel_modules == "open"
        return self.gpu_generation not in ("pascal", "volta")

    def driver_package(self) -> str:
        """NVIDIA's meta package: open kernel modules or the proprietary ones (+ userspace)."""
        return "nvidia-open" if self.open_modules() else "cuda-drivers"

    def toolkit_package(self) -> str | None:
        return f"cuda-toolkit-{self.cuda_toolkit.replace('.', '-')}" if self.cuda_toolkit else None


def files(view: HostView, cfg: Config) -> list[FileSpec]:
    return [
        FileSpec(
            dest=PIN_FILE,
            template="nvidia/nvidia-driver.pref.j2",
            validate=CHECK_PREFERENCES,
            extra={"globs": DRIVER_PACKAGE_GLOBS},
        ),
        FileSpec(dest=BLACKLIST_FILE, template="nvidia/blacklist-nouveau.conf.j2"),
    ]


COMPONENT = Component(name="nvidia", config=Config, role="gpu", files=files)
