"""`citadel pins`: pins.yml as a lock file.

``pins check``  every pinned artifact with its sha256 per architecture (or UNPINNED) and the
                source of each digest, then the signing keys NVIDIA's repository is trusted by;
                exit 1 when an artifact the inventory (default: production) deploys is unpinned.
``pins lock NAME VERSION [--arch A]``  on a machine that can download: fetch the artifact,
                compute its sha256 and write it into pins.yml (a text edit: comments and layout
                stay); an existing different pin is never overwritten (exit 1 naming both).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import re
import shutil
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from citadel import artifacts
from citadel.components.nvidia import REPO_KEYS
from citadel.errors import CitadelError
from citadel.loader import load_cluster

PRODUCTION = "inventory/production.yml"
LOCK_TIMEOUT_S = 120
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    arch: str
    sha256: str | None
    source: str | None


def _arches(entry: dict) -> list[str]:
    found: list[str] = []
    for key in ("sha256", "url", "source"):
        value = entry.get(key)
        if isinstance(value, dict):
            found += [str(a) for a in value if str(a) not in found]
    return found or ["x86_64"]


def _source(entry: dict, arch: str) -> str | None:
    source = entry.get("source")
    if isinstance(source, dict):
        source = source.get(arch)
    return " ".join(str(source).split()) if source else None


def pins_of(pins: dict) -> Iterator[Pin]:
    for name, versions in pins.items():
        for version, entry in (versions or {}).items():
            sums = entry.get("sha256") or {}
            for arch in _arches(entry):
                sha = sums.get(arch) if isinstance(sums, dict) else None
                yield Pin(
                    str(name), str(version), arch, str(sha) if sha else None, _source(entry, arch)
                )


def used_artifacts(inventory: str | Path) -> dict[tuple[str, str], list[str]]:
    """(artifact, version) -> hosts of the inventory that deploy it (skipped sections aside)."""
    cluster = load_cluster(inventory).cluster
    used: dict[tuple[str, str], list[str]] = {}
    for host in cluster.hosts:
        for section in ("qdrant", "model"):
            config = getattr(host, section, None)
            if config is None or getattr(config, "skip", None) is not None:
                continue
            wanted = artifacts._artifact_of(section, config)
            if wanted is not None:
                used.setdefault(wanted, []).append(host.name)
    return used


def cmd_check(args: argparse.Namespace) -> int:
    pins = artifacts.load_pins(Path(args.pins))
    all_pins = list(pins_of(pins))
    width = max((len(f"{p.name} {p.version} ({p.arch})") for p in all_pins), default=0)
    print(f"Pinned artifacts ({args.pins}):")
    for p in all_pins:
        label = f"{p.name} {p.version} ({p.arch})".ljust(width)
        print(f"  {label}  {p.sha256 or 'UNPINNED'}")
        print(f"  {'':{width}}  source: {p.source or '(none given)'}")
    print("NVIDIA CUDA repository signing keys (checked with gpg on each GPU host):")
    for repo, key in REPO_KEYS.items():
        print(f"  {repo:<11} {key.file:<13} {key.fingerprint}")
    for key in {k.fingerprint: k for k in REPO_KEYS.values()}.values():
        print(f"  {key.file}: source: {' '.join(key.source.split())}")

    problems = []
    for (name, version), hosts in sorted(used_artifacts(args.inventory).items()):
        where = ", ".join(hosts)
        mine = [p for p in all_pins if (p.name, p.version) == (name, version)]
        if not mine:
            problems.append(f"{name} {version}: not in {args.pins} (used on {where})")
        problems += [
            f"{name} {version} ({p.arch}): UNPINNED (used on {where})"
            for p in mine
            if p.sha256 is None
        ]
    if problems:
        print(f"Unpinned artifacts {args.inventory} deploys:", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"Every artifact {args.inventory} deploys is pinned.")
    return 0


# -- lock -----------------------------------------------------------------------------------------


def download_sha256(url: str, timeout: float = LOCK_TIMEOUT_S) -> str:
    digest = hashlib.sha256()
    with tempfile.TemporaryFile() as tmp:
        with urllib.request.urlopen(url, timeout=timeout) as rsp:
            shutil.copyfileobj(rsp, tmp)
        tmp.seek(0)
        for chunk in iter(lambda: tmp.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _meaningful(line: str) -> bool:
    return bool(line.strip()) and not line.lstrip().startswith("#")


def _key_of(line: str) -> str | None:
    m = re.match(r"""^\s*("[^"]*"|'[^']*'|[^\s:#][^:#]*?)\s*:(\s|$)""", line)
    return m.group(1).strip("\"'") if m else None


def _child(lines: list[str], start: int, end: int, key: str) -> tuple[int, int] | None:
    """The line of `key` among the direct children of lines[start:end], and its block's end."""
    children = [i for i in range(start, end) if _meaningful(lines[i])]
    if not children:
        return None
    depth = min(_indent(lines[i]) for i in children)
    for i in children:
        if _indent(lines[i]) == depth and _key_of(lines[i]) == key:
            stop = next(
                (
                    j
                    for j in range(i + 1, end)
                    if _meaningful(lines[j]) and _indent(lines[j]) <= depth
                ),
                end,
            )
            return i, stop
    return None


def _set_in_mapping(lines: list[str], at: int, stop: int, arch: str, value: str) -> list[str]:
    """Set `arch: value` in the mapping whose key line is lines[at] (flow or block style)."""
    line = lines[at]
    flow = re.match(r"^(\s*[^:]+:\s*)\{(.*)\}(\s*(#.*)?)$", line)
    if flow:
        items = [i.strip() for i in flow.group(2).split(",") if i.strip()]
        keys = [i.split(":", 1)[0].strip() for i in items]
        if arch in keys:
            items[keys.index(arch)] = f"{arch}: {value}"
        else:
            items.append(f"{arch}: {value}")
        return [
            *lines[:at],
            f"{flow.group(1)}{{{', '.join(items)}}}{flow.group(3)}",
            *lines[at + 1 :],
        ]
    found = _child(lines, at + 1, stop, arch)
    if found is not None:
        i, child_stop = found
        new = f"{' ' * _indent(lines[i])}{arch}: {value}"
        return [*lines[:i], new, *lines[child_stop:]]
    kids = [i for i in range(at + 1, stop) if _meaningful(lines[i])]
    pad = _indent(lines[kids[0]]) if kids else _indent(line) + 2
    return [*lines[:stop], f"{' ' * pad}{arch}: {value}", *lines[stop:]]


def set_pin(text: str, name: str, version: str, arch: str, sha: str, source: str) -> str:
    """pins.yml with NAME VERSION's sha256[arch] set (and a source added where none is given)."""
    lines = text.splitlines()
    top = _child(lines, 0, len(lines), name)
    entry = _child(lines, top[0] + 1, top[1], version) if top else None
    if entry is None:
        raise CitadelError(f"{name} {version}: not in pins.yml (add its url entry first)")
    sums = _child(lines, entry[0] + 1, entry[1], "sha256")
    if sums is None:
        pad = " " * (_indent(lines[entry[0]]) + 2)
        lines = [*lines[: entry[1]], f"{pad}sha256: {{}}", *lines[entry[1] :]]
        sums = (entry[1], entry[1] + 1)
    lines = _set_in_mapping(lines, sums[0], sums[1], arch, sha)
    top = _child(lines, 0, len(lines), name)
    entry = _child(lines, top[0] + 1, top[1], version) if top else None
    assert entry is not None
    srcs = _child(lines, entry[0] + 1, entry[1], "source")
    parsed_entry = yaml.safe_load("\n".join(lines))[name][version]
    if _source(parsed_entry, arch) is None:
        quoted = yaml.safe_dump(source, default_style='"', width=10_000).strip()
        if srcs is None:
            pad = " " * (_indent(lines[entry[0]]) + 2)
            lines = [*lines[: entry[1]], f"{pad}source:", *lines[entry[1] :]]
            srcs = (entry[1], entry[1] + 1)
        lines = _set_in_mapping(lines, srcs[0], srcs[1], arch, quoted)
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


def cmd_lock(args: argparse.Namespace) -> int:
    path = Path(args.pins)
    pins = artifacts.load_pins(path)
    entry = (pins.get(args.name) or {}).get(args.version)
    if entry is None:
        print(
            f"citadel: {args.name} {args.version} is not in {path}: add the version with its "
            "url template first",
            file=sys.stderr,
        )
        return 1
    arches = [args.arch] if args.arch else _arches(entry)
    results: list[tuple[str, str, str]] = []
    conflicts = []
    for arch in arches:
        artifact = artifacts.pinned(args.name, args.version, arch, pins)
        print(f"fetching {artifact.url} ...", flush=True)
        try:
            got = download_sha256(artifact.url)
        except OSError as exc:
            print(
                f"citadel: {artifact.label()}: cannot download {artifact.url}: {exc}",
                file=sys.stderr,
            )
            return 1
        if artifact.sha256 is not None and artifact.sha256 != got:
            conflicts.append(
                f"{artifact.label()}: {path} pins {artifact.sha256}, {artifact.url} serves {got}; "
                "refusing to overwrite (a changed upstream file is a finding, not an update)"
            )
        elif artifact.sha256 == got:
            print(f"{artifact.label()}: {got} (already pinned, unchanged)")
        else:
            results.append((arch, got, artifact.url))
    if conflicts:
        for line in conflicts:
            print(f"citadel: {line}", file=sys.stderr)
        return 1
    if not results:
        return 0
    text = path.read_text(encoding="utf-8")
    today = dt.date.today().isoformat()
    for arch, got, url in results:
        source = f"computed by `citadel pins lock` from {url} on {today}"
        text = set_pin(text, args.name, args.version, arch, got, source)
    check = yaml.safe_load(text)
    for arch, got, _ in results:
        if check[args.name][args.version]["sha256"][arch] != got:
            raise CitadelError(f"{path}: the edit did not set {args.name} {args.version} {arch}")
    path.write_text(text, encoding="utf-8")
    for arch, got, _ in results:
        print(f"{args.name} {args.version} ({arch}): {got} written to {path}")
    return 0


def cmd_pins(args: argparse.Namespace) -> int:
    return int(args.pins_func(args))


def add_parser(sub: argparse._SubParsersAction) -> None:
    help_ = "pins.yml as a lock file: check | lock NAME VERSION [--arch A]"
    p = sub.add_parser("pins", help=help_, description=help_)
    p.set_defaults(func=cmd_pins)
    actions = p.add_subparsers(dest="pins_command", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check", help="list pins and their sources; exit 1 when the inventory uses an unpinned one"
    )
    check.add_argument("-i", "--inventory", default=PRODUCTION)
    check.add_argument("--pins", default=str(artifacts.PINS_FILE))
    check.set_defaults(pins_func=cmd_check)
    lock = actions.add_parser(
        "lock", help="download NAME VERSION, compute its sha256 and write it (never over another)"
    )
    lock.add_argument("name", metavar="NAME")
    lock.add_argument("version", metavar="VERSION")
    lock.add_argument("--arch", help="one architecture (default: every one the entry lists)")
    lock.add_argument("--pins", default=str(artifacts.PINS_FILE))
    lock.set_defaults(pins_func=cmd_lock)
