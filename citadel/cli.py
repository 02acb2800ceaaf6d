"""`citadel`: a thin CLI over the typed model, the lab and pyinfra. No deploy logic lives here."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from citadel import pins, preflight, rotation, upgrade, upgrade_cli
from citadel.acceptance import acceptance_junit, run_acceptance
from citadel.converge import (
    EXIT_CHANGES,
    HostResult,
    format_plan,
    format_results,
    plan_by_host,
    plan_exit_code,
    refuse_production_from_here,
    report_payload,
    results_by_host,
    run_pyinfra,
    write_report,
)
from citadel.devtokens import mint_dev_token
from citadel.errors import CitadelError, InventoryError
from citadel.labsecrets import ensure_lab_secrets
from citadel.loader import Loaded, load_cluster
from citadel.model.cluster import DEBIAN_SUITES, Host
from citadel.render import render_host, write_preview
from citadel.rollout import WAIT_S, health_url, rollout_phases, services_of, wait_until_served
from citadel.rotation_state import STAGES
from citadel.verify_run import format_summary, run_verify, summarize

if TYPE_CHECKING:
    from citadel.lab import LabHost

DEFAULT_INVENTORY = "inventory/production.yml"
LAB_INVENTORY = "inventory/lab.yml"
EXIT_INVALID = 2


def _load(args: argparse.Namespace, require_secrets: bool = False) -> Loaded:
    # what a converge needs supplied: secrets, and the operator-supplied values (REPLACE-ME)
    return load_cluster(
        args.inventory, require_secrets=require_secrets, require_filled=require_secrets
    )


def cmd_validate(args: argparse.Namespace) -> int:
    loaded = load_cluster(args.inventory, require_secrets=args.require_secrets, require_filled=True)
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


def _inventory_option(argv: list[str], default: str) -> tuple[list[str], str]:
    """`citadel lab up -i INV`: take -i/--inventory from the action's arguments (before `--`)."""
    end = argv.index("--") if "--" in argv else len(argv)
    for i, arg in enumerate(argv[:end]):
        if arg in ("-i", "--inventory") and i + 1 < end:
            return argv[:i] + argv[i + 2 :], argv[i + 1]
        if arg.startswith("--inventory="):
            return argv[:i] + argv[i + 1 :], arg.split("=", 1)[1]
    return argv, default


def cmd_lab(args: argparse.Namespace) -> int:
    from citadel.lab import main as lab_main

    lab_args, inventory = _inventory_option(list(args.lab_args), args.inventory)
    loaded = load_cluster(inventory)
    if loaded.cluster.cluster.environment != "lab":
        raise CitadelError(f"{inventory} is not a lab inventory (cluster.environment)")
    if lab_args[:1] == ["up"]:
        added = ensure_lab_secrets(loaded.cluster)
        if added:
            print(f"lab secrets generated: {', '.join(added)} -> {loaded.cluster.secrets_file}")
    return lab_main(lab_args, lab_hosts(loaded.cluster.hosts))


def lab_hosts(hosts: list[Host]) -> list[LabHost]:
    """The inventory's hosts as lab hosts, each on its distribution's base tree."""
    from citadel.lab import LabHost

    return [LabHost(h.name, str(h.address), DEBIAN_SUITES[h.distribution]) for h in hosts]


def _selected_hosts(loaded: Loaded, limit: list[str] | None) -> list[Host]:
    """Hosts matching --limit patterns (host names, addresses or roles), in inventory order."""
    if not limit:
        return list(loaded.cluster.hosts)
    chosen: set[str] = set()
    for pattern in limit:
        found = [h for h in loaded.cluster.hosts if pattern in (h.name, str(h.address))]
        found = found or loaded.cluster.with_role(pattern)
        if not found:
            raise CitadelError(f"--limit {pattern}: no host or role of that name")
        chosen |= {h.name for h in found}
    return [h for h in loaded.cluster.hosts if h.name in chosen]


def cmd_plan(args: argparse.Namespace) -> int:
    loaded = _load(args, require_secrets=True)
    refuse_production_from_here(loaded.cluster)
    preflight.check_identity_provider(loaded.cluster)
    hosts = _selected_hosts(loaded, args.limit)
    report = run_pyinfra(args.inventory, dry=True, limit=[h.name for h in hosts], stream=False)
    plans = plan_by_host(report)
    rotations = rotation.pending(loaded)
    upgrades = upgrade.pending(Path(args.inventory))
    if args.json:
        out: dict[str, object] = {h: asdict(p) for h, p in sorted(plans.items())}
        if rotations:  # beside the hosts, under a key no host name can be (names are [a-z0-9-])
            out["_rotations"] = {
                n: {"stage": e.stage, "converged": e.converged, "next": rotation.next_phase(e)}
                for n, e in sorted(rotations.items())
            }
        if upgrades:
            out["_upgrades"] = upgrades
        print(json.dumps(out, indent=2))
    else:
        print(format_plan(plans, [h.name for h in hosts]))
        for name, entry in sorted(rotations.items()):
            print(rotation.describe(name, entry))
        for pending in upgrades:
            print(upgrade.describe(pending))
    # a rotation or an upgrade in progress is a pending change, converged hosts or not
    return EXIT_CHANGES if rotations or upgrades else plan_exit_code(plans)


def apply_hosts(args: argparse.Namespace, loaded: Loaded) -> tuple[dict[str, HostResult], float]:
    """Converge in rollout waves (citadel.rollout); after a wave that changed model hosts, let the
    gateway re-admit them and check it serves their models before the next wave (or stop)."""
    preflight.check_identity_provider(loaded.cluster)
    results: dict[str, HostResult] = {}
    started = time.monotonic()
    phases = rollout_phases(_selected_hosts(loaded, args.limit))
    url = health_url(loaded.cluster)
    for i, phase in enumerate(phases):
        print(f"citadel: converging {', '.join(phase)}", file=sys.stderr, flush=True)
        report = run_pyinfra(args.inventory, dry=False, limit=phase, fail_percent=args.fail_percent)
        results.update(results_by_host(report))
        services = services_of(loaded.cluster, phase)
        changed = any(results[h].changed for h in phase if h in results)
        last = i + 1 == len(phases)
        if url is None or not services or not changed or last:
            continue
        if any(results[h].failed for h in phase if h in results):
            continue  # the failure is reported; fail_percent decides whether that stops us
        missing = wait_until_served(url, services)
        if missing:
            states = ", ".join(f"{s}: {v}" for s, v in sorted(missing.items()))
            raise CitadelError(
                f"the gateway serves no backend of {states} {WAIT_S:g} s after converging "
                f"{', '.join(phase)}; stopping before the next wave"
            )
    return results, time.monotonic() - started


def converger(args: argparse.Namespace) -> Callable[[list[str]], bool]:
    """Converge just these hosts of the inventory (re-read: a phase may have changed it);
    True when every one of them converged."""

    def converge(hosts: list[str]) -> bool:
        ns = argparse.Namespace(inventory=args.inventory, limit=hosts, fail_percent=None)
        results, seconds = apply_hosts(ns, _load(ns, require_secrets=True))
        print(format_results(results, hosts, seconds))
        return all(h in results and not results[h].failed for h in hosts)

    return converge


def cmd_rotate(args: argparse.Namespace) -> int:
    """Rotate one secret in phases (citadel.rotation), converging each phase's hosts only."""
    rot = rotation.rotation_for(args.name, _load(args))  # refuses before anything changes
    loaded = _load(args, require_secrets=True)
    refuse_production_from_here(loaded.cluster)
    converge = converger(args)

    def say(line: str) -> None:
        print(f"citadel: {line}", file=sys.stderr, flush=True)

    say(rot.procedure.guarantee)
    rotation.rotate(rot, args.phase, converge, say, grace_s=args.grace)
    entry = rot.entry()
    if entry is not None:
        print(rotation.describe(rot.name, entry))
    else:
        print(f"{rot.name}: rotated")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    loaded = _load(args, require_secrets=True)
    refuse_production_from_here(loaded.cluster)
    results, seconds = apply_hosts(args, loaded)
    names = [h.name for h in _selected_hosts(loaded, args.limit)]
    print(format_results(results, names, seconds))
    path = write_report(Path(args.report), report_payload(results, seconds))
    print(f"report: {path}")
    return 1 if any(r.failed for r in results.values()) else 0


def cmd_verify(args: argparse.Namespace) -> int:
    loaded = _load(args, require_secrets=True)
    refuse_production_from_here(loaded.cluster)
    junit = Path(args.junit)
    rc = run_verify(args.inventory, junit, args.pytest_args)
    if junit.exists():
        print(format_summary(summarize(junit, [h.name for h in loaded.cluster.hosts])))
        print(f"junit: {junit}")
    accepted = run_acceptance(args.inventory, acceptance_junit(junit))
    return 0 if rc == 0 and accepted == 0 else 1


def cmd_token(args: argparse.Namespace) -> int:
    loaded = _load(args)
    gateway = next((h.gateway for h in loaded.cluster.with_role("gateway") if h.gateway), None)
    if gateway is None:
        raise CitadelError("this inventory has no gateway")
    print(mint_dev_token(gateway.auth, args.sub, ttl_s=args.ttl, permissions=args.perm or None))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """The main job on the lab: lab up -> converge -> verify -> a summary."""
    loaded = _load(args)
    if loaded.cluster.cluster.environment != "lab":
        raise CitadelError(f"{args.inventory}: `up` is for lab inventories")
    args.lab_args = ["up"]
    if cmd_lab(args) != 0:
        return 1
    loaded = _load(args, require_secrets=True)
    args.limit, args.fail_percent = None, None
    results, seconds = apply_hosts(args, loaded)
    names = [h.name for h in loaded.cluster.hosts]
    print(format_results(results, names, seconds))
    write_report(Path(args.report), report_payload(results, seconds))
    junit = Path(args.junit)
    verify_rc = run_verify(args.inventory, junit)
    verify_rc |= run_acceptance(args.inventory, acceptance_junit(junit))
    print("\n== summary ==")
    if junit.exists():
        print(format_summary(summarize(junit, names)))
    converged = not any(r.failed for r in results.values())
    print(
        f"converge: {'ok' if converged else 'FAILED'} in {seconds:.1f}s; "
        f"verify: {'ok' if verify_rc == 0 else 'FAILED'}"
    )
    gw = loaded.cluster.with_role("gateway")
    if gw and gw[0].gateway:
        print(
            f"call the gateway: TOKEN=$(citadel token -i {args.inventory}); curl -H "
            f'"Authorization: Bearer $TOKEN" http://{gw[0].address}:{gw[0].gateway.port}/v1/models'
        )
    return 0 if converged and verify_rc == 0 else 1


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
        "plan",
        cmd_plan,
        "what a converge would change, per host (exit 0 none, 2 pending)",
        inventory=LAB_INVENTORY,
    )
    p.add_argument("--limit", action="append", help="host name, address or role (repeatable)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add(
        "apply",
        cmd_apply,
        "converge (model servers one at a time) and write a JSON report",
        inventory=LAB_INVENTORY,
    )
    p.add_argument("--limit", action="append", help="host name, address or role (repeatable)")
    p.add_argument(
        "--fail-percent",
        type=int,
        default=None,
        help="stop when more than this percentage of hosts fail",
    )
    p.add_argument("--report", default="reports/apply.json", help="JSON report path")

    p = add(
        "rotate",
        cmd_rotate,
        "replace a secret without a refused request: accept (servers take both), switch "
        "(clients move), retire (the old one refused); resumable",
        inventory=LAB_INVENTORY,
    )
    p.add_argument("name", metavar="SECRET", help="e.g. redis_password, jwt_signing_key")
    p.add_argument(
        "--phase", choices=STAGES, help="run one phase (the next one) and stop; default: all"
    )
    p.add_argument(
        "--grace",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds retire waits first, for clients that fetch the credential themselves "
        "(tokens of the old key) to have the new one (default 0)",
    )

    p = add(
        "verify",
        cmd_verify,
        "testinfra checks on every host, then the API document's examples (JUnit + summaries)",
        inventory=LAB_INVENTORY,
    )
    p.add_argument("--junit", default="reports/verify.xml")
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")

    p = add(
        "up",
        cmd_up,
        "the lab end to end: lab up, converge, verify, summary",
        inventory=LAB_INVENTORY,
    )
    p.add_argument("--report", default="reports/apply.json")
    p.add_argument("--junit", default="reports/verify.xml")

    p = add(
        "token", cmd_token, "mint a dev JWT with the lab's signing key", inventory=LAB_INVENTORY
    )
    p.add_argument("--sub", default="dev-user")
    p.add_argument("--ttl", type=int, default=3600)
    p.add_argument("--perm", action="append", help="permission claim (default: all routes)")

    p = add(
        "lab",
        cmd_lab,
        "the lab: up | status | ssh HOST [-- CMD...] | down | destroy",
        inventory=LAB_INVENTORY,
    )
    p.add_argument("lab_args", nargs=argparse.REMAINDER, metavar="ACTION ...")

    upgrade_cli.add_parsers(sub, converger, LAB_INVENTORY)
    pins.add_parser(sub)
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
