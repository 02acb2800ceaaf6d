"""`citadel`: a thin CLI over the typed model, the lab and pyinfra. No deploy logic lives here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from citadel.errors import CitadelError, InventoryError
from citadel.labsecrets import ensure_lab_secrets
from citadel.loader import Loaded, load_cluster
from citadel.render import render_host, write_preview

DEFAULT_INVENTORY = "inventory/production.yml"
LAB_INVENTORY = "inventory/lab.yml"
EXIT_INVALID = 2


def _load(args: argparse.Namespace, require_secrets: bool = False) -> Loaded:
    return load_cluster(args.inventory, require_secrets=require_secrets)


def cmd_validate(args: argparse.Namespace) -> int:
    loaded = _load(args, require_secrets=args.require_secrets)
    hosts = loaded.cluster.hosts
    print(f"{args.inventory}: valid ({len(hosts)} hosts; files: {', '.join(loaded.files)})")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    loaded = _load(args)
    try:
        host = loaded.cluster.host(args.host)
    except KeyError as exc:
        raise CitadelError(str(exc.args[0])) from None
    out = Path(args.output)
    files = render_host(loaded.cluster, host)
    for path in write_preview(files, out):
        print(path)
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    from citadel.lab import LabHost
    from citadel.lab import main as lab_main

    loaded = load_cluster(args.inventory)
    if loaded.cluster.cluster.environment != "lab":
        raise CitadelError(f"{args.inventory} is not a lab inventory (cluster.environment)")
    lab_args = [a for a in args.lab_args]
    if lab_args[:1] == ["up"]:
        added = ensure_lab_secrets(loaded.cluster)
        if added:
            print(f"lab secrets generated: {', '.join(added)} -> {loaded.cluster.secrets_file}")
    hosts = [LabHost(h.name, str(h.address)) for h in loaded.cluster.hosts]
    return lab_main(lab_args, hosts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="citadel", description="Converge and verify the CX Dev & Test AI cluster."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str,
        fn: Callable[[argparse.Namespace], int],
        help_: str,
        inventory: str = DEFAULT_INVENTORY,
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument(
            "-i", "--inventory", default=inventory, help=f"inventory YAML (default: {inventory})"
        )
        p.set_defaults(func=fn)
        return p

    p = add("validate", cmd_validate, "check the inventory, group data and (optionally) secrets")
    p.add_argument(
        "--require-secrets",
        action="store_true",
        help="also fail when a secret a deployed component uses is missing",
    )

    p = add("render", cmd_render, "write every file HOST would receive (secrets masked)")
    p.add_argument("host", metavar="HOST", help="host name or address")
    p.add_argument("-o", "--output", required=True, help="directory to write into")

    p = add(
        "lab",
        cmd_lab,
        "the lab: up | status | ssh HOST [-- CMD...] | down | destroy",
        inventory=LAB_INVENTORY,
    )
    p.add_argument("lab_args", nargs=argparse.REMAINDER, metavar="ACTION ...")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except InventoryError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    except CitadelError as exc:
        print(f"citadel: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("citadel: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
