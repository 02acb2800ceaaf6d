"""`citadel lab ...` argument handling: errors become one line on stderr and exit code 1."""

from __future__ import annotations

import sys

from citadel.lab import ops
from citadel.lab.config import LabConfig, LabError, LabHost

USAGE = (
    "usage: citadel lab up | status | ssh HOST [-- CMD...] | down | destroy "
    "| stop HOST | start HOST"
)


def main(argv: list[str], hosts: list[LabHost], config: LabConfig | None = None) -> int:
    try:
        return _dispatch(list(argv), hosts, config)
    except LabError as exc:
        print(f"citadel lab: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("citadel lab: interrupted", file=sys.stderr)
        return 130


def _dispatch(argv: list[str], hosts: list[LabHost], config: LabConfig | None) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    verb, rest = argv[0], argv[1:]
    if verb == "ssh":
        if not rest:
            raise LabError("ssh needs a HOST (name or lab address)")
        host, tail = rest[0], rest[1:]
        if tail and tail[0] == "--":
            tail = tail[1:]
        return ops.ssh(hosts, host, tail, config)
    if verb in ("stop", "start"):
        if len(rest) != 1:
            raise LabError(f"{verb} needs exactly one HOST")
        if verb == "stop":
            ops.stop_host(rest[0], config)
        else:
            ops.start_host(hosts, rest[0], config)
        return 0
    if rest:
        raise LabError(f"{verb}: unexpected arguments {' '.join(rest)!r}")
    if verb == "up":
        ops.up(hosts, config)
        return 0
    if verb == "status":
        return ops.status(hosts, config)
    if verb == "down":
        ops.down(config)
        return 0
    if verb == "destroy":
        ops.destroy(config)
        return 0
    raise LabError(f"unknown command {verb!r}; {USAGE}")
