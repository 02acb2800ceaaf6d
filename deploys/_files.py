"""Put rendered files on a host: validated by the tool that reads them before they go live.

`put_files` first reads every file's sha1, mode and owner in ONE round trip (`ManagedFiles`);
a file already as rendered gets no operation at all. pyinfra 3 caches no facts, and three facts
per file (File, Sha1File, Directory) made most of a no-op converge's time.
"""

from __future__ import annotations

import hashlib
import io
import os
import shlex
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

from pyinfra import host, state
from pyinfra.api import FactBase
from pyinfra.api.operation import OperationMeta
from pyinfra.connectors.util import CommandOutput
from pyinfra.operations import files, server, systemd

from citadel.render import RenderedFile

STAGING = "/var/lib/citadel/staging"


@contextmanager
def _no_diff(secret: bool) -> Iterator[None]:
    """pyinfra's --diff prints file contents; never for a file holding a secret."""
    config = state.config if state is not None else None
    before = getattr(config, "DIFF", False)
    if secret and config is not None:
        config.DIFF = False
    try:
        yield
    finally:
        if config is not None:
            config.DIFF = before


def put_file(f: RenderedFile) -> OperationMeta:
    """Upload one file; with a validator, stage + check it first and only then replace the live one.

    A candidate that fails its check is removed from staging, so the next run checks it again
    instead of installing it. A drop-in (``on_change="unit"``) is followed by systemd's reload of
    its units when it changed: the restart its component then does starts the new settings.
    """
    spec = f.spec
    with _no_diff(spec.secret):
        if spec.validate:
            staged = os.path.join(STAGING, spec.dest.lstrip("/").replace("/", "__"))
            candidate = files.put(
                name=f"Stage {spec.dest}",
                src=io.StringIO(f.content),
                dest=staged,
                mode="0600",
                create_remote_dir=True,
            )
            check = spec.validate.format(path=staged)
            server.shell(
                name=f"Check {spec.dest} with {spec.validate.split()[0]}",
                commands=[f"{check} || {{ rm -f {staged}; exit 1; }}"],
                _if=candidate.did_change,
            )
        written = files.put(
            name=f"Write {spec.dest}",
            src=io.StringIO(f.content),
            dest=spec.dest,
            user=spec.user,
            group=spec.group,
            mode=spec.mode,
            create_remote_dir=True,
        )
    if spec.on_change == "unit":
        systemd.daemon_reload(
            name=f"Reload systemd units ({spec.dest} changed)", _if=written.did_change
        )
    return written


class ManagedFiles(FactBase[dict[str, tuple[int, str, str, str]]]):
    """path -> (mode, owner, group, sha1) for each existing regular file, in one command."""

    def command(self, paths: tuple[str, ...]) -> str:
        quoted = " ".join(shlex.quote(p) for p in paths)
        return (
            f'for f in {quoted}; do [ -f "$f" ] && '
            'printf "%s %s %s\\n" "$(stat -c \'%a %U %G\' "$f")" '
            '"$(sha1sum < "$f" | cut -c1-40)" "$f"; done; true'
        )

    def process(self, output: list[str]) -> dict[str, tuple[int, str, str, str]]:
        found: dict[str, tuple[int, str, str, str]] = {}
        for line in output:
            parts = line.split(" ", 4)
            if len(parts) == 5:
                mode, user, group, sha1, path = parts
                found[path] = (int(mode, 8), user, group, sha1)
        return found


def _unchanged() -> OperationMeta:
    """A completed operation that changed nothing: stands in for a file already as rendered."""
    meta = OperationMeta("citadel-file-unchanged", is_change=False)
    meta.set_complete(True, [], CommandOutput([]))
    return meta


def _as_rendered(f: RenderedFile, current: tuple[int, str, str, str] | None) -> bool:
    if current is None:
        return False
    sha1 = hashlib.sha1(f.content.encode(), usedforsecurity=False).hexdigest()
    wanted = (int(f.spec.mode, 8), f.spec.user, f.spec.group, sha1)
    return current == wanted


def put_files(rendered: list[RenderedFile]) -> list[OperationMeta]:
    """One operation meta per file, in order (unchanged files: a completed no-change meta)."""
    if not rendered:
        return []
    found: Any = host.get_fact(ManagedFiles, paths=tuple(f.spec.dest for f in rendered)) or {}
    return [
        _unchanged() if _as_rendered(f, found.get(f.spec.dest)) else put_file(f) for f in rendered
    ]


class Changes(NamedTuple):
    """A component's file operations grouped by what a change does (``FileSpec.on_change``).
    ``unit``: drop-ins of packaged units, each reloaded by systemd with its write (put_file);
    their service restarts. ``relisten``: socket units (unit_activate re-creates the socket)."""

    restart: list[OperationMeta]
    reload: list[OperationMeta]
    none: list[OperationMeta]
    unit: list[OperationMeta]
    relisten: list[OperationMeta]


def changes(rendered: Sequence[RenderedFile], ops: Sequence[OperationMeta]) -> Changes:
    """Group the operations of ``put_files(rendered)`` by their files' ``on_change``."""
    out = Changes([], [], [], [], [])
    for f, op in zip(rendered, ops, strict=True):
        getattr(out, f.spec.on_change).append(op)
    return out


def put_changes(rendered: list[RenderedFile]) -> Changes:
    """``put_files``, its operations grouped by what a change does (restart / reload / none)."""
    return changes(rendered, put_files(rendered))
