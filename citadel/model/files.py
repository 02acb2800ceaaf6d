"""What a component declares about the files it writes (rendered by citadel.render)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    # Extra template variables.
    extra: dict[str, Any] = field(default_factory=dict)
