"""Composing one document from an inventory: its named overrides (dotted paths, ``hosts[NAME]``
selecting a host) and the group data of each host's roles merged under the host's own sections,
with a problem for every key that has no place."""

from __future__ import annotations

import copy
import re
from typing import Any

from citadel import paths
from citadel.components import BASE_ROLE, CONFIG_MODELS, ROLE_COMPONENTS
from citadel.errors import Problem
from citadel.loader.sources import Sources

SEGMENT = re.compile(r"^([A-Za-z0-9_./*-]+?)(?:\[([^\]]+)\])?$")


# What a host entry carries besides its component sections.
HOST_KEYS = ("name", "address", "roles", "distribution")


# -- overrides ---------------------------------------------------------------------------------
def apply_override(
    doc: dict[str, Any],
    file: str,
    index: int,
    override: Any,
    sources: Sources,
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
            resolved = set_path(doc, str(dotted), paths.expand(copy.deepcopy(value)))
        except LookupError as exc:
            problems.append(Problem(file, f"{where}.set.{dotted}", str(exc)))
        else:
            for p in resolved:
                sources.overridden[p] = file


def set_path(doc: dict[str, Any], dotted: str, value: Any) -> list[str]:
    """Set `a.b[name].c` in doc; `hosts[NAME]` selects a host by name, `hosts[*]` every host."""
    segments = dotted.split(".")
    targets: list[tuple[Any, str]] = [(doc, "")]
    for n, segment in enumerate(segments):
        m = SEGMENT.match(segment)
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


def merge_sections(
    doc: dict[str, Any], sources: Sources, problems: list[Problem]
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
