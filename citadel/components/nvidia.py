"""NVIDIA driver and CUDA from NVIDIA's repository, branch pinned, reboot by policy."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from citadel.model.common import ComponentConfig


class Config(ComponentConfig):
    driver_branch: str = Field(default="550", pattern=r"^[0-9]{3}$")
    # open kernel modules need Turing or newer; "auto" decides from gpu_generation.
    kernel_modules: Literal["auto", "open", "proprietary"] = "auto"
    gpu_generation: Literal["pascal", "volta", "turing", "ampere", "ada", "hopper", "blackwell"] = (
        "ampere"
    )
    expected_gpus: int = Field(default=1, ge=0)
    cuda_toolkit: str | None = None
    reboot: Literal["allowed", "never"] = "never"

    def open_modules(self) -> bool:
        if self.kernel_modules != "auto":
            return self.kernel_modules == "open"
        return self.gpu_generation not in ("pascal", "volta")
