"""One module per component, each with install / configure / activate stages as @deploy functions.

`converge_host()` (called by deploy.py) runs the current host's components in the fixed order
of citadel.components.ORDER; a component whose artifact cannot be had stops alone with one line.
"""

from __future__ import annotations

import importlib

from pyinfra import logger

from citadel.artifacts import ArtifactUnavailable
from citadel.components import deploy_name
from deploys._context import current


def converge_host() -> None:
    ctx = current()
    for section, config in ctx.host.sections():
        name = deploy_name(section, config)
        reason = ctx.view.skipped_reason(ctx.host, section)
        if reason is not None:
            logger.warning(f"[{ctx.host.name}] {name}: skipped: {reason}")
            continue
        try:
            module = importlib.import_module(f"deploys.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"deploys.{name}":
                raise
            logger.warning(f"[{ctx.host.name}] {name}: skipped: no deploy module deploys/{name}.py")
            continue
        try:
            module.apply(ctx, config)
        except ArtifactUnavailable as exc:
            logger.warning(f"[{ctx.host.name}] {name}: skipped: {exc}")
