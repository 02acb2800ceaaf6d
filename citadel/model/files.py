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
    # "relisten" (a socket unit: the socket is re-created, its service stopped meanwhile; any
    # other restart of that service keeps the socket and so refuses no connection).
    on_change: Literal["restart", "reload", "none", "relisten"] = "restart"
    # Extra template variables.
    extra: dict[str, Any] = field(default_factory=dict)
