"""What a component declares about the files it writes (rendered by citadel.render)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class FileSpec:
    """One file a component writes on a host."""

    dest: str
    template: str  # relative to templates/, e.g. "redis/redis.conf.j2"
    mode: str = "0644"
    user: str = "root"
    group: str = "root"
    # True when the content holds a secret: never shown in diffs, masked in previews.
    secret: bool = False
    # A command that checks the rendered file before it goes live; "{path}" is the candidate.
    validate: str | None = None
    # What a change to this file does to the component's service: "restart" (read at start: a
    # unit, its environment, keys), "reload" (re-read on reload/SIGHUP), "none" (read by
    # something else, e.g. Ollama's Modelfile: the model is re-created, the server keeps running),
    # "unit" (a drop-in of a packaged unit: systemd reloads its units right after the write, then
    # the service restarts as for "restart"; citadel's own units reload in unit_activate),
    # "relisten" (a socket unit: the socket is re-created, its service stopped meanwhile; any
    # other restart of that service keeps the socket and so refuses no connection).
    on_change: Literal["restart", "reload", "none", "unit", "relisten"] = "restart"
    # Extra template variables.
    extra: dict[str, Any] = field(default_factory=dict)


UNIT_DIR = "/etc/systemd/system"
SANDBOX_DROPIN = "50-citadel-sandbox.conf"


def sandbox_dropin(unit: str, template: str, **extra: Any) -> FileSpec:
    """The shared sandbox as a drop-in of a unit Debian packages (templates/_shared/sandbox.j2,
    ``dropin``): ``template`` (in the component's folder) says what the program keeps open. A
    change reloads systemd's units and restarts the service (``on_change="unit"``)."""
    return FileSpec(
        dest=f"{UNIT_DIR}/{unit}.service.d/{SANDBOX_DROPIN}",
        template=template,
        on_change="unit",
        extra={"unit": unit, **extra},
    )
