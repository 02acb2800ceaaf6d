"""Put rendered files on a host: validated by the tool that reads them before they go live."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager

from pyinfra import state
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files, server

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
    instead of installing it.
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
        return files.put(
            name=f"Write {spec.dest}",
            src=io.StringIO(f.content),
            dest=spec.dest,
            user=spec.user,
            group=spec.group,
            mode=spec.mode,
            create_remote_dir=True,
        )


def put_files(rendered: list[RenderedFile]) -> list[OperationMeta]:
    return [put_file(f) for f in rendered]
