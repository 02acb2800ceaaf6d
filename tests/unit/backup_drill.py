"""What the backup drills share (tests/unit/test_postgres_backup.py, test_redis_backup.py,
test_qdrant_backup.py): a free loopback port for a private server, and a rendered settings file
with only its host-specific keys pointed at the drill."""

from __future__ import annotations

import socket
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_pointed(rendered: str, local: dict[str, str], dest: Path) -> Path:
    """`rendered` (KEY=VALUE lines, comments kept) with each key of `local` set to its value
    there, written to `dest`; every key of `local` must be in the file (a renamed setting fails
    the drill instead of being silently added)."""
    local = dict(local)
    lines = []
    for line in rendered.splitlines():
        key = line.split("=", 1)[0]
        if not line.startswith("#") and "=" in line and key in local:
            line = f"{key}={local.pop(key)}"
        lines.append(line)
    assert not local, f"{dest.name} lacks {sorted(local)}"
    dest.write_text("\n".join(lines) + "\n")
    return dest
