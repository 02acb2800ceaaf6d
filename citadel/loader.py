"""Load inventory YAML + group data + overrides + secrets into one validated `Cluster`.

Every failure becomes a `Problem` naming the file, the dotted field path and what is wrong;
nothing here connects anywhere or imports pyinfra.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from citadel import paths
from citadel.components import BASE_ROLE, CONFIG_MODELS, ROLE_COMPONENTS, ROLES
from citadel.errors import InventoryError, Problem
from citadel.model.cluster import Cluster
from citadel.operator_values import unfilled
from citadel.secrets import SecretStore, load_secrets, missing_secret_problems
from citadel.yamlfile import display_path, load_mapping

INVENTORY_KEYS = ("cluster", "ssh", "artifacts", "secrets_file", "group_data_dir", "hosts")
CHILD_KEYS = ("extends", "overrides")
GROUP_FILE_FOR_BASE = "all"
_SEGMENT = re.compile(r"^([A-Za-z0-9_./*-]+?)(?:\[([^\]]+)\])?$")

# What a host entry carries besides its component sections.
HOST_KEYS = ("name", "address", "roles", "distribution")


@dataclass
class Loaded:
    """A validated cluster plus where it came from and its secrets."""

    cluster: Cluster
    secrets: SecretStore
    inventory: Path
    files: list[str] = field(default_factory=list)
    # keys still holding the operator-supplied sentinel (citadel.operator_values)
    unfilled: list[Problem] = field(default_factory=list)


@dataclass
class _Sources:
    """Which file supplied what, so errors name the file the user must edit."""

    inventory: str = ""
    group_files: dict[str, str] = field(default_factory=dict)  # role -> file label
    overridden: dict[str, str] = field(default_factory=dict)  # dotted path -> file label
    files: list[str] = field(default_factory=list)
    reported: set[str] = field(default_factory=set)  # paths already explained by one problem


def load_cluster(
    inventory: str | Path,
    *,
    require_secrets: bool = False,
    require_filled: bool = False,
    secrets: SecretStore | None = None,
) -> Loaded:
    """Load and validate; raise InventoryError carrying every problem found.

    ``require_filled``: an operator-supplied value still holding its sentinel is a problem
    (validate, plan, apply, verify); without it the inventory loads for previews and tests."""
    path = Path(inventory)
    sources = _Sources()
    problems: list[Problem] = []
    doc = _read_inventory(path, sources, problems, chain=())
    if doc is None:
        raise InventoryError(problems)
    # group_data_dir is relative to the inventory file that declares it (default: ../group_data),
    # the one an `extends` chain ends at, wherever the extending file lives.
    group_dir = doc.pop("_dir") / str(doc.pop("group_data_dir", None) or "../group_data")
    doc["group_data"] = _read_group_data(group_dir, sources, problems)
    for override_file, index, override in doc.pop("_overrides", []):
        _apply_override(doc, override_file, index, override, sources, problems)
    if problems:
        raise InventoryError(problems)

    merged, raw_hosts = _merge_sections(doc, sources, problems)
    to_fill = unfilled(
        merged.get("hosts") or [],
        lambda loc: _origin(loc, raw_hosts, doc["group_data"], sources),
    )
    if require_filled:
        problems += to_fill
    cluster = _validate(merged, raw_hosts, doc["group_data"], sources, problems)
    if cluster is not None:
        for dotted, message in cluster.check():
            file, shown = _origin(dotted_to_loc(dotted), raw_hosts, doc["group_data"], sources)
            problems.append(Problem(file, shown, message))

    store, secret_problems = (
        (secrets, [])
        if secrets is not None
        else load_secrets(cluster.secrets_file if cluster else None)
    )
    problems += secret_problems
    if cluster is not None and require_secrets:
        needed: dict[str, list[str]] = {}
        for h in cluster.hosts:
            for name, component in cluster.required_secrets(h).items():
                needed.setdefault(name, []).append(f"{component} on {h.name}")
        label = store.source if store.source != "environment" else "secrets"
        problems += missing_secret_problems(needed, store, label)
    if problems or cluster is None:
        raise InventoryError(_dedupe(problems))
    return Loaded(
        cluster=cluster, secrets=store, inventory=path, files=sources.files, unfilled=to_fill
    )


# -- reading -----------------------------------------------------------------------------------
def _read_inventory(
    path: Path, sources: _Sources, problems: list[Problem], chain: tuple[Path, ...]
) -> dict[str, Any] | None:
    label = display_path(path)
    if path.resolve() in chain:
        problems.append(Problem(label, "extends", "circular extends"))
        return None
    data, read_problems = load_mapping(path)
    problems += read_problems
    if data is None:
        return None
    sources.files.append(label)
    if "extends" in data:
        for key in data:
            if key not in CHILD_KEYS:
                problems.append(
                    Problem(
                        label,
                        str(key),
                        "an inventory that extends another may only hold 'extends' and 'overrides' "
                        "(put the change in a named override)",
                    )
                )
        parent_name = data["extends"]
        if not isinstance(parent_name, str):
            problems.append(Problem(label, "extends", "must be a file name"))
            return None
        parent = _read_inventory(
            path.parent / parent_name, sources, problems, (*chain, path.resolve())
        )
        if parent is None:
            return None
        overrides = data.get("overrides", [])
        if not isinstance(overrides, list):
            problems.append(Problem(label, "overrides", "must be a list of named overrides"))
            overrides = []
        parent.setdefault("_overrides", []).extend((label, i, o) for i, o in enumerate(overrides))
        return parent
    for key in data:
        if key not in INVENTORY_KEYS:
            problems.append(
                Problem(
                    label, str(key), f"unknown key (expected one of: {', '.join(INVENTORY_KEYS)})"
                )
            )
    sources.inventory = label
    return {**{k: v for k, v in data.items() if k in INVENTORY_KEYS}, "_dir": path.parent}


def _read_group_data(group_dir: Path, sources: _Sources, problems: list[Problem]) -> dict[str, Any]:
    groups: dict[str, Any] = {}
    if not group_dir.is_dir():
        return groups
    for file in sorted(group_dir.glob("*.yml")):
        label = display_path(file)
        role = BASE_ROLE if file.stem == GROUP_FILE_FOR_BASE else file.stem
        if role not in ROLE_COMPONENTS:
            problems.append(
                Problem(
                    label,
                    "",
                    f"no role named {file.stem!r} (group files: all, {', '.join(ROLES[1:])})",
                )
            )
            continue
        data, read_problems = load_mapping(file)
        problems += read_problems
        if data is None:
            continue
        sources.files.append(label)
        sources.group_files[role] = label
        for section, value in data.items():
            if section not in ROLE_COMPONENTS[role]:
                problems.append(
                    Problem(
                        label,
                        str(section),
                        f"not a section of role {role!r} "
                        f"(expected: {', '.join(ROLE_COMPONENTS[role])})",
                    )
                )
            elif not isinstance(value, dict):
                problems.append(Problem(label, str(section), "must be a mapping"))
        groups[role] = data
    return groups


# -- overrides ---------------------------------------------------------------------------------
def _apply_override(
    doc: dict[str, Any],
    file: str,
    index: int,
    override: Any,
    sources: _Sources,
    problems: list[Problem],
) -> None:
    where = f"overrides[{index}]"
    if not isinstance(override, dict):
        problems.append(Problem(file, where, "must be a mapping with name, why and set"))
        return
    for key in override:
        if key not in ("name", "why", "set"):
            problems.append(
                Problem(file, f"{where}.{key}", "unknown key (expected name, why, set)")
            )
    for key in ("name", "why"):
        if not isinstance(override.get(key), str) or not override.get(key):
            problems.append(
                Problem(
                    file,
                    f"{where}.{key}",
                    "required: every override is named and says why it differs",
                )
            )
    settings = override.get("set")
    if not isinstance(settings, dict) or not settings:
        problems.append(Problem(file, f"{where}.set", "must map dotted paths to values"))
        return
    for dotted, value in settings.items():
        try:
            resolved = _set_path(doc, str(dotted), paths.expand(copy.deepcopy(value)))
        except LookupError as exc:
            problems.append(Problem(file, f"{where}.set.{dotted}", str(exc)))
        else:
            for p in resolved:
                sources.overridden[p] = file


def _set_path(doc: dict[str, Any], dotted: str, value: Any) -> list[str]:
    """Set `a.b[name].c` in doc; `hosts[NAME]` selects a host by name, `hosts[*]` every host."""
    segments = dotted.split(".")
    targets: list[tuple[Any, str]] = [(doc, "")]
    for n, segment in enumerate(segments):
        m = _SEGMENT.match(segment)
        if not m:
            raise LookupError(f"bad path segment {segment!r}")
        key, selector = m.group(1), m.group(2)
        last = n == len(segments) - 1 and selector is None
        next_targets: list[tuple[Any, str]] = []
        for node, prefix in targets:
            if not isinstance(node, dict):
                raise LookupError(f"{prefix or 'document'} is not a mapping")
            here = f"{prefix}.{key}" if prefix else key
            if last:
                node[key] = value
                next_targets.append((None, here))
                continue
            child = node.setdefault(key, [] if selector else {})
            if selector is None:
                next_targets.append((child, here))
                continue
            if not isinstance(child, list):
                raise LookupError(f"{here} is not a list")
            chosen = [
                (i, item)
                for i, item in enumerate(child)
                if selector == "*" or (isinstance(item, dict) and item.get("name") == selector)
            ]
            if not chosen:
                raise LookupError(f"no entry named {selector!r} in {here}")
            next_targets += [(item, f"{here}[{i}]") for i, item in chosen]
            if n == len(segments) - 1:
                raise LookupError("a path must end with a field name")
        targets = next_targets
    return [p for _, p in targets]


# -- merging group data into hosts ---------------------------------------------------------------
def deep_merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = deep_merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


def _merge_sections(
    doc: dict[str, Any], sources: _Sources, problems: list[Problem]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    merged = {k: v for k, v in doc.items() if k != "group_data"}
    hosts = doc.get("hosts")
    if not isinstance(hosts, list):
        return merged, []
    groups = doc["group_data"]
    out_hosts = []
    for i, raw in enumerate(hosts):
        if not isinstance(raw, dict):
            out_hosts.append(raw)
            continue
        roles = raw.get("roles", [])
        known_roles = [r for r in roles if r in ROLE_COMPONENTS] if isinstance(roles, list) else []
        held = [BASE_ROLE, *known_roles]
        sections = {s for r in held for s in ROLE_COMPONENTS[r]}
        host = {k: v for k, v in raw.items() if k in HOST_KEYS}
        for key in raw:
            if key in HOST_KEYS:
                continue
            if key in sections:
                continue
            owner = [r for r, s in ROLE_COMPONENTS.items() if key in s]
            msg = (
                f"host has no role {owner[0]!r} for this section"
                if owner
                else "unknown key (expected name, address, roles, distribution, or a component "
                "section)"
            )
            problems.append(
                Problem(
                    sources.overridden.get(f"hosts[{i}].{key}", sources.inventory),
                    f"hosts[{i}].{key}",
                    msg,
                )
            )
        for role in held:
            for section in ROLE_COMPONENTS[role]:
                group_value = groups.get(role, {}).get(section, {})
                host_value = raw.get(section, {})
                missing = (
                    [f for f in _required_fields(section) if f not in (group_value or {})]
                    if section not in raw
                    else []
                )
                if missing:
                    where = f"hosts[{i}].{section}"
                    sources.reported.add(where)
                    problems.append(
                        Problem(
                            sources.overridden.get(where, sources.inventory),
                            where,
                            f"role {role!r} needs this section (required: {', '.join(missing)})",
                        )
                    )
                if isinstance(group_value, dict) and isinstance(host_value, dict):
                    host[section] = deep_merge(group_value, host_value)
                else:
                    host[section] = host_value
        out_hosts.append(host)
    merged["hosts"] = out_hosts
    return merged, hosts


def _required_fields(section: str) -> list[str]:
    model = CONFIG_MODELS[section]
    return [name for name, f in model.model_fields.items() if f.is_required()]


# -- validation and error locations -------------------------------------------------------------
_MESSAGES = {
    "extra_forbidden": "unknown field (check the spelling)",
    "missing": "required field is missing",
}


def _validate(
    merged: dict[str, Any],
    raw_hosts: list[Any],
    groups: dict[str, Any],
    sources: _Sources,
    problems: list[Problem],
) -> Cluster | None:
    try:
        return Cluster.model_validate(merged)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            dotted = loc_to_dotted(loc)
            if any(dotted == r or dotted.startswith(r + ".") for r in sources.reported):
                continue
            message = _MESSAGES.get(err["type"], err["msg"])
            if (len(loc) == 3 and loc[0] == "hosts" and loc[2] == "roles") or (
                len(loc) == 4 and loc[0] == "hosts" and loc[2] == "roles"
            ):
                if err["type"] == "literal_error":
                    message = f"unknown role {err['input']!r} (roles: {', '.join(ROLES[1:])})"
            elif err["type"] not in _MESSAGES and "input" in err and _short(err["input"]):
                message = f"{message} (got {_short(err['input'])})"
            file, shown = _origin(loc, raw_hosts, groups, sources)
            problems.append(Problem(file, shown, message))
        return None


def _short(value: Any) -> str:
    if isinstance(value, dict | list):
        return ""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def loc_to_dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def dotted_to_loc(dotted: str) -> tuple[Any, ...]:
    loc: list[Any] = []
    for segment in dotted.split("."):
        m = re.match(r"^([^\[]+)((?:\[\d+\])*)$", segment)
        if not m:
            loc.append(segment)
            continue
        loc.append(m.group(1))
        loc += [int(x) for x in re.findall(r"\[(\d+)\]", m.group(2))]
    return tuple(loc)


def _has_path(node: Any, path: tuple[Any, ...]) -> bool:
    for part in path:
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and part < len(node)
        ):
            node = node[part]
        else:
            return False
    return True


def _origin(
    loc: tuple[Any, ...], raw_hosts: list[Any], groups: dict[str, Any], sources: _Sources
) -> tuple[str, str]:
    """The file to edit for an error at `loc`, and the path as written in that file."""
    dotted = loc_to_dotted(loc)
    for prefix, file in sources.overridden.items():
        if dotted == prefix or dotted.startswith(prefix + ".") or dotted.startswith(prefix + "["):
            return file, dotted
    if len(loc) >= 3 and loc[0] == "hosts" and isinstance(loc[1], int):
        i, section, rest = loc[1], loc[2], loc[3:]
        raw = raw_hosts[i] if i < len(raw_hosts) else {}
        if not _has_path(raw, (section, *rest)):
            for role, data in groups.items():
                if section in ROLE_COMPONENTS.get(role, ()) and _has_path(data, (section, *rest)):
                    group_dotted = loc_to_dotted(("group_data", role, section, *rest))
                    for prefix, file in sources.overridden.items():
                        if group_dotted.startswith(prefix):
                            return file, group_dotted
                    return sources.group_files.get(role, sources.inventory), loc_to_dotted(
                        (section, *rest)
                    )
    return sources.inventory, dotted


def _dedupe(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))
