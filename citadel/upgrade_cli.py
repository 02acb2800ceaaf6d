"""The `citadel upgrade` and `citadel rollback` commands (the procedure: citadel.upgrade)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from citadel import upgrade
from citadel.converge import refuse_production_from_here
from citadel.loader import Loaded, load_cluster

Converger = Callable[[argparse.Namespace], Callable[[list[str]], bool]]


def _say(line: str) -> None:
    print(f"citadel: {line}", file=sys.stderr, flush=True)


def _resumable(inventory: Path, name: str, version: str) -> dict[str, Any] | None:
    """The pending entry of ``name`` to ``version``, when a roll of it stopped midway."""
    for entry in upgrade.pending(inventory):
        if entry["pin"] == name and str(entry["to"]) == version:
            return entry
    return None


def run(args: argparse.Namespace, converger: Converger, version: str, rollback: bool) -> int:
    inventory = Path(args.inventory)
    pin = upgrade.pin_for(args.name)
    refuse_production_from_here(load_cluster(inventory).cluster)
    entry = _resumable(inventory, pin.name, version)
    if entry is None:
        entry = upgrade.set_pin(inventory, pin, version, rollback=rollback)
        _say(f"{pin.name}: pinned {entry['from']} -> {version} in {entry['file']}")
    else:
        _say(f"{pin.name}: resuming the roll to {version} ({entry['state']})")
    if args.pin_only:
        print(upgrade.describe(entry))
        return 0
    loaded: Loaded = load_cluster(inventory, require_secrets=True, require_filled=True)
    upgrade.roll(inventory, loaded, entry, converger(args), _say)
    print(f"{pin.name}: {version} on {', '.join(entry['hosts_done']) or 'no host'}")
    return 0


def add_parsers(
    sub: argparse._SubParsersAction, converger: Converger, default_inventory: str
) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("-i", "--inventory", default=default_inventory)
        p.add_argument("name", metavar="NAME", help=f"one of: {', '.join(upgrade.PINS)}")
        p.add_argument(
            "--pin-only",
            action="store_true",
            help="write the pin and record it, converge nothing (`citadel plan` shows it)",
        )

    help_ = (
        "change a pinned version and roll it host by host behind a health gate "
        "(resumable; `citadel rollback NAME` goes back)"
    )
    p = sub.add_parser("upgrade", help=help_, description=help_)
    common(p)
    p.add_argument("version", metavar="VERSION")
    p.set_defaults(func=lambda a: run(a, converger, a.version, rollback=False))

    help_ = "put back the pin before the last upgrade of NAME, rolled like an upgrade"
    p = sub.add_parser("rollback", help=help_, description=help_)
    common(p)
    p.add_argument("--to", metavar="VERSION", help="this version instead (no history needed)")
    p.set_defaults(
        func=lambda a: run(
            a,
            converger,
            a.to or upgrade.previous_pin(Path(a.inventory), a.name),
            rollback=True,
        )
    )
