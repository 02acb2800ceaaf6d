"""testinfra connections to inventory hosts, with the inventory's key and strict host keys.

Used by tests/verify (run by `citadel verify` and `make up`); pyinfra and testinfra reach the
hosts the same way. Refuses production addresses unless explicitly allowed.
"""

from __future__ import annotations

import os
from typing import Any

import paramiko
import testinfra

from citadel.errors import CitadelError
from citadel.model.cluster import Cluster, Host

CONNECT_TIMEOUT_S = 10


def _client(cluster: Cluster, host: Host) -> paramiko.SSHClient:
    ssh = cluster.ssh
    client = paramiko.SSHClient()
    if ssh.known_hosts_file and ssh.strict_host_key_checking:
        client.load_host_keys(os.path.expanduser(ssh.known_hosts_file))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
    else:
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect(
            hostname=str(host.address),
            port=ssh.port,
            username=ssh.user,
            key_filename=os.path.expanduser(ssh.key_file) if ssh.key_file else None,
            timeout=CONNECT_TIMEOUT_S,
            allow_agent=False,
            look_for_keys=ssh.key_file is None,
        )
    except (OSError, paramiko.SSHException) as exc:
        raise CitadelError(f"cannot reach {host.name} ({host.address}) over SSH: {exc}") from None
    return client


_HOSTS: dict[tuple[int, str], tuple[Cluster, Any]] = {}


def _cached_host(cluster: Cluster, name: str) -> Any:
    # Keyed by identity: a Cluster holds lists, so it is not hashable (functools.cache fails).
    key = (id(cluster), name)
    if key in _HOSTS:
        return _HOSTS[key][1]
    host = cluster.host(name)
    target = testinfra.get_host(f"paramiko://{cluster.ssh.user}@{host.address}:{cluster.ssh.port}")
    backend = target.backend
    backend.__dict__["client"] = _client(cluster, host)  # replaces testinfra's lax client
    if cluster.ssh.user != "root":
        target = testinfra.get_host(
            f"paramiko://{cluster.ssh.user}@{host.address}:{cluster.ssh.port}", sudo=True
        )
        target.backend.__dict__["client"] = backend.client
    _HOSTS[key] = (cluster, target)  # holding the cluster keeps its id from being reused
    return target


def testinfra_host(cluster: Cluster, host: Host) -> Any:
    """A testinfra Host for an inventory host (connection opened lazily, then reused)."""
    return _cached_host(cluster, host.name)
