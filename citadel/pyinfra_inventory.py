"""Turn a validated Cluster into pyinfra inventory groups (groups = roles).

Used by inventory/<env>.py, which pyinfra loads before it connects: an invalid inventory or a
missing secret stops the run there, with the problems listed and nothing touched.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from citadel.errors import InventoryError
from citadel.loader import Loaded, load_cluster
from citadel.model.cluster import Cluster, Host

HostEntry = tuple[str, dict[str, Any]]


def host_data(cluster: Cluster, host: Host, inventory: Path) -> dict[str, Any]:
    """pyinfra connection data + this host's typed slice of the model (JSON-serialisable)."""
    ssh = cluster.ssh
    data: dict[str, Any] = {
        "ssh_hostname": str(host.address),
        "ssh_port": ssh.port,
        "ssh_user": ssh.user,
        "ssh_strict_host_key_checking": "yes" if ssh.strict_host_key_checking else "no",
        "citadel_inventory": str(inventory.resolve()),
        "citadel_host": host.name,
        "citadel_environment": cluster.cluster.environment,
        "citadel": host.model_dump(mode="json"),
    }
    if ssh.key_file:
        data["ssh_key"] = os.path.expanduser(ssh.key_file)
    if ssh.known_hosts_file:
        data["ssh_known_hosts_file"] = os.path.expanduser(ssh.known_hosts_file)
    if ssh.user != "root":
        data["_sudo"] = True
    return data


def inventory_groups(loaded: Loaded) -> dict[str, list[HostEntry]]:
    """{role: [(host name, data), ...]}; every host is in "base"."""
    groups: dict[str, list[HostEntry]] = {}
    for host in loaded.cluster.hosts:
        entry = (host.name, host_data(loaded.cluster, host, loaded.inventory))
        for role in host.all_roles:
            groups.setdefault(role, []).append(entry)
    return groups


def pyinfra_inventory(inventory_yml: str | Path) -> dict[str, list[HostEntry]]:
    """For inventory/<env>.py: load, require secrets, or exit 2 listing every problem."""
    try:
        loaded = load_cluster(inventory_yml, require_secrets=True, require_filled=True)
    except InventoryError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print("citadel: inventory invalid; nothing was changed on any host", file=sys.stderr)
        raise SystemExit(2) from None
    return inventory_groups(loaded)
