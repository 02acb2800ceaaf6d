"""Render every file a host receives, from templates/<component>/ with StrictUndefined.

The same function feeds `citadel render` (secrets masked, no connection) and the deploys (real
secrets), so a preview is byte-for-byte what a converge writes, masks aside.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from citadel.components import REGISTRY
from citadel.errors import CitadelError
from citadel.model.cluster import Cluster, Host
from citadel.model.common import ComponentConfig
from citadel.model.files import FileSpec
from citadel.secrets import MASK, MaskedSecrets, SecretStore

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"


@dataclass(frozen=True)
class RenderedFile:
    component: str
    spec: FileSpec
    content: str


@dataclass
class HostView:
    """What a template sees: the cluster, this host, its component config and secret()."""

    cluster: Cluster
    host: Host
    secrets: SecretStore

    def secret(self, name: str) -> str:
        try:
            value = self.secrets[name]
        except KeyError:
            raise CitadelError(
                f"secret {name!r} is missing for {self.host.name}; run `citadel validate "
                "--require-secrets` to see every missing secret"
            ) from None
        return value

    def accepted(self, name: str) -> list[str]:
        """What a server checking secret ``name`` accepts: its value, and the previous one
        while a rotation of it is in its accept or switch stage (citadel rotate)."""
        self.secret(name)  # the same error when it is missing
        return self.secrets.accepted(name)

    def deployed(self, host: Host, section: str) -> bool:
        """The component runs on that host: the host has it and the inventory does not skip it."""
        return self.skipped_reason(host, section) is None

    def skipped_reason(self, host: Host, section: str) -> str | None:
        """Why the inventory does not deploy this component there, or None.

        Only the inventory decides (no section, or its declared `skip`): rendering is pure and
        never fetches or probes anything. Whether an artifact can be had changes the result of
        a converge (it fails closed, deploys.preflight), never the shape of a rendered file.
        """
        config = getattr(host, section, None)
        if config is None:
            return "not on this host"
        if config.skip is not None:
            return str(config.skip)
        return None

    @property
    def masked(self) -> bool:
        return isinstance(self.secrets, MaskedSecrets)


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["tojson_compact"] = lambda v: json.dumps(v, separators=(",", ":"), sort_keys=True)
    env.filters["yaml_quote"] = lambda v: json.dumps(str(v))
    env.filters["regex_replace_suffix"] = lambda v, suffix: f"{v}{suffix}"
    return env


def render_template(template: str, **context: Any) -> str:
    try:
        return environment().get_template(template).render(**context)
    except jinja2.UndefinedError as exc:
        raise CitadelError(f"template {template}: {exc.message}") from None
    except jinja2.TemplateError as exc:
        raise CitadelError(f"template {template}: {exc}") from None


FilesFn = Callable[[HostView, ComponentConfig], list[FileSpec]]


def component_files(section: str, view: HostView, config: ComponentConfig) -> list[RenderedFile]:
    files_fn: FilesFn | None = REGISTRY[section].files
    if files_fn is None:
        return []
    return render_specs(section, view, config, files_fn(view, config))


def render_specs(
    section: str, view: HostView, config: ComponentConfig, specs: list[FileSpec]
) -> list[RenderedFile]:
    """Each spec's template rendered with what every template sees (``view``, ``cluster``,
    ``host``, ``cfg``, ``secret``) and the spec's own ``extra``."""
    out = []
    for spec in specs:
        content = render_template(
            spec.template,
            view=view,
            cluster=view.cluster,
            host=view.host,
            cfg=config,
            secret=view.secret,
            **spec.extra,
        )
        out.append(RenderedFile(component=section, spec=spec, content=content))
    return out


def render_host(
    cluster: Cluster, host: Host, secrets: SecretStore | None = None
) -> list[RenderedFile]:
    """Every file `host` would receive; secrets masked unless a real store is given."""
    view = HostView(cluster, host, secrets if secrets is not None else MaskedSecrets())
    files: list[RenderedFile] = []
    for section, config in host.components():
        files += component_files(section, view, config)
    return files


def write_preview(files: list[RenderedFile], out_dir: Path) -> list[Path]:
    """Write rendered files under out_dir mirroring their destination paths."""
    written = []
    for f in files:
        target = out_dir / f.spec.dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f.content, encoding="utf-8")
        written.append(target)
    return written


__all__ = ["MASK", "FileSpec", "HostView", "RenderedFile", "render_host", "write_preview"]
