"""`citadel rotate NAME`: a secret replaced while its servers and clients keep talking.

Three phases, each a converge of only the hosts it concerns (citadel.rotation_state has what
each stage renders):

1. **accept** — a new value is written (the secrets file, or a new key pair), the previous one
   kept in the rotation state; the servers that check the secret are converged to accept both.
2. **switch** — the clients are converged to present the new value (for the JWT key:
   `citadel token` signs with the new key; no host changes).
3. **retire** — the previous value is dropped; the servers are converged to accept the new only.

The state is written before each phase's converge and marked converged after it, so a run that
stops midway (a failed host, an interrupt) resumes where it stopped: `citadel rotate NAME`
again. Each phase is idempotent; `--phase` runs one (the next one, or the one in progress again).
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from citadel.errors import CitadelError
from citadel.labsecrets import JWT_KEY, KeyRing, all_secret_names, ensure_jwt_keypair
from citadel.loader import Loaded
from citadel.model.cluster import Cluster
from citadel.model.common import secret_env_name
from citadel.rotation_state import (
    STAGES,
    Entry,
    RotationState,
    Stage,
    secrets_state_path,
    write_private,
)
from citadel.secrets import (
    new_secret_value,
    read_secrets_file,
    secrets_file_path,
    write_secrets_file,
)

# A converge of these host names; True when every host succeeded.
Converge = Callable[[list[str]], bool]
Say = Callable[[str], None]


def _deployed_with(cluster: Cluster, section: str) -> list[str]:
    out = []
    for h in cluster.hosts:
        config = getattr(h, section, None)
        if config is not None and config.skip is None:
            out.append(h.name)
    return out


def _users_of(cluster: Cluster, name: str) -> list[str]:
    return [h.name for h in cluster.hosts if name in cluster.required_secrets(h)]


@dataclass(frozen=True)
class Procedure:
    """How one secret rotates: who checks it (servers), who presents it (clients)."""

    name: str
    server: str  # the component (inventory section) that checks it
    guarantee: str  # what a client sees, honestly

    def servers(self, cluster: Cluster) -> list[str]:
        return _deployed_with(cluster, self.server)

    def clients(self, cluster: Cluster) -> list[str]:
        return _users_of(cluster, self.name)


REDIS_GUARANTEE = (
    "Redis accepts both passwords from accept to retire (two digests on the ACL user, loaded "
    "with ACL LOAD: no restart); the gateway reloads onto the new one (SIGHUP: new connections, "
    "the old ones finish their commands). No command is refused."
)
PROCEDURES: dict[str, Procedure] = {
    "redis_password": Procedure("redis_password", "redis", REDIS_GUARANTEE),
    "redis_exporter_password": Procedure(
        "redis_exporter_password",
        "redis",
        "Redis accepts both passwords of the exporter's user from accept to retire; the exporter "
        "restarts onto the new one at switch (at most a missed scrape).",
    ),
    JWT_KEY: Procedure(
        JWT_KEY,
        "gateway",
        "The gateway accepts tokens of both keys from accept to retire (one PEM file, reloaded "
        "with SIGHUP); `citadel token` signs with the new key from switch on. After retire a "
        "token the old key signed is refused (401): retire once those are expired or re-minted.",
    ),
}
# What the inventory knows but has no zero-downtime procedure for yet, and why.
_ONE_PG_PASSWORD = (
    "PostgreSQL keeps one password per role (ALTER ROLE ... PASSWORD): its clients would be "
    "refused between the server's change and theirs"
)
NOT_YET = {
    "postgres_app_password": _ONE_PG_PASSWORD,
    "postgres_readonly_password": _ONE_PG_PASSWORD,
    "postgres_openwebui_password": _ONE_PG_PASSWORD,
    "postgres_exporter_password": _ONE_PG_PASSWORD,
    "postgres_owner_password": _ONE_PG_PASSWORD,
    "qdrant_api_key": "Qdrant takes one API key, read at start (a restart)",
    "model_api_key": "vLLM takes one --api-key, read at start (a restart of each engine)",
    "webui_gateway_token": "the gateway accepts one service token per forwarder",
    "tls_certificate": "nginx's certificate_file/key_file are files on the host citadel does "
    "not write (replace them and `systemctl reload nginx`: graceful)",
}


class Rotation(ABC):
    """A rotation's state and its new value, for one secret of one inventory."""

    def __init__(self, procedure: Procedure, loaded: Loaded):
        self.procedure = procedure
        self.loaded = loaded

    @property
    def name(self) -> str:
        return self.procedure.name

    @property
    @abstractmethod
    def state_path(self) -> Path: ...

    def state(self) -> RotationState:
        try:
            return RotationState.load(self.state_path)
        except ValueError as exc:
            raise CitadelError(str(exc)) from None

    def entry(self) -> Entry | None:
        return self.state().get(self.name)

    @abstractmethod
    def begin(self) -> None:
        """The accept stage's entry, then a new value (idempotent: a new value only where the
        current one is still the previous)."""

    def finish(self) -> None:
        """Retire converged: the previous value is forgotten."""
        self.state().with_entry(self.name, None)


class SecretRotation(Rotation):
    """A value of the secrets file; the previous one is kept in ``<secrets>.rotation.yml``."""

    def __init__(self, procedure: Procedure, loaded: Loaded, secrets_file: Path):
        super().__init__(procedure, loaded)
        self.secrets_file = secrets_file

    @property
    def state_path(self) -> Path:
        return secrets_state_path(self.secrets_file)

    def begin(self) -> None:
        values = read_secrets_file(self.secrets_file)
        current = values.get(self.name)
        if not current:
            raise CitadelError(f"{self.name}: not in {self.secrets_file}; nothing to rotate")
        state = self.state()
        entry = state.get(self.name)
        if entry is None:
            # the previous value is safe in the state before the secrets file changes
            state = state.with_entry(self.name, Entry("accept", previous=current))
            entry = state[self.name]
        if current == entry.previous:
            values[self.name] = new_secret_value()
            write_secrets_file(self.secrets_file, values)


class KeyRotation(Rotation):
    """The lab's dev JWT key pair; the previous pair is kept beside it (``*.previous.pem``)."""

    def __init__(self, procedure: Procedure, loaded: Loaded, ring: KeyRing):
        super().__init__(procedure, loaded)
        self.ring = ring

    @property
    def state_path(self) -> Path:
        return self.ring.state_path

    def begin(self) -> None:
        ring = self.ring
        if not (ring.public.exists() and ring.private.exists()):
            raise CitadelError(f"{ring.public}: no key pair to rotate (`citadel lab up` makes it)")
        state = self.state()
        if state.get(self.name) is None:
            # No rotation yet: the current pair is the one in use. Kept as the previous pair
            # before the state names it (a token minted meanwhile signs with it), and the new
            # pair only after (a crash in between leaves both pairs the same: made again).
            _copy_private(ring.private, ring.previous_private)
            _copy_private(ring.public, ring.previous_public, mode=0o644)
            state = state.with_entry(self.name, Entry("accept"))
        if ring.public.read_bytes() == ring.previous_public.read_bytes():
            ensure_jwt_keypair(ring.public, replace=True)

    def finish(self) -> None:
        super().finish()
        self.ring.previous_private.unlink(missing_ok=True)
        self.ring.previous_public.unlink(missing_ok=True)


def _copy_private(src: Path, dest: Path, mode: int = 0o600) -> None:
    write_private(dest, src.read_bytes())
    dest.chmod(mode)


def rotation_for(name: str, loaded: Loaded) -> Rotation:
    """The rotation of ``name`` in this inventory, or CitadelError saying why there is none
    (before anything changes)."""
    cluster = loaded.cluster
    procedure = PROCEDURES.get(name)
    if procedure is None:
        known = sorted(all_secret_names(cluster) | {JWT_KEY} | set(NOT_YET))
        if name in NOT_YET or name in known:
            why = NOT_YET.get(name, "no procedure is written for it")
            raise CitadelError(
                f"{name} has no zero-downtime rotation procedure yet ({why}); nothing changed"
            )
        raise CitadelError(f"{name}: not a secret this inventory knows (known: {', '.join(known)})")
    if name == JWT_KEY:
        gateway = next((h.gateway for h in cluster.with_role("gateway") if h.gateway), None)
        if gateway is None or not gateway.auth.public_key_file:
            raise CitadelError(
                f"{name}: this inventory's gateway trusts a JWKS (its identity provider rotates "
                "its keys); there is no local key to rotate; nothing changed"
            )
        return KeyRotation(procedure, loaded, KeyRing(Path(gateway.auth.public_key_file)))
    if name not in all_secret_names(cluster):
        raise CitadelError(f"{name}: this inventory deploys nothing that uses it; nothing changed")
    file = secrets_file_path(cluster.secrets_file)
    if file is None or not file.exists():
        raise CitadelError(
            f"{name}: no secrets file to rotate it in (the inventory's secrets_file, or "
            "CITADEL_SECRETS_FILE); nothing changed"
        )
    if os.environ.get(secret_env_name(name)):
        raise CitadelError(
            f"{name} comes from {secret_env_name(name)}, which overrides the secrets file: "
            "rotate it where that variable is set, or unset it; nothing changed"
        )
    return SecretRotation(procedure, loaded, file)


def next_phase(entry: Entry | None) -> Stage:
    """The phase a plain `citadel rotate` runs next (one not converged is run again)."""
    if entry is None:
        return "accept"
    if not entry.converged:
        return entry.stage
    if entry.stage == "accept":
        return "switch"
    return "retire"  # switch converged (a converged retire has no entry left)


def describe(name: str, entry: Entry) -> str:
    """One line for `plan` and the CLI: where a rotation stands (names only, never a value)."""
    done = f"{entry.stage} {'done' if entry.converged else 'in progress'}"
    nxt = next_phase(entry)
    return f"{name}: rotation pending ({done}); next: `citadel rotate {name} --phase {nxt}`"


def hosts_for(rotation: Rotation, phase: Stage) -> list[str]:
    cluster = rotation.loaded.cluster
    if phase == "switch":
        return rotation.procedure.clients(cluster)
    return rotation.procedure.servers(cluster)


def run_phase(rotation: Rotation, phase: Stage, converge: Converge, say: Say) -> None:
    """One phase: its state first, then its hosts' converge, then the state says it is done."""
    name = rotation.name
    entry = rotation.entry()
    allowed = next_phase(entry)
    if phase != allowed and not (entry is not None and entry.stage == phase):
        raise CitadelError(f"{name}: the next phase is {allowed}, not {phase}")
    if phase == "accept":
        rotation.begin()
        entry = rotation.entry()
    assert entry is not None
    if entry.stage != phase or entry.converged:  # a phase run again is not done until it is
        rotation.state().with_entry(name, replace(entry, stage=phase, converged=False))
    hosts = hosts_for(rotation, phase)
    if hosts:
        say(f"{name}: {phase}: converging {', '.join(hosts)}")
        if not converge(hosts):
            raise CitadelError(
                f"{name}: {phase} failed on a host (see above); the rotation stays at {phase}: "
                f"fix it and run `citadel rotate {name}` again to resume"
            )
    else:
        say(f"{name}: {phase}: no host to converge")
    if phase == "retire":
        rotation.finish()
        say(f"{name}: retired the previous value; rotation done")
    else:
        entry = rotation.entry()
        assert entry is not None
        rotation.state().with_entry(name, replace(entry, converged=True))
        say(f"{name}: {phase} done")


def rotate(
    rotation: Rotation,
    phase: Stage | None,
    converge: Converge,
    say: Say,
    *,
    grace_s: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """``phase``: that one phase; None: from the next phase through retire. ``grace_s``: how
    long retire waits after a switch, for clients that fetch the credential themselves (a
    token minted before the switch) to have the new one."""
    phases = (
        [phase] if phase is not None else list(STAGES[STAGES.index(next_phase(rotation.entry())) :])
    )
    for p in phases:
        if p == "retire" and grace_s > 0:
            say(f"{rotation.name}: waiting {grace_s:g} s before retire (--grace)")
            sleep(grace_s)
        run_phase(rotation, p, converge, say)


def pending(loaded: Loaded) -> dict[str, Entry]:
    """Rotations in progress for this inventory (for `plan`), by name."""
    out: dict[str, Entry] = {}
    for name in PROCEDURES:
        try:
            rotation = rotation_for(name, loaded)
        except CitadelError:
            continue
        entry = rotation.entry()
        if entry is not None:
            out[name] = entry
    return out
