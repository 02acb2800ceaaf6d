"""One module per component, each with install / configure / activate stages as @deploy functions.

`converge_host()` (called by deploy.py) runs the current host's components in the fixed order
of citadel.components.ORDER. It fails closed: only a skip the inventory declares (a component's
`skip: <reason>`, e.g. the lab's named overrides) leaves a component out. Before any operation is
added for the host, `preflight()` checks every other component of it can be deployed (its deploy
module exists, its pinned artifact is pinned and in the controller cache or fetchable, its
vendor repository answers, ...); if one cannot, it raises `Undeployable`: one line naming host,
component, what is missing and the fix. `Undeployable` is a `PyinfraError`, which pyinfra's CLI
prints as one `--> pyinfra error ...: <line>` (no traceback) before exiting 1, and since it is
raised while pyinfra loads the deploy, nothing is executed on any host. `citadel plan` / `apply`
report that line and exit 1 (citadel.converge).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from pyinfra import host, logger
from pyinfra.api.exceptions import PyinfraError
from pyinfra.facts.server import Arch

from citadel.artifacts import ArtifactUnavailable, artifact_of, unavailable_reason
from citadel.components import deploy_name
from citadel.model.common import ComponentConfig
from deploys._context import DeployContext, current


class Undeployable(PyinfraError):
    """A component the inventory does not skip cannot be deployed on this host."""


def _fix(section: str, config: ComponentConfig, cache_dir: str) -> str:
    skip = f"declare a skip with its reason ({section}.skip in the inventory)"
    wanted = artifact_of(section, config)
    if wanted is None:
        return f"fix: make it available, or {skip}"
    artifact, version = wanted
    return (
        f"fix: pin it (citadel pins lock {artifact} {version}), or put the file into the "
        f"controller cache ({cache_dir}) or set artifacts.mirror, or {skip}"
    )


def undeployable(
    ctx: DeployContext, section: str, config: ComponentConfig, why: str
) -> Undeployable:
    name = deploy_name(section, config)
    fix = _fix(section, config, ctx.cluster.artifacts.cache_dir)
    return Undeployable(f"{ctx.host.name}: {name} cannot be deployed: {why}; {fix}")


def _module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"deploys.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"deploys.{name}":
            raise
        return None


def _grafana_repository(ctx: DeployContext, cfg: Any) -> None:
    from deploys.grafana import probe_repository

    probe_repository(cfg)


def _webui_python(ctx: DeployContext, cfg: Any) -> None:
    from deploys.webui import check_python

    check_python(ctx, cfg)


# Checks a deploy makes before its first operation that read only (the controller's network, a
# host fact): the preflight makes them for every component first, so no host is half-planned.
CHECKS: dict[str, Callable[[DeployContext, Any], None]] = {
    "grafana": _grafana_repository,
    "webui": _webui_python,
}


def preflight(ctx: DeployContext) -> None:
    """Raise `Undeployable` for the first component of this host that cannot be deployed.

    Components the inventory skips are not checked. Reads facts and the controller's cache (and
    fetches a pinned artifact into it once); adds no operation.
    """
    arch = host.get_fact(Arch) or "x86_64"
    artifacts = ctx.cluster.artifacts
    for section, config in ctx.host.components():
        name = deploy_name(section, config)
        if _module(name) is None:
            raise undeployable(ctx, section, config, f"no deploy module deploys/{name}.py")
        why = unavailable_reason(
            section, config, artifacts.cache_dir, artifacts.mirror, arch=arch, probe=True
        )
        if why is None and name in CHECKS:
            try:
                CHECKS[name](ctx, config)
            except ArtifactUnavailable as exc:
                why = str(exc)
        if why is not None:
            raise undeployable(ctx, section, config, why)


def converge_host(ctx: DeployContext | None = None) -> None:
    ctx = ctx if ctx is not None else current()
    for section, config in ctx.host.sections():
        reason = ctx.view.skipped_reason(ctx.host, section)
        if reason is not None:
            logger.warning(f"[{ctx.host.name}] {deploy_name(section, config)}: skipped: {reason}")
    preflight(ctx)
    for section, config in ctx.host.components():
        module = _module(deploy_name(section, config))
        assert module is not None  # preflight checked it
        try:
            module.apply(ctx, config)
        except ArtifactUnavailable as exc:
            # Found only once operations were added (e.g. a file the host lacks): still fatal.
            # The run stops while pyinfra loads the deploy, so nothing executes on any host.
            raise undeployable(ctx, section, config, str(exc)) from None
