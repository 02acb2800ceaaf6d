"""Write the deploy's GPU fact commands to DIR as shell files, for scripts/gpu-check.sh to run
on a GPU machine that has no pyinfra."""

from __future__ import annotations

import sys
from pathlib import Path

from deploys.facts.gpu import GpuInventory, NvidiaPreflight


def main(target: str) -> int:
    out = Path(target)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_inventory.sh").write_text(GpuInventory().command() + "\n")
    (out / "nvidia_preflight.sh").write_text(NvidiaPreflight().command() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else ".devcheck"))
