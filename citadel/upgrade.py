"""`citadel upgrade NAME VERSION` and `citadel rollback NAME`: a pinned version changed, rolled
host by host behind a health gate, and put back with one command.

1. **pin** — the version is written where the inventory declares it (an override's ``set:``
   line, else the component's group data file: citadel.pinedit keeps every other byte), after
   the edited inventory validates; the previous pin is recorded in the inventory's upgrade
   history (``.<inventory>.upgrades.yml`` beside it), with state ``pinned``. `citadel plan`
   shows a pinned upgrade as pending (exit 2) beside the hosts' own changes.
2. **roll** — the component's hosts converge one at a time. After each, the gate: its converge
   succeeded (each deploy waits for its service to answer), and the gateway's `/health` serves
   again every service it served before that host started. A host that fails the gate stops
   the roll: the hosts after it keep the previous version, and `citadel rollback NAME` puts
   back the previous pin on every host.
3. **rolled** — recorded; `citadel rollback NAME` is the same procedure to the previous pin.

The gateway's own restart refuses no request (its socket is systemd's: deploys/gateway.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from citadel import pinedit
from citadel.errors import CitadelError
from citadel.loader import Loaded, load_cluster
from citadel.model.cluster import Host
from citadel.releases import cached_release, missing_release, source_version
from citadel.rollout import SERVED, fetch_services, health_url, wait_until_served
from citadel.yamlfile import display_path

GATEWAY_PROJECT = Path(__file__).resolve().parent.parent / "services" / "gateway"


def _gateway_version(h: Host) -> str | None:
    if h.gateway is None:
        return None
    return h.gateway.version or source_version(GATEWAY_PROJECT)


def _engine(engine: str) -> Callable[[Host], str | None]:
    def current(h: Host) -> str | None:
        if h.model is None or h.model.engine != engine:
            return None
        return str(getattr(h.model, engine).version)

    return current


def _section(name: str) -> Callable[[Host], str | None]:
    def current(h: Host) -> str | None:
        cfg = getattr(h, name, None)
        return None if cfg is None or cfg.skip is not None else str(cfg.version)

    return current


@dataclass(frozen=True)
class Pin:
    """A version pin: where the group data holds it, and each host's effective value."""

    name: str
    role: str  # its group data file: group_data/<role>.yml
    path: tuple[str, ...]  # section, key...
    current: Callable[[Host], str | None]  # None: the host does not run it

    @property
    def dotted(self) -> str:
        return ".".join(("group_data", self.role, *self.path))


PINS = {
    p.name: p
    for p in (
        Pin("gateway", "gateway", ("gateway", "version"), _gateway_version),
        Pin("vllm", "model", ("model", "vllm", "version"), _engine("vllm")),
        Pin("ollama", "model", ("model", "ollama", "version"), _engine("ollama")),
        Pin("llamacpp", "model", ("model", "llamacpp", "version"), _engine("llamacpp")),
        Pin("qdrant", "qdrant", ("qdrant", "version"), _section("qdrant")),
        Pin("webui", "webui", ("webui", "version"), _section("webui")),
        Pin("grafana", "monitoring", ("grafana", "version"), _section("grafana")),
    )
}


def pin_for(name: str) -> Pin:
    if name not in PINS:
        raise CitadelError(f"upgrade {name}: not a pinned component (pins: {', '.join(PINS)})")
    return PINS[name]


def versions(loaded: Loaded, pin: Pin) -> dict[str, str]:
    """host -> the version it is pinned to, for the hosts that run it."""
    out = {}
    for h in loaded.cluster.hosts:
        v = pin.current(h)
        if v is not None:
            out[h.name] = v
    return out


# -- the history -------------------------------------------------------------------------------


def history_path(inventory: Path) -> Path:
    return inventory.with_name(f".{inventory.stem}.upgrades.yml")


def read_history(inventory: Path) -> list[dict[str, Any]]:
    path = history_path(inventory)
    if not path.is_file():
        return []
    try:
        data = yaml.safe_load(path.read_text()) or []
    except yaml.YAMLError as exc:
        raise CitadelError(f"{display_path(path)}: not YAML: {exc}") from None
    if not isinstance(data, list):
        raise CitadelError(f"{display_path(path)}: must be a list of upgrades")
    return data


def write_history(inventory: Path, entries: list[dict[str, Any]]) -> None:
    path = history_path(inventory)
    tmp = path.with_suffix(".tmp")
    header = "# citadel upgrade/rollback history (citadel/upgrade.py): commit it with the pins\n"
    tmp.write_text(header + yaml.safe_dump(entries, sort_keys=False))
    os.replace(tmp, path)


def pending(inventory: Path) -> list[dict[str, Any]]:
    """The last entry of each pin, where that one is not rolled out yet."""
    last: dict[str, dict[str, Any]] = {}
    for e in read_history(inventory):
        last[str(e.get("pin"))] = e
    return [e for e in last.values() if e.get("state") != "rolled"]


def describe(entry: dict[str, Any]) -> str:
    verb = "rollback" if entry.get("rollback") else "upgrade"
    done = entry.get("hosts_done") or []
    state = entry.get("state")
    rest = f"; converged so far: {', '.join(done)}" if done else ""
    return (
        f"{verb} pending: {entry['pin']} {entry['from']} -> {entry['to']} ({state}{rest}); "
        f"`citadel {verb} {entry['pin']}{'' if entry.get('rollback') else ' ' + entry['to']}` "
        f"rolls it"
    )


# -- pinning -----------------------------------------------------------------------------------


def _chain(inventory: Path) -> list[Path]:
    """The inventory and the files it extends, child first."""
    out, path = [], inventory
    while True:
        out.append(path)
        data = yaml.safe_load(path.read_text()) or {}
        parent = data.get("extends") if isinstance(data, dict) else None
        if not parent:
            return out
        path = path.parent / str(parent)


def _group_file(inventory: Path, role: str) -> Path:
    root = _chain(inventory)[-1]
    data = yaml.safe_load(root.read_text()) or {}
    group_dir = root.parent / str(data.get("group_data_dir") or "../group_data")
    return group_dir / f"{'all' if role == 'base' else role}.yml"


def edit_pin(inventory: Path, pin: Pin, version: str) -> tuple[Path, str]:
    """Write ``version`` where the inventory declares ``pin``; returns (file, its old text)."""
    for path in _chain(inventory):
        text = path.read_text()
        edited = pinedit.set_override(text, pin.dotted, version)
        if edited is not None:
            path.write_text(edited)
            return path, text
    path = _group_file(inventory, pin.role)
    if not path.is_file():
        raise CitadelError(f"{pin.name}: {display_path(path)} does not exist to hold the pin")
    text = path.read_text()
    path.write_text(pinedit.set_scalar(text, pin.path, version))
    return path, text


def set_pin(inventory: Path, pin: Pin, version: str, *, rollback: bool) -> dict[str, Any]:
    """Pin every host of ``pin`` to ``version``, validated, and record it (state ``pinned``)."""
    before = versions(load_cluster(inventory), pin)
    if not before:
        raise CitadelError(f"{pin.name}: no host of {display_path(inventory)} runs it")
    previous = sorted(set(before.values()))
    if previous == [version]:
        raise CitadelError(f"{pin.name} is pinned to {version} already")
    own = source_version(GATEWAY_PROJECT)
    if (
        pin.name == "gateway"
        and version != own
        and cached_release(GATEWAY_PROJECT, version) is None
    ):
        raise CitadelError(missing_release(GATEWAY_PROJECT, "citadel-gateway", version, own))
    path, old_text = edit_pin(inventory, pin, version)
    try:
        after = versions(load_cluster(inventory), pin)
    except CitadelError:
        path.write_text(old_text)
        raise
    stuck = {h: v for h, v in after.items() if v != version}
    if stuck:
        path.write_text(old_text)
        raise CitadelError(
            f"{pin.name}: {', '.join(sorted(stuck))} pinned per host (to "
            f"{', '.join(sorted(set(stuck.values())))}), not by {pin.dotted}: change it there"
        )
    entry: dict[str, Any] = {
        "pin": pin.name,
        "from": previous[0] if len(previous) == 1 else ",".join(previous),
        "to": version,
        "file": display_path(path),
        "state": "pinned",
        "hosts_done": [],
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if rollback:
        entry["rollback"] = True
    write_history(inventory, [*read_history(inventory), entry])
    return entry


def previous_pin(inventory: Path, name: str) -> str:
    """The version before the last upgrade of ``name`` (what `rollback` goes back to)."""
    # a rollback's own entry is not an upgrade to go back from (rollback twice stays back)
    entries = [e for e in read_history(inventory) if e.get("pin") == name and not e.get("rollback")]
    if not entries:
        raise CitadelError(
            f"rollback {name}: {display_path(history_path(inventory))} records no upgrade of it; "
            f"name the version: citadel rollback {name} --to VERSION"
        )
    return str(entries[-1]["from"])


# -- rolling -----------------------------------------------------------------------------------


def _update(inventory: Path, entry: dict[str, Any]) -> None:
    entries = read_history(inventory)
    for i in range(len(entries) - 1, -1, -1):
        if entries[i].get("pin") == entry["pin"] and entries[i].get("at") == entry["at"]:
            entries[i] = entry
            break
    write_history(inventory, entries)


def roll(
    inventory: Path,
    loaded: Loaded,
    entry: dict[str, Any],
    converge: Callable[[list[str]], bool],
    say: Callable[[str], None],
    *,
    wait: Callable[[str, set[str]], dict[str, str]] = wait_until_served,
    fetch: Callable[[str], dict[str, str]] = fetch_services,
) -> None:
    """Converge the pin's hosts one at a time, each behind the gate (module docstring)."""
    pin = pin_for(str(entry["pin"]))
    hosts = [h for h in versions(loaded, pin) if h not in entry.get("hosts_done", [])]
    url = health_url(loaded.cluster)
    for name in hosts:
        served = {s for s, v in fetch(url).items() if v in SERVED} if url else set()
        say(f"{pin.name} {entry['to']}: converging {name}")
        if not converge([name]):
            entry["state"] = "failed"
            _update(inventory, entry)
            raise CitadelError(_stopped(pin, entry, name, "its converge failed"))
        missing = wait(url, served) if url and served else {}
        if missing:
            entry["state"] = "failed"
            _update(inventory, entry)
            states = ", ".join(f"{s}: {v}" for s, v in sorted(missing.items()))
            raise CitadelError(_stopped(pin, entry, name, f"the gateway no longer serves {states}"))
        entry.setdefault("hosts_done", []).append(name)
        _update(inventory, entry)
    entry["state"] = "rolled"
    _update(inventory, entry)


def _stopped(pin: Pin, entry: dict[str, Any], host: str, why: str) -> str:
    back = (
        f"citadel rollback {pin.name}"
        if not entry.get("rollback")
        else f"citadel rollback {pin.name} --to {entry['from']}"
    )
    return (
        f"{pin.name} {entry['from']} -> {entry['to']} stopped at {host}: {why}; the hosts after "
        f"it still run {entry['from']}. Fix and run it again, or go back: {back}"
    )
