"""Prometheus: Debian's package; config and rules from the inventory, checked by promtool first.

Every rendered rule file and prometheus.yml is staged and checked with promtool before it
replaces the live one (deploys/_files.put_files); a file Prometheus re-reads on SIGHUP reloads
it (systemctl reload), only the listen address / retention (/etc/default/prometheus) restart it.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from pyinfra import host
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import apt, files, systemd
from pyinfra.operations.util import any_changed

from citadel import artifacts
from citadel.components import prometheus as model
from citadel.components.prometheus import Config
from citadel.model.cluster import Cluster
from citadel.render import RenderedFile, render_template
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._files import put_files

SERVICE = "prometheus"
PROBE_TIMEOUT_S = 10


@deploy("prometheus: install")
def install(ctx: DeployContext, cfg: Config) -> None:
    distro = host.get_fact(LinuxDistribution)
    major = distro.get("major") if isinstance(distro, dict) else None
    # Debian 13 ships promtool as its own package (prometheus depends on it); 12 bundles it.
    packages = [SERVICE, "promtool"] if isinstance(major, int) and major >= 13 else [SERVICE]
    apt.packages(
        name=f"Install {', '.join(packages)}",
        packages=packages,
        no_recommends=True,
        cache_time=3600,
        update=True,
    )


_PROBED: dict[int, dict[tuple[str, str], str]] = {}


def probe_absent(cluster: Cluster) -> dict[tuple[str, str], str]:
    """On the controller: components whose pinned artifact is neither cached nor reachable.

    pins.yml alone decides in `model.static_absent` (pure); here a pinned artifact that is not
    in the controller cache gets one bounded request to its source (mirror or upstream URL).
    """
    if id(cluster) in _PROBED:  # once per pyinfra process (the Cluster is loaded once)
        return _PROBED[id(cluster)]
    absent = model.static_absent(cluster)
    for h in cluster.hosts:
        for section, cfg in h.components():
            artifact_of = model.PINNED_ARTIFACTS.get(section)
            if artifact_of is None or (h.name, section) in absent:
                continue
            name, version = artifact_of(cfg)
            artifact = artifacts.pinned(name, version)
            cached = Path(cluster.artifacts.cache_dir) / name / version / artifact.filename
            if cached.exists() and artifacts.sha256_of(cached) == artifact.sha256:
                continue
            url = artifacts.source_url(artifact, cluster.artifacts.mirror)
            try:
                req = urllib.request.Request(url, method="HEAD")
                with urllib.request.urlopen(req, timeout=PROBE_TIMEOUT_S):
                    pass
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                reason = getattr(exc, "reason", None) or exc
                absent[(h.name, section)] = f"{artifact.label()}: unavailable from {url} ({reason})"
    _PROBED[id(cluster)] = absent
    return absent


def rendered(ctx: DeployContext, cfg: Config) -> list[RenderedFile]:
    view = ctx.view
    out = []
    for spec in model.files(view, cfg, absent=probe_absent(ctx.cluster)):
        content = render_template(
            spec.template,
            view=view,
            cluster=ctx.cluster,
            host=ctx.host,
            cfg=cfg,
            secret=view.secret,
            **spec.extra,
        )
        out.append(RenderedFile(component="prometheus", spec=spec, content=content))
    return out


@deploy("prometheus: configure")
def configure(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    rendered_files = rendered(ctx, cfg)
    if any(f.spec.dest.startswith(model.SECRETS_DIR + "/") for f in rendered_files):
        files.directory(
            name=f"Directory {model.SECRETS_DIR}",
            path=model.SECRETS_DIR,
            user="root",
            group="prometheus",
            mode="0750",
        )
    else:
        files.file(
            name=f"No {model.QDRANT_KEY_FILE} (no Qdrant target)",
            path=model.QDRANT_KEY_FILE,
            present=False,
        )
    files.directory(name=f"Directory {model.RULES_DIR}", path=model.RULES_DIR, mode="0755")
    return put_files(rendered_files)


@deploy("prometheus: activate")
def activate(ctx: DeployContext, cfg: Config, changed: list[OperationMeta]) -> None:
    args = [op for op, f in zip(changed, _dests(ctx, cfg), strict=True) if f == model.DEFAULTS_FILE]
    reloadable = [op for op in changed if op not in args]
    systemd.service(name=f"Run {SERVICE}", service=SERVICE, running=True, enabled=True)
    systemd.service(
        name=f"Restart {SERVICE} (listen address or retention changed)",
        service=SERVICE,
        restarted=True,
        _if=any_changed(*args),
    )
    systemd.service(
        name=f"Reload {SERVICE} (configuration or rules changed)",
        service=SERVICE,
        reloaded=True,
        _if=any_changed(*reloadable),
    )


def _dests(ctx: DeployContext, cfg: Config) -> list[str]:
    return [spec.dest for spec in model.files(ctx.view, cfg, absent=probe_absent(ctx.cluster))]


def apply(ctx: DeployContext, cfg: Config) -> None:
    install(ctx, cfg)
    activate(ctx, cfg, configure(ctx, cfg))
