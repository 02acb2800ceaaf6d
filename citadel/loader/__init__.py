"""Load inventory YAML + group data + overrides + secrets into one validated `Cluster`.

Every failure becomes a `Problem` naming the file, the dotted field path and what is wrong;
nothing here connects anywhere or imports pyinfra. This module reads the files (an inventory, the
one it extends, its group data) and runs the steps; ``sources`` records which file supplied what,
``compose`` applies overrides and merges group data into hosts, ``validate`` turns pydantic's
errors into problems located in the file to edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from citadel.components import BASE_ROLE, ROLE_COMPONENTS, ROLES
from citadel.errors import InventoryError, Problem
from citadel.loader.compose import apply_override, merge_sections
from citadel.loader.sources import Sources
from citadel.loader.validate import dotted_to_loc, origin, validate_cluster
from citadel.model.cluster import Cluster
from citadel.operator_values import unfilled
from citadel.secrets import SecretStore, load_secrets, missing_secret_problems
from citadel.yamlfile import display_path, load_mapping

INVENTORY_KEYS = ("cluster", "ssh", "artifacts", "secrets_file", "group_data_dir", "hosts")
CHILD_KEYS = ("extends", "overrides")
GROUP_FILE_FOR_BASE = "all"


@dataclass
class Loaded:
    """A validated cluster plus where it came from and its secrets."""

    cluster: Cluster
    secrets: SecretStore
    inventory: Path
    files: list[str] = field(default_factory=list)
    # keys still holding the operator-supplied sentinel (citadel.operator_values)
    unfilled: list[Problem] = field(default_factory=list)


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
    sources = Sources()
    problems: list[Problem] = []
    doc = _read_inventory(path, sources, problems, chain=())
    if doc is None:
        raise InventoryError(problems)
    # group_data_dir is relative to the inventory file that declares it (default: ../group_data),
    # the one an `extends` chain ends at, wherever the extending file lives.
    group_dir = doc.pop("_dir") / str(doc.pop("group_data_dir", None) or "../group_data")
    doc["group_data"] = _read_group_data(group_dir, sources, problems)
    for override_file, index, override in doc.pop("_overrides", []):
        apply_override(doc, override_file, index, override, sources, problems)
    if problems:
        raise InventoryError(problems)

    merged, raw_hosts = merge_sections(doc, sources, problems)
    to_fill = unfilled(
        merged.get("hosts") or [],
        lambda loc: origin(loc, raw_hosts, doc["group_data"], sources),
    )
    if require_filled:
        problems += to_fill
    cluster = validate_cluster(merged, raw_hosts, doc["group_data"], sources, problems)
    if cluster is not None:
        for dotted, message in cluster.check():
            file, shown = origin(dotted_to_loc(dotted), raw_hosts, doc["group_data"], sources)
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
    path: Path, sources: Sources, problems: list[Problem], chain: tuple[Path, ...]
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


def _read_group_data(group_dir: Path, sources: Sources, problems: list[Problem]) -> dict[str, Any]:
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


def _dedupe(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))
