"""Validating the composed document into a `Cluster`: pydantic's errors become `Problem`s with
short messages, each located in the file that holds the value (an override, a group file or the
inventory) and the path as written there."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from citadel.components import ROLE_COMPONENTS, ROLES
from citadel.errors import Problem
from citadel.loader.sources import Sources
from citadel.model.cluster import Cluster

_MESSAGES = {
    "extra_forbidden": "unknown field (check the spelling)",
    "missing": "required field is missing",
}


def validate_cluster(
    merged: dict[str, Any],
    raw_hosts: list[Any],
    groups: dict[str, Any],
    sources: Sources,
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
            file, shown = origin(loc, raw_hosts, groups, sources)
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


def origin(
    loc: tuple[Any, ...], raw_hosts: list[Any], groups: dict[str, Any], sources: Sources
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
