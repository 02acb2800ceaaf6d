"""The lab's own secrets and dev JWT key pair, generated on first `citadel lab up` (untracked)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from citadel.model.cluster import Cluster
from citadel.secrets import generate_secrets_file


def all_secret_names(cluster: Cluster) -> set[str]:
    names: set[str] = set()
    for host in cluster.hosts:
        names |= set(cluster.required_secrets(host))
        for _, config in host.sections():  # skipped components too: un-skipping needs no new step
            names |= set(config.secrets())
    return names


def ensure_jwt_keypair(public_pem: Path) -> Path:
    """An ES256 key pair beside the public key (private.pem, mode 0600); returns the private."""
    private_pem = public_pem.with_name("private.pem")
    if private_pem.exists() and public_pem.exists():
        return private_pem
    public_pem.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(private_pem, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    public_pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_pem


def ensure_lab_secrets(cluster: Cluster) -> list[str]:
    """Create/complete the lab's secrets file and JWT keys; returns the secret names added."""
    added: list[str] = []
    if cluster.secrets_file:
        added = generate_secrets_file(Path(cluster.secrets_file), all_secret_names(cluster))
    for host in cluster.with_role("gateway"):
        if host.gateway and host.gateway.auth.public_key_file:
            ensure_jwt_keypair(Path(host.gateway.auth.public_key_file))
    return added
