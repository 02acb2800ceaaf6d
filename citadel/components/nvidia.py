"""NVIDIA driver and CUDA from NVIDIA's repository, branch pinned, reboot by policy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from citadel.model.common import ComponentConfig
from citadel.model.files import FileSpec

if TYPE_CHECKING:
    from citadel.render import HostView

PIN_FILE = "/etc/apt/preferences.d/citadel-nvidia-driver"
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
    keyring_version: str = Field(default="1.1-1", pattern=r"^[0-9][0-9.]*-[0-9]+$")

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
