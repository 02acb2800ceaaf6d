"""The lab's own secrets and dev JWT key pair, generated on first `citadel lab up` (untracked)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from citadel.rotation_state import Entry, RotationState, write_private
from citadel.secrets import generate_secrets_file

if TYPE_CHECKING:
    from citadel.model.cluster import Cluster

# `citadel rotate jwt_signing_key`: the lab's dev JWT key pair (gateway.auth.public_key_file).
JWT_KEY = "jwt_signing_key"


def all_secret_names(cluster: Cluster) -> set[str]:
    names: set[str] = set()
    for host in cluster.hosts:
        names |= set(cluster.required_secrets(host))
        for _, config in host.sections():  # skipped components too: un-skipping needs no new step
            names |= set(config.secrets())
    return names


def ensure_jwt_keypair(public_pem: Path, *, replace: bool = False) -> Path:
    """An ES256 key pair beside the public key (private.pem, mode 0600); returns the private.
    ``replace``: a new pair even where one exists (a rotation's accept)."""
    private_pem = public_pem.with_name("private.pem")
    if private_pem.exists() and public_pem.exists() and not replace:
        return private_pem
    public_pem.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(private_pem, data)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tmp = public_pem.with_name(f".{public_pem.name}.tmp")
    tmp.write_bytes(public)
    os.replace(tmp, public_pem)
    return private_pem


@dataclass(frozen=True)
class KeyRing:
    """The dev JWT key pair and, while it is rotated, the previous pair beside it
    (``public.previous.pem``, ``private.previous.pem``) and the rotation's state (``rotation.yml``):
    the gateway accepts ``accepted_public()``; ``citadel token`` signs with ``signing_key()``."""

    public: Path

    @property
    def private(self) -> Path:
        return self.public.with_name("private.pem")

    @property
    def previous_public(self) -> Path:
        return self.public.with_name("public.previous.pem")

    @property
    def previous_private(self) -> Path:
        return self.public.with_name("private.previous.pem")

    @property
    def state_path(self) -> Path:
        return self.public.with_name("rotation.yml")

    def state(self) -> RotationState:
        return RotationState.load(self.state_path)

    def entry(self) -> Entry | None:
        return self.state().get(JWT_KEY)

    def signing_key(self) -> Path:
        entry = self.entry()
        return self.previous_private if entry and entry.clients_use_previous else self.private

    def accepted_public(self) -> list[Path]:
        entry = self.entry()
        both = entry is not None and entry.both_accepted
        return [self.public, self.previous_public] if both else [self.public]


def ensure_lab_secrets(cluster: Cluster) -> list[str]:
    """Create/complete the lab's secrets file and JWT keys; returns the secret names added."""
    added: list[str] = []
    if cluster.secrets_file:
        added = generate_secrets_file(Path(cluster.secrets_file), all_secret_names(cluster))
    for host in cluster.with_role("gateway"):
        if host.gateway and host.gateway.auth.public_key_file:
            ensure_jwt_keypair(Path(host.gateway.auth.public_key_file))
    return added
